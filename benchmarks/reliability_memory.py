"""Memory of the reliability router (issue 17 item 3): the bytes its state holds and the peak
Python/numpy allocation of one label-model refit, with every group's vote window full.

Votes are drawn from a one-coin model (RM k right with probability ``acc[k]``, ties abstain with
probability 0.2) so the refit does its full work (spectral fit, EM, checks, bootstrap).

Usage: ``python benchmarks/reliability_memory.py [--rms 5] [--groups 4] [--window 1500]``
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from laser.routing.reliability import ReliabilityRouter


def synthetic_votes(rng, acc: np.ndarray, n: int) -> np.ndarray:
    """(K, n) int8 votes in {-1, 0, +1} against a hidden +1 truth."""
    right = rng.random((len(acc), n)) < acc[:, None]
    votes = np.where(right, 1, -1).astype(np.int8)
    votes[rng.random(votes.shape) < 0.2] = 0
    return votes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rms", type=int, default=5)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--window", type=int, default=1500)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    router = ReliabilityRouter(args.rms, anchor=0, seed=0, window=args.window)
    for g in range(args.groups):
        acc = rng.uniform(0.55, 0.9, args.rms)
        router.observe(f"g{g}", synthetic_votes(rng, acc, args.window))
    state = router.state_dict()
    state_bytes = sum(np.asarray(v).nbytes for v in state.values())
    tracemalloc.start()
    t0 = time.perf_counter()
    for g in range(args.groups):
        router.refit(f"g{g}")
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"K={args.rms} groups={args.groups} window={args.window} votes/group")
    print(f"router state: {state_bytes / 1024:.1f} KiB ({len(state)} arrays)")
    print(f"refit of every group: peak allocation {peak / 2**20:.2f} MiB, {1e3 * seconds / args.groups:.1f} ms/group")


if __name__ == "__main__":
    main()
