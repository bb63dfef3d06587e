"""Sliding-window LinUCB for non-stationary rewards (after Cheung, Simchi-Levi & Zhu 2019)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.linear import LinearSelector
from laser.bandits.linucb import ucb_scores


class SlidingWindowLinUCB(LinearSelector):
    """LinUCB that forgets: only the last ``window`` updates (over all arms) are in the model.

    With W the set of the last ``window`` rounds and W_k those that updated arm k:

        A_k = l2 I + sum_{i in W_k} f_i f_i^T,   b_k = sum_{i in W_k} r_i f_i,   theta_k = A_k^-1 b_k
        k* = argmax_k f^T theta_k + alpha * sqrt(f^T A_k^-1 f)

    Each update adds the new observation to its arm and, once more than ``window`` are held,
    removes the oldest one from whichever arm it belongs to (an exact rank-1 downdate; see
    :mod:`laser.bandits.ridge`). The policy changes while it trains, so old feedback about an
    RM goes stale; the window bounds how stale. Memory: O(window * d) for the kept rows.

    Args:
        n_arms: number of arms.
        dim: context dimension d.
        alpha: exploration weight.
        window: number of most recent updates kept (>= 1).
        seed: seed of the owned RNG.
        dtype, projection_dim, l2, woodbury_max_rank: as for :class:`~laser.bandits.LinUCB`.

    Attributes:
        window_arms_: int64 array, the arm of each update in the window, oldest first.
    """

    name: ClassVar[str] = "sliding_linucb"
    _keep_rows: ClassVar[bool] = True
    _hparam_names: ClassVar[tuple[str, ...]] = ("alpha", "window", "l2")

    def __init__(
        self,
        n_arms: int,
        dim: int,
        alpha: float = 0.1,
        window: int = 200,
        seed: int = 0,
        dtype: type = np.float64,
        projection_dim: int | None = None,
        l2: float = 1.0,
        woodbury_max_rank: int | None = None,
    ) -> None:
        if not alpha >= 0 or not l2 > 0 or int(window) != window or window < 1:
            raise ValueError(
                f"SlidingWindowLinUCB: need alpha >= 0, l2 > 0, integer window >= 1; "
                f"got alpha={alpha!r}, l2={l2!r}, window={window!r}"
            )
        self.alpha, self.window, self.l2 = float(alpha), int(window), float(l2)
        super().__init__(
            n_arms,
            dim,
            seed=seed,
            dtype=dtype,
            projection_dim=projection_dim,
            woodbury_max_rank=woodbury_max_rank,
            prior_precision=self.l2,
        )
        self.window_arms_ = np.zeros(0, dtype=np.int64)

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        means, widths = self._means_and_widths(contexts)
        return ucb_scores(means, widths, self.alpha)

    def _update(self, arm: int, context: np.ndarray, reward: float) -> None:
        super()._update(arm, context, reward)
        self.window_arms_ = np.append(self.window_arms_, np.int64(arm))
        if self.window_arms_.size > self.window:
            self.arms_[int(self.window_arms_[0])].remove_oldest()
            self.window_arms_ = self.window_arms_[1:]

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {**super()._extra_state(), "window_arms": self.window_arms_.copy()}

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        super()._load_extra_state(sd)
        self.window_arms_ = np.array(sd["window_arms"], dtype=np.int64)
