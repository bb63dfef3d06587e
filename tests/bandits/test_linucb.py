"""LinUCB: hand-derived scores, exactness of the incremental inverse, Woodbury == dense."""

import numpy as np
import pytest

from laser.bandits import LinUCB, ucb_scores


def test_golden_scores_by_hand():
    """alpha = 0.1, d = 2, A_k = I, b_k = 0 at the start.

    * Fresh arms, c = (3, 4): theta = 0, c^T A^-1 c = 25 -> UCB = 0.1 * 5 = 0.5.
    * Arm 0 after (x=(1,0), r=1): A = diag(2,1), b = (1,0), theta = (0.5, 0).
      c = (1,1): mean 0.5, c^T A^-1 c = 1/2 + 1 = 1.5 -> 0.5 + 0.1 sqrt(1.5) = 0.6224744871391589.
    * Arm 0 after also (x=(0,2), r=0.5): A = diag(2,5), b = (1,1), theta = (0.5, 0.2).
      c = (1,1): mean 0.7, quad 0.5 + 0.2 = 0.7 -> 0.7 + 0.1 sqrt(0.7) = 0.7836660026534076.
    * Arm 1 after (x=(1,1), r=1): A = [[2,1],[1,2]], A^-1 = [[2,-1],[-1,2]]/3, b = (1,1),
      theta = (1/3, 1/3). c = (1,0): mean 1/3, quad 2/3 -> 1/3 + 0.1 sqrt(2/3) = 0.41498299142610593.
    * Arm 2 untouched, c = (1,1): 0.1 sqrt(2) = 0.1414213562373095.
    """
    s = LinUCB(3, 2, alpha=0.1, seed=0)
    np.testing.assert_allclose(s.scores(np.array([3.0, 4.0])), [0.5, 0.5, 0.5], rtol=1e-15)
    s.update(0, np.array([1.0, 0.0]), 1.0)
    assert s.scores(np.array([1.0, 1.0]))[0] == pytest.approx(0.6224744871391589, rel=1e-14)
    s.update(0, np.array([0.0, 2.0]), 0.5)
    s.update(1, np.array([1.0, 1.0]), 1.0)
    got = s.scores(np.array([1.0, 1.0]))
    assert got[0] == pytest.approx(0.7836660026534076, rel=1e-14)
    assert got[2] == pytest.approx(0.1414213562373095, rel=1e-14)
    assert s.scores(np.array([1.0, 0.0]))[1] == pytest.approx(0.41498299142610593, rel=1e-14)
    np.testing.assert_allclose(s.theta_[0], [0.5, 0.2], rtol=1e-14)
    np.testing.assert_allclose(s.A_inv(1), np.array([[2.0, -1.0], [-1.0, 2.0]]) / 3, rtol=1e-14)
    assert s.select(np.array([1.0, 1.0])) == 0
    assert s.counts_.tolist() == [2, 1, 0] and s.counts_.dtype == np.int64


def test_ucb_scores_pure_function():
    """ucb_scores(m, w, a) = m + a w: (1, 2) and (0.5, 0) with a = 0.1 -> (1.05, 2.0)."""
    np.testing.assert_array_equal(ucb_scores(np.array([1.0, 2.0]), np.array([0.5, 0.0]), 0.1), [1.05, 2.0])


@pytest.mark.parametrize("dim", [12, 64])
def test_incremental_inverse_matches_linalg_inv_after_1000_updates(dim):
    """1,000 updates on one arm: A^-1 kept by Woodbury then Sherman-Morrison equals
    np.linalg.inv(I + X^T X) with relative Frobenius error < 1e-9 (crosses t = d on the way)."""
    rng = np.random.default_rng(dim)
    X = rng.normal(size=(1000, dim))
    y = rng.uniform(size=1000)
    s = LinUCB(1, dim, seed=0)
    s.update_batch(np.zeros(1000, dtype=np.int64), X, y)
    A = np.eye(dim) + X.T @ X
    ref = np.linalg.inv(A)
    assert s.arms_[0].mode == "dense"
    assert np.linalg.norm(s.A_inv(0) - ref) / np.linalg.norm(ref) < 1e-9
    theta = np.linalg.solve(A, X.T @ y)
    assert np.linalg.norm(s.theta_[0] - theta) / np.linalg.norm(theta) < 1e-9


def test_woodbury_and_dense_paths_agree():
    """Same data through the t-dimensional (Woodbury) form and the dense rank-1 form: scores,
    theta and A^-1 agree to relative 1e-8, and the Woodbury arm really stayed low-rank."""
    rng = np.random.default_rng(1)
    dim, n = 48, 90
    lowrank = LinUCB(3, dim, alpha=0.7, seed=5, woodbury_max_rank=dim)
    dense = LinUCB(3, dim, alpha=0.7, seed=5, woodbury_max_rank=0)
    arms, X, y = rng.integers(3, size=n), rng.normal(size=(n, dim)), rng.uniform(size=n)
    for s in (lowrank, dense):
        s.update_batch(arms, X, y)
    assert [a.mode for a in lowrank.arms_] == ["lowrank"] * 3 and dense.arms_[0].mode == "dense"
    C = rng.normal(size=(20, dim))
    for c in C:
        a, b = lowrank.scores(c), dense.scores(c)
        assert np.max(np.abs(a - b) / np.abs(b)) < 1e-8
    for k in range(3):
        assert np.linalg.norm(lowrank.A_inv(k) - dense.A_inv(k)) / np.linalg.norm(dense.A_inv(k)) < 1e-8
    np.testing.assert_array_equal(lowrank.select_batch(C), dense.select_batch(C))


