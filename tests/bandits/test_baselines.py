"""Fixed, random and round-robin selectors."""

import numpy as np
import pytest

from laser.bandits import FixedSelector, RandomSelector, RoundRobinSelector


def test_fixed():
    s = FixedSelector(4, arm=2)
    assert [s.select(None) for _ in range(5)] == [2] * 5
    np.testing.assert_array_equal(s.scores(None), [0, 0, 1, 0])
    with pytest.raises(IndexError):
        FixedSelector(4, arm=4)


def test_random_is_uniform_over_unmasked():
    s = RandomSelector(4, seed=0)
    s.mask_arm(3)
    picks = s.select_batch(np.zeros((3000, 1)))
    counts = np.bincount(picks, minlength=4)
    assert counts[3] == 0 and np.all(np.abs(counts[:3] - 1000) < 120)  # ~4.6 sigma
    np.testing.assert_allclose(s.scores(None), [1 / 3, 1 / 3, 1 / 3, np.nan])


def test_round_robin_skips_masked_and_resumes_order():
    s = RoundRobinSelector(3)
    assert [s.select(None) for _ in range(4)] == [0, 1, 2, 0]
    s.mask_arm(1)
    assert [s.select(None) for _ in range(3)] == [2, 0, 2]
    s.unmask_arm(1)
    np.testing.assert_array_equal(s.scores(None), [1, 0, 0])
    assert s.select_batch(np.zeros((4, 2))).tolist() == [0, 1, 2, 0]
