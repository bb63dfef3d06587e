"""Linear Thompson sampling (posterior, prior, sampling law) and sliding-window LinUCB."""

import numpy as np
import pytest

from laser.bandits import LinTS, LinUCB, SlidingWindowLinUCB


def _data(seed, n, dim, n_arms):
    rng = np.random.default_rng(seed)
    return rng.integers(n_arms, size=n), rng.normal(size=(n, dim)), rng.uniform(size=n)


@pytest.mark.parametrize("kind", ["diag", "matrix"])
def test_lints_prior_posterior_is_closed_form(kind):
    """Prior N(m0, P0^-1): mu = (P0 + X^T X)^-1 (P0 m0 + X^T y), A^-1 = (P0 + X^T X)^-1."""
    rng = np.random.default_rng(0)
    dim = 7
    m0 = rng.normal(size=dim)
    L = rng.normal(size=(dim, dim))
    P0 = np.diag(rng.uniform(0.5, 3, dim)) if kind == "diag" else L @ L.T + np.eye(dim)
    s = LinTS(2, dim, v=0.3, prior_mean=m0, prior_precision=np.diag(P0) if kind == "diag" else P0)
    arms, X, y = _data(1, 25, dim, 2)
    s.update_batch(arms, X, y)
    for k in range(2):
        Xk, yk = X[arms == k], y[arms == k]
        A = P0 + Xk.T @ Xk
        np.testing.assert_allclose(s.theta_[k], np.linalg.solve(A, P0 @ m0 + Xk.T @ yk), rtol=1e-10)
        np.testing.assert_allclose(s.A_inv(k), np.linalg.inv(A), rtol=1e-9, atol=1e-12)


def test_lints_per_arm_prior_and_its_guard():
    s = LinTS(3, 4, v=0.0)
    s.set_prior(2, mean=np.array([1.0, 0, 0, 0]), precision=100.0)
    c = np.array([1.0, 0, 0, 0])
    np.testing.assert_allclose(s.scores(c), [0.0, 0.0, 1.0])  # v = 0: posterior means
    assert s.select(c) == 2
    s.update(0, c, 1.0)
    with pytest.raises(ValueError, match="arm 0 already has 1 updates"):
        s.set_prior(0, mean=np.zeros(4))


def test_lints_sampled_scores_have_posterior_law():
    """For one context, s_k ~ N(f^T mu_k, v^2 f^T A_k^-1 f): check mean and std over 20,000
    independent draws (select_batch draws independently per context) to 5 standard errors."""
    v, dim = 0.5, 6
    s = LinTS(2, dim, v=v, seed=3)
    arms, X, y = _data(2, 20, dim, 2)
    s.update_batch(arms, X, y)
    c = np.random.default_rng(4).normal(size=dim)
    draws = s._score_batch(np.tile(c, (20000, 1)))
    for k in range(2):
        mu, sd = c @ s.theta_[k], v * np.sqrt(c @ s.A_inv(k) @ c)
        assert abs(draws[:, k].mean() - mu) < 5 * sd / np.sqrt(20000)
        assert abs(draws[:, k].std() / sd - 1) < 5 * np.sqrt(0.5 / 20000)


def test_lints_woodbury_equals_dense_with_same_draws():
    arms, X, y = _data(5, 40, 30, 2)
    a, b = LinTS(2, 30, v=0.4, seed=9), LinTS(2, 30, v=0.4, seed=9, woodbury_max_rank=0)
    for s in (a, b):
        s.update_batch(arms, X, y)
    c = np.random.default_rng(6).normal(size=30)
    for _ in range(10):
        sa, sb = a.scores(c), b.scores(c)
        assert np.max(np.abs(sa - sb) / np.abs(sb)) < 1e-8


@pytest.mark.parametrize("max_rank", [None, 3])
def test_sliding_window_equals_ridge_on_last_w_updates(max_rank):
    """After 120 updates with window 25, each arm's model is the ridge fit of exactly the
    arm's updates among the last 25 (low-rank form, and dense form with rank-1 downdates)."""
    dim, W = 5, 25
    arms, X, y = _data(7, 120, dim, 3)
    s = SlidingWindowLinUCB(3, dim, alpha=0.2, window=W, woodbury_max_rank=max_rank)
    s.update_batch(arms, X, y)
    assert s.window_arms_.tolist() == arms[-W:].tolist()
    assert s.counts_.tolist() == np.bincount(arms, minlength=3).tolist()
    for k in range(3):
        keep = np.flatnonzero(arms == k)
        keep = keep[keep >= 120 - W]
        A = np.eye(dim) + X[keep].T @ X[keep]
        np.testing.assert_allclose(s.A_inv(k), np.linalg.inv(A), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(s.theta_[k], np.linalg.solve(A, X[keep].T @ y[keep]), rtol=1e-9, atol=1e-12)
        assert s.arms_[k].t == keep.size


def test_sliding_window_tracks_a_switch_linucb_does_not():
    """Arm 0 pays 0.8 and arm 1 0.2 for 300 rounds, then they swap for 200. Over the last 100
    rounds the windowed bandit (W = 60) plays the new best arm mostly; plain LinUCB, weighed
    down by 300 old rounds, much less."""
    c = np.ones(2) / np.sqrt(2)
    rng = np.random.default_rng(0)

    def run(sel):
        picks = []
        for t in range(500):
            k = sel.select(c)
            best = 0 if t < 300 else 1
            sel.update(k, c, float(np.clip((0.8 if k == best else 0.2) + 0.05 * rng.normal(), 0, 1)))
            picks.append(k)
        return np.mean(np.array(picks[-100:]) == 1)

    windowed, plain = run(SlidingWindowLinUCB(2, 2, alpha=0.5, window=60)), run(LinUCB(2, 2, alpha=0.5))
    assert windowed > 0.8 and windowed > plain + 0.2


@pytest.mark.parametrize("max_rank", [None, 2])
def test_sliding_window_no_drift_over_long_runs(max_rank):
    """4,000 updates (about 3,950 exact downdates) of badly scaled contexts (|x| ~ 30) with
    window 30: still the closed form to 1e-8, thanks to the periodic exact rebuild."""
    dim, W = 8, 30
    arms, X, y = _data(11, 4000, dim, 2)
    X *= 10.0
    s = SlidingWindowLinUCB(2, dim, window=W, woodbury_max_rank=max_rank)
    s.update_batch(arms, X, y)
    for k in range(2):
        keep = np.flatnonzero(arms == k)
        keep = keep[keep >= 4000 - W]
        A = np.eye(dim) + X[keep].T @ X[keep]
        theta = np.linalg.solve(A, X[keep].T @ y[keep])
        assert np.linalg.norm(s.theta_[k] - theta) / np.linalg.norm(theta) < 1e-8
        assert np.linalg.norm(s.A_inv(k) - np.linalg.inv(A)) / np.linalg.norm(np.linalg.inv(A)) < 1e-8
