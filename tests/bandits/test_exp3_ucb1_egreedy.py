"""Non-contextual bandits: Exp3, UCB1, epsilon-greedy."""

import numpy as np
import pytest

from laser.bandits import UCB1, EpsilonGreedy, Exp3


def test_exp3_golden_update():
    """K = 2, gamma = 0.1: p = (0.5, 0.5). Arm 0 drawn with p = 0.5 gets r = 1:
    l_0 = 0.1 * (1 / 0.5) / 2 = 0.1, so p_0 = 0.9 * e^0.1 / (e^0.1 + 1) + 0.05 = 0.5224812687310461."""
    s = Exp3(2, gamma=0.1, seed=0)
    np.testing.assert_array_equal(s.scores(None), [0.5, 0.5])
    k = s.select(None)
    s.update(k, None, 1.0)
    assert s.log_weights_[k] == pytest.approx(0.1, rel=1e-15)
    assert s.scores(None)[k] == pytest.approx(0.5224812687310461, rel=1e-15)
    assert s.scores(None).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        s.update(0, None, 1.5)


def test_exp3_learns_and_respects_mask():
    rng = np.random.default_rng(0)
    s = Exp3(3, gamma=0.1, seed=1)
    means = np.array([0.2, 0.8, 0.4])
    for _ in range(1500):
        k = s.select(None)
        s.update(k, None, float(rng.uniform() < means[k]))
    assert s.scores(None).argmax() == 1 and s.scores(None)[1] > 0.8
    s.mask_arm(1)
    p = s.scores(None)
    assert np.isnan(p[1]) and p[[0, 2]].sum() == pytest.approx(1.0)


def test_ucb1_golden_scores():
    """n = (2, 1), S = (1.5, 0), c = 2: n = 3;
    arm 0: 0.75 + sqrt(2 ln 3 / 2) = 1.798147073968205; arm 1: 0 + sqrt(2 ln 3) = 1.4823038073675112;
    arm 2 untried: +inf (so it is selected next)."""
    s = UCB1(3, seed=0)
    s.update(0, None, 1.0)
    s.update(0, None, 0.5)
    s.update(1, None, 0.0)
    np.testing.assert_allclose(s.scores(None), [1.798147073968205, 1.4823038073675112, np.inf], rtol=1e-15)
    assert s.select(None) == 2


def test_ucb1_finds_best_arm():
    rng = np.random.default_rng(1)
    s = UCB1(3, seed=0)
    means = np.array([0.3, 0.5, 0.7])
    for _ in range(2000):
        k = s.select(None)
        s.update(k, None, float(rng.uniform() < means[k]))
    assert s.counts_.argmax() == 2 and s.counts_[2] > 1200


def test_epsilon_greedy_rule():
    """epsilon = 0: each arm once (untried = +inf), then always the best mean.
    epsilon = 1: uniform over available arms."""
    s = EpsilonGreedy(3, epsilon=0.0, seed=0)
    first = [s.select(None) for _ in range(1)]
    for k, r in zip(range(3), (0.1, 0.9, 0.5), strict=True):
        s.update(k, None, r)
    assert first[0] in (0, 1, 2) and all(s.select(None) == 1 for _ in range(50))
    np.testing.assert_allclose(s.scores(None), [0.1, 0.9, 0.5])
    u = EpsilonGreedy(3, epsilon=1.0, seed=0)
    u.mask_arm(0)
    counts = np.bincount(u.select_batch(np.zeros((2000, 1))), minlength=3)
    assert counts[0] == 0 and abs(counts[1] - 1000) < 120


def test_epsilon_greedy_explores_at_rate_epsilon():
    """With arm 1 clearly best, non-best picks happen at rate epsilon * 2/3 = 0.1 (of 6,000: 600)."""
    s = EpsilonGreedy(3, epsilon=0.15, seed=2)
    for k, r in zip(range(3), (0.1, 0.9, 0.5), strict=True):
        s.update(k, None, r)
    picks = s.select_batch(np.zeros((6000, 1)))
    assert abs(np.sum(picks != 1) - 600) < 5 * np.sqrt(6000 * 0.1 * 0.9)
