"""Regret on a synthetic linear 3-arm problem: LinUCB and LinTS vs uniform selection.

Problem (per seed): d = 5, arm parameters theta_k ~ N(0, I) / sqrt(d); each round a context
c ~ N(0, I) / sqrt(d) arrives, arm k pays c^T theta_k + N(0, 0.1^2). Pseudo-regret of a run is
sum_t max_k c_t^T theta_k - c_t^T theta_{a_t}; uniform selection's is computed exactly as
sum_t max_k c_t^T theta_k - mean_k c_t^T theta_k on the same contexts.
"""

import numpy as np
import pytest

from laser.bandits import LinTS, LinUCB

ROUNDS, DIM, ARMS, SEEDS = 2000, 5, 3, 20


def regret_run(make, seed):
    """(regret of the selector, regret of uniform selection) on the seed's problem."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(ARMS, DIM)) / np.sqrt(DIM)
    contexts = rng.normal(size=(ROUNDS, DIM)) / np.sqrt(DIM)
    noise = 0.1 * rng.normal(size=ROUNDS)
    expected = contexts @ theta.T  # (T, K)
    sel = make(seed)
    arms = np.empty(ROUNDS, dtype=np.int64)
    for t in range(ROUNDS):
        arms[t] = sel.select(contexts[t])
        sel.update(arms[t], contexts[t], expected[t, arms[t]] + noise[t])
    best = expected.max(axis=1)
    return float(np.sum(best - expected[np.arange(ROUNDS), arms])), float(np.sum(best - expected.mean(axis=1)))


ALGORITHMS = {
    "linucb": lambda seed: LinUCB(ARMS, DIM, alpha=0.1, seed=seed),
    "lints": lambda seed: LinTS(ARMS, DIM, v=0.1, seed=seed),
}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_regret_below_half_of_uniform_on_19_of_20_seeds(name):
    runs = np.array([regret_run(ALGORITHMS[name], seed) for seed in range(SEEDS)])
    ratios = runs[:, 0] / runs[:, 1]
    print(
        f"\n{name}: mean regret {runs[:, 0].mean():.2f} vs uniform {runs[:, 1].mean():.2f}; ratio median "
        f"{np.median(ratios):.4f}, max {ratios.max():.4f}; seeds below 0.5: {(ratios < 0.5).sum()}/{SEEDS}"
    )
    assert (ratios < 0.5).sum() >= 19