def test_switch_to_dense_keeps_results():
    """An arm crossing t = max_rank switches form once; before and after it matches the
    closed form (X^T X + I)^-1 X^T y."""
    rng = np.random.default_rng(2)
    s = LinUCB(1, 10, seed=0, woodbury_max_rank=6)
    X, y = rng.normal(size=(15, 10)), rng.uniform(size=15)
    for i in range(15):
        s.update(0, X[i], y[i])
        assert s.arms_[0].mode == ("lowrank" if i < 6 else "dense")
        theta = np.linalg.solve(np.eye(10) + X[: i + 1].T @ X[: i + 1], X[: i + 1].T @ y[: i + 1])
        np.testing.assert_allclose(s.theta_[0], theta, rtol=1e-10, atol=1e-12)


def test_no_matrix_inversion_per_step(monkeypatch):
    """select / update / scores never call a d x d inverse or solve."""
    s = LinUCB(2, 30, seed=0, woodbury_max_rank=5)
    rng = np.random.default_rng(3)

    def forbidden(*args, **kwargs):
        raise AssertionError("a matrix was inverted during a bandit step")

    for fn in ("inv", "solve", "pinv", "lstsq", "cholesky"):
        monkeypatch.setattr(np.linalg, fn, forbidden)
    for _ in range(40):  # crosses the switch to dense (which uses no inversion either)
        c = rng.normal(size=30)
        s.update(s.select(c), c, float(rng.uniform()))


def test_random_tie_break_is_uniform_and_seeded():
    """Fresh arms score identically, so the first pick is uniform over the 4 arms across seeds,
    and equal for equal seeds."""
    c = np.ones(5)
    picks = np.array([LinUCB(4, 5, seed=s).select(c) for s in range(400)])
    assert np.all(np.bincount(picks, minlength=4) > 60)
    assert LinUCB(4, 5, seed=7).select(c) == LinUCB(4, 5, seed=7).select(c)


def test_float32_close_to_float64():
    rng = np.random.default_rng(4)
    s64, s32 = LinUCB(2, 20, seed=0), LinUCB(2, 20, seed=0, dtype=np.float32)
    arms, X, y = rng.integers(2, size=60), rng.normal(size=(60, 20)), rng.uniform(size=60)
    for s in (s64, s32):
        s.update_batch(arms, X, y)
    assert s32.arms_[0].theta.dtype == np.float32
    c = rng.normal(size=20)
    assert s32.scores(c).dtype == np.float64
    np.testing.assert_allclose(s32.scores(c), s64.scores(c), rtol=1e-4)


def test_projection_equals_linucb_on_projected_contexts():
    """With projection_dim = p, the selector behaves like a p-dim LinUCB fed P c."""
    rng = np.random.default_rng(5)
    s = LinUCB(2, 40, seed=3, projection_dim=8)
    P = s.projection_
    assert P.shape == (8, 40)
    ref = LinUCB(2, 8, seed=3)
    for _ in range(30):
        c, k, r = rng.normal(size=40), int(rng.integers(2)), float(rng.uniform())
        np.testing.assert_allclose(s.scores(c), ref.scores(P @ c), rtol=1e-12)
        s.update(k, c, r)
        ref.update(k, P @ c, r)


def test_bad_inputs_are_named():
    s = LinUCB(2, 3)
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        s.select(np.ones(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        s.update(0, np.array([1.0, np.nan, 0.0]), 0.5)
    with pytest.raises(ValueError, match="reward for arm 1 is not finite"):
        s.update(1, np.ones(3), float("inf"))
    with pytest.raises(IndexError, match="arm 2 out of range"):
        s.update(2, np.ones(3), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        LinUCB(2, 3, alpha=-1.0)


@pytest.mark.parametrize("max_rank", [None, 0, 30])
def test_warm_start_block_update_equals_row_updates(max_rank):
    """warm_start (block Woodbury / dense block update, m x m solve) gives the same model as
    row-by-row updates: 3 blocks of 25, 10 and 30 rows at d = 40, so the max_rank = 30 case
    crosses into dense form inside a block."""
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(65, 40)), rng.uniform(size=65)
    block, rows = LinUCB(2, 40, woodbury_max_rank=max_rank), LinUCB(2, 40, woodbury_max_rank=max_rank)
    for lo, hi in ((0, 25), (25, 35), (35, 65)):
        block.warm_start(1, X[lo:hi], y[lo:hi])
    rows.update_batch(np.ones(65, dtype=np.int64), X, y)
    assert block.counts_.tolist() == [0, 65]
    np.testing.assert_allclose(block.A_inv(1), rows.A_inv(1), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(block.theta_[1], rows.theta_[1], rtol=1e-10)
    c = rng.normal(size=40)
    np.testing.assert_allclose(block.scores(c), rows.scores(c), rtol=1e-10)


def test_memory_is_o_td_before_the_switch():
    """At d = 4096 with 20 updates per arm nothing d x d exists: each arm holds its rows
    (20 x 4096) and a small t x t block; the whole state is well under one d x d matrix (128 MiB)."""
    rng = np.random.default_rng(9)
    s = LinUCB(2, 4096, seed=0)
    C = rng.normal(size=(40, 4096))
    s.update_batch(np.repeat([0, 1], 20), C, rng.uniform(size=40))
    assert all(a.mode == "lowrank" and a.Ainv is None for a in s.arms_)
    assert s.arms_[0]._K.shape == (32, 32) and s.arms_[0]._X.shape == (32, 4096)
    assert sum(v.nbytes for v in s.state_dict().values()) < 3 * 20 * 4096 * 8
    assert s.arms_[0].max_rank == (3 * 4096) // 5
