"""UCB1 (Auer, Cesa-Bianchi & Fischer 2002): non-contextual optimism."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.base import RewardSumSelector


class UCB1(RewardSumSelector):
    """Pick the arm with the largest upper confidence bound on its mean reward.

    With n_k updates and reward sum S_k of arm k, and n = sum_k n_k:

        score_k = S_k / n_k + sqrt(c * ln(n) / n_k)     (+inf while n_k = 0: every arm once first)
        update of arm k with reward r:   S_k <- S_k + r,   n_k <- n_k + 1

    c = 2 is the classic UCB1 for rewards in [0, 1]. Exact ties are broken uniformly.

    Args:
        n_arms: number of arms.
        c: exploration constant (>= 0).
        seed: seed of the owned RNG (tie-breaks).

    Attributes:
        sums_: (n_arms,) float64 reward sums S_k (n_k is ``counts_``).
    """

    name: ClassVar[str] = "ucb1"
    _hparam_names: ClassVar[tuple[str, ...]] = ("c",)

    def __init__(self, n_arms: int, c: float = 2.0, seed: int = 0) -> None:
        if not c >= 0:
            raise ValueError(f"UCB1: c must be >= 0, got {c!r}")
        super().__init__(n_arms, seed)
        self.c = float(c)

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        n_k = self.counts_.astype(np.float64)
        n = max(n_k.sum(), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(n_k > 0, self.sums_ / n_k + np.sqrt(self.c * np.log(n) / n_k), np.inf)
        return np.tile(s, (len(contexts), 1))
