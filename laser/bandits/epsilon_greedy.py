"""Epsilon-greedy on running mean rewards (non-contextual)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.base import RewardSumSelector, argmax_random_tie


class EpsilonGreedy(RewardSumSelector):
    """With probability epsilon a uniformly random available arm, else the best mean so far.

        mean_k = S_k / n_k  (+inf while n_k = 0, so every arm is tried once)
        k* = uniform over available arms     with probability epsilon
             argmax_k mean_k (ties uniform)   otherwise
        update of arm k with reward r:   S_k <- S_k + r,   n_k <- n_k + 1

    ``scores`` returns mean_k.

    Args:
        n_arms: number of arms.
        epsilon: exploration probability in [0, 1].
        seed: seed of the owned RNG.

    Attributes:
        sums_: (n_arms,) float64 reward sums S_k (n_k is ``counts_``).
    """

    name: ClassVar[str] = "epsilon_greedy"
    _hparam_names: ClassVar[tuple[str, ...]] = ("epsilon",)

    def __init__(self, n_arms: int, epsilon: float = 0.1, seed: int = 0) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"EpsilonGreedy: epsilon must be in [0, 1], got {epsilon!r}")
        super().__init__(n_arms, seed)
        self.epsilon = float(epsilon)

    def _means(self) -> np.ndarray:
        n_k = self.counts_.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n_k > 0, self.sums_ / n_k, np.inf)

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        return np.tile(self._means(), (len(contexts), 1))

    def _choose(self, scores: np.ndarray) -> np.ndarray:
        free = self._available()
        out = np.empty(len(scores), dtype=np.int64)
        for i, row in enumerate(np.where(np.isnan(scores), -np.inf, scores)):
            if self.rng_.random() < self.epsilon:
                out[i] = free[self.rng_.integers(free.size)]
            else:
                out[i] = argmax_random_tie(row, self.rng_)
        return out
