"""Time per LinUCB decision + update: laser.bandits vs a per-step inverse vs mabwiser.

For each context size d, number of arms K and number of updates t already seen by every arm,
all three implementations are brought to the same state (t random rows per arm) and then timed
on the same decide-and-update steps, in this one process:

* ours: ``laser.bandits.LinUCB`` (Woodbury form while t <= 0.6 d, then rank-1 updated inverse);
* inverse/step: what the LASeR reference code does, ``np.linalg.inv(A_k)`` for every arm at
  every decision (only a few steps are timed: one step is K inversions of a d x d matrix);
* mabwiser: ``MAB(LearningPolicy.LinUCB)``, which re-inverts the updated arm's A after each
  ``partial_fit`` (also only a few steps).

Each row reports the median milliseconds per step, the speed-up ratios, the largest relative
difference between our UCB scores and the inverse baseline's on the same state, and the memory
one arm's state takes (ours: t x d rows plus t x t, or d x d once dense; the others: d x d).

Usage:
    python benchmarks/bandit_speed.py                      # the full grid (about 10 minutes)
    python benchmarks/bandit_speed.py --dims 4096 --arms 4 --updates 200   # the target cell
    python benchmarks/bandit_speed.py --blas-threads 1     # one core for all three

On a machine shared with other jobs, ``--blas-threads 1`` gives steadier numbers: small
multi-threaded BLAS calls stall when the other cores are busy.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

ALPHA = 0.1
np = None  # imported in main(), after the BLAS thread count is set


def _median_ms(step, n: int) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def inverse_per_step(A: list[np.ndarray], b: list[np.ndarray], c: np.ndarray, reward: float) -> tuple[int, np.ndarray]:
    """The reference code's LinUCB step: invert every A_k, score, pick, then A_k += c c^T."""
    ucb = np.empty(len(A))
    for k in range(len(A)):
        A_inv = np.linalg.inv(A[k])
        ucb[k] = c @ (A_inv @ b[k]) + ALPHA * np.sqrt(c @ A_inv @ c)
    k = int(np.argmax(ucb))
    A[k] += np.outer(c, c)
    b[k] += reward * c
    return k, ucb


def time_ours(X, y, C, R, steps: int) -> tuple[float, np.ndarray, float]:
    """(ms per step, scores at the first context before any timed step, MiB of arm 0's state)."""
    n_arms, _, d = X.shape
    ours = LinUCB(n_arms, d, alpha=ALPHA, seed=0)
    for k in range(n_arms):
        ours.warm_start(k, X[k], y[k])  # block update: the setup, not what is timed
    first_scores = ours.scores(C[0])
    ms = _median_ms(lambda i: ours.update(ours.select(C[i]), C[i], R[i]), steps)
    arm = ours.arms_[0]
    mib = (arm.X.nbytes + arm.t**2 * 8 if arm.mode == "lowrank" else arm.Ainv.nbytes) / 2**20
    return ms, first_scores, mib


def time_inverse(X, y, C, R, steps: int) -> tuple[float, np.ndarray]:
    """(ms per step, scores of the first timed step) of the per-step inverse baseline."""
    A = [np.eye(X.shape[2]) + Xk.T @ Xk for Xk in X]
    b = [Xk.T @ yk for Xk, yk in zip(X, y, strict=True)]
    ucbs = []
    ms = _median_ms(lambda i: ucbs.append(inverse_per_step(A, b, C[i], R[i])[1]), steps)
    return ms, ucbs[0]


def time_mabwiser(X, y, C, R, steps: int) -> float:
    """ms per step of mabwiser's LinUCB (predict + partial_fit); NaN if it is not installed."""
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError:
        return float("nan")
    n_arms, t, d = X.shape
    mab = MAB(arms=list(range(n_arms)), learning_policy=LearningPolicy.LinUCB(alpha=ALPHA, l2_lambda=1.0), seed=0)
    mab.fit(decisions=np.repeat(np.arange(n_arms), t), rewards=y.reshape(-1), contexts=X.reshape(-1, d))

    def step(i):
        k = mab.predict(C[i][None, :])
        mab.partial_fit(decisions=[k], rewards=[R[i]], contexts=C[i][None, :])

    return _median_ms(step, steps)


def bench_cell(d: int, n_arms: int, t: int, steps: int, slow_steps: int, rng) -> dict:
    """One table row: the three implementations on the same rows, contexts and rewards."""
    X = rng.normal(size=(n_arms, t, d)) / np.sqrt(d)
    y = rng.uniform(size=(n_arms, t))
    C = rng.normal(size=(steps, d)) / np.sqrt(d)
    R = rng.uniform(size=steps)
    ours_ms, ours_scores, ours_mib = time_ours(X, y, C, R, steps)
    inv_ms, inv_scores = time_inverse(X, y, C, R, slow_steps)
    return {
        "d": d,
        "K": n_arms,
        "t": t,
        "ours_ms": ours_ms,
        "inv_ms": inv_ms,
        "mab_ms": time_mabwiser(X, y, C, R, slow_steps),
        "max_rel_diff": float(np.max(np.abs(ours_scores - inv_scores) / np.abs(inv_scores))),
        "ours_mib": ours_mib,
        "dense_mib": d * d * 8 / 2**20,
    }


def main() -> None:
    global np, LinUCB
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blas-threads", type=int, default=0, help="threads for BLAS/LAPACK (default: library default)")
    p.add_argument("--dims", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--arms", type=int, nargs="+", default=[4, 8])
    p.add_argument("--updates", type=int, nargs="+", default=[50, 200, 1000], help="updates per arm before timing")
    p.add_argument("--steps", type=int, default=30, help="timed steps of ours")
    p.add_argument(
        "--slow-steps", type=int, default=0, help="timed steps of the two baselines (default: 1 at d >= 2048, else 3)"
    )
    args = p.parse_args()
    if args.blas_threads:  # must happen before numpy loads its BLAS
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    import numpy

    from laser.bandits import LinUCB as _LinUCB

    np, LinUCB = numpy, _LinUCB
    print(
        f"numpy {np.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"BLAS threads: {args.blas_threads or 'default'}; median ms per decision+update"
    )
    header = (
        f"{'d':>5} {'K':>2} {'t/arm':>6} | {'ours ms':>8} {'inv/step ms':>12} {'mabwiser ms':>12} | "
        f"{'inv/ours':>9} {'mab/ours':>9} | {'max rel diff':>12} | {'ours MiB/arm':>12} {'d x d MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for d in args.dims:
        for n_arms in args.arms:
            for t in args.updates:
                slow = args.slow_steps or (1 if d >= 2048 else 3)
                r = bench_cell(d, n_arms, t, args.steps, slow, rng)
                print(
                    f"{r['d']:>5} {r['K']:>2} {r['t']:>6} | {r['ours_ms']:>8.3f} {r['inv_ms']:>12.1f} "
                    f"{r['mab_ms']:>12.1f} | {r['inv_ms'] / r['ours_ms']:>8.0f}x "
                    f"{r['mab_ms'] / r['ours_ms']:>8.0f}x | "
                    f"{r['max_rel_diff']:>12.1e} | {r['ours_mib']:>12.2f} {r['dense_mib']:>9.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
