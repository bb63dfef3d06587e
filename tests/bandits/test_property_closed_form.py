"""Property tests (hypothesis): incremental state equals the batch closed form."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from laser.bandits import LinUCB, SlidingWindowLinUCB


@st.composite
def problems(draw):
    dim = draw(st.integers(1, 10))
    n = draw(st.integers(0, 30))
    n_arms = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.01, 1.0, 10.0]))
    max_rank = draw(st.sampled_from([None, 0, 1, 4]))
    rng = np.random.default_rng(seed)
    return dim, n_arms, rng.integers(n_arms, size=n), scale * rng.normal(size=(n, dim)), rng.uniform(size=n), max_rank


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@settings(max_examples=150, deadline=None)
@given(problems())
def test_incremental_equals_closed_form(problem):
    """theta_k = (X_k^T X_k + I)^-1 X_k^T y_k and A_k^-1 = (X_k^T X_k + I)^-1 for every arm,
    whatever the path (Woodbury, dense, or a switch in between), to relative 1e-8."""
    dim, n_arms, arms, X, y, max_rank = problem
    s = LinUCB(n_arms, dim, woodbury_max_rank=max_rank)
    s.update_batch(arms, X, y)
    for k in range(n_arms):
        Xk, yk = X[arms == k], y[arms == k]
        A = Xk.T @ Xk + np.eye(dim)
        assert _rel(s.A_inv(k), np.linalg.inv(A)) < 1e-8
        theta = np.linalg.solve(A, Xk.T @ yk)
        assert np.linalg.norm(s.theta_[k] - theta) <= 1e-8 * max(np.linalg.norm(theta), 1e-12) + 1e-12


@settings(max_examples=100, deadline=None)
@given(problems(), st.integers(1, 12))
def test_sliding_window_equals_closed_form_on_window(problem, window):
    """Same closed form over only the last ``window`` updates (rank-1 downdates of the rest,
    with the periodic exact rebuild of :meth:`RidgeArm.refresh`)."""
    dim, n_arms, arms, X, y, max_rank = problem
    s = SlidingWindowLinUCB(n_arms, dim, window=window, woodbury_max_rank=max_rank)
    s.update_batch(arms, X, y)
    start = max(0, len(arms) - window)
    for k in range(n_arms):
        idx = np.flatnonzero(arms == k)
        idx = idx[idx >= start]
        A = X[idx].T @ X[idx] + np.eye(dim)
        assert _rel(s.A_inv(k), np.linalg.inv(A)) < 1e-8
        theta = np.linalg.solve(A, X[idx].T @ y[idx])
        assert s.arms_[k].t == idx.size
        if idx.size == 0:  # an emptied arm is rebuilt from its prior exactly
            assert np.all(s.theta_[k] == 0) and s.arms_[k].mode in ("lowrank", "dense")
        assert np.linalg.norm(s.theta_[k] - theta) <= 1e-8 * np.linalg.norm(theta) + 1e-12
