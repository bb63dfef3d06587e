"""QuantileNormalizer: the paper's 20th/80th percentile rule and its first-reward rule."""

import numpy as np
import pytest

from laser.bandits import QuantileNormalizer


def test_first_rewards_rule():
    """One value -> 0.5. Two values [1, 3]: linear quantiles q20 = 1 + 0.2*2 = 1.4 and
    q80 = 2.6, so 3 -> clip((3 - 1.4)/1.2) = 1; a third value 1 with history [1, 3, 1]
    (sorted [1, 1, 3]: q20 = 1, q80 = 1 + 0.6*2 = 2.2) -> clip(0 / 1.2) = 0."""
    n = QuantileNormalizer()
    assert n.normalize(1.0) == 0.5
    assert n.normalize(3.0) == 1.0
    assert n.normalize(1.0) == 0.0
    m = QuantileNormalizer()
    assert m.normalize(5.0) == 0.5 and m.normalize(5.0) == 0.5  # no spread yet
    assert m.normalize(2.0) == 0.0  # history [5, 5, 2]: q20 = 2 + 0.4*3 = 3.2, q80 = 5


def test_interior_value_golden():
    """History 0, 1, ..., 9 then 3.5: sorted [0, 1, 2, 3, 3.5, 4, 5, 6, 7, 8, 9] (11 values).
    Linear quantile positions 0.2 * 10 = 2 -> q20 = 2 and 0.8 * 10 = 8 -> q80 = 7.
    (3.5 - 2) / (7 - 2) = 0.3."""
    n = QuantileNormalizer(0.2, 0.8)
    for v in range(10):
        n.normalize(float(v))
    assert n.normalize(3.5) == pytest.approx(0.3, rel=1e-15)


def test_non_finite_raises_and_is_not_recorded():
    n = QuantileNormalizer()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="not finite"):
            n.normalize(bad)
    assert n.history_ == []


def test_state_roundtrip_and_check():
    n = QuantileNormalizer()
    for v in np.random.default_rng(0).normal(size=50):
        n.normalize(v)
    sd = n.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    m = QuantileNormalizer()
    m.load_state_dict({k: v.copy() for k, v in sd.items()})
    assert [m.normalize(x) for x in (0.1, -2.0, 3.0)] == [n.normalize(x) for x in (0.1, -2.0, 3.0)]
    with pytest.raises(ValueError, match=r"saved \(low, high\) = \(0.2, 0.8\)"):
        QuantileNormalizer(0.1, 0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="0 <= low < high <= 1"):
        QuantileNormalizer(0.8, 0.2)
