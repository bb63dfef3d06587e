"""Disjoint LinUCB (Li et al. 2010), the selector LASeR uses."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.linear import LinearSelector


def ucb_scores(means: np.ndarray, widths: np.ndarray, alpha: float) -> np.ndarray:
    """Upper confidence bounds: c^T theta_k + alpha * sqrt(c^T A_k^-1 c).

    Args:
        means: c^T theta_k, any shape.
        widths: sqrt(c^T A_k^-1 c), same shape.
        alpha: exploration weight (>= 0).

    Returns:
        means + alpha * widths, float64.
    """
    return np.asarray(means, dtype=np.float64) + alpha * np.asarray(widths, dtype=np.float64)


class LinUCB(LinearSelector):
    """Disjoint LinUCB with a ridge prior, exact and O(t d) per step while t < d.

    Decision, for context c (features f = c, or P c when projecting):

        k* = argmax_k  f^T theta_k + alpha * sqrt(f^T A_k^-1 f),   exact ties broken uniformly

    Update of the chosen arm k with reward r:

        A_k <- A_k + f f^T,   b_k <- b_k + r f,   theta_k = A_k^-1 b_k

    starting from A_k = l2 * I, b_k = 0 (the paper: l2 = 1, alpha = 0.1). A_k^-1 is never
    formed by inversion: see :mod:`laser.bandits.ridge` (Woodbury form while t_k <= d, then
    Sherman-Morrison rank-1 updates).

    Args:
        n_arms: number of arms.
        dim: context dimension d.
        alpha: exploration weight.
        seed: seed of the owned RNG (tie-breaks, projection).
        dtype: float64 (default) or float32.
        projection_dim: optional fixed random projection of the context to this dimension.
        l2: ridge strength (A_k = l2 * I at the start).
        woodbury_max_rank: see :class:`~laser.bandits.linear.LinearSelector`.
    """

    name: ClassVar[str] = "linucb"
    _hparam_names: ClassVar[tuple[str, ...]] = ("alpha", "l2")

    def __init__(
        self,
        n_arms: int,
        dim: int,
        alpha: float = 0.1,
        seed: int = 0,
        dtype: type = np.float64,
        projection_dim: int | None = None,
        l2: float = 1.0,
        woodbury_max_rank: int | None = None,
    ) -> None:
        if not alpha >= 0 or not l2 > 0:
            raise ValueError(f"LinUCB: need alpha >= 0 and l2 > 0, got alpha={alpha!r}, l2={l2!r}")
        self.alpha, self.l2 = float(alpha), float(l2)
        super().__init__(
            n_arms,
            dim,
            seed=seed,
            dtype=dtype,
            projection_dim=projection_dim,
            woodbury_max_rank=woodbury_max_rank,
            prior_precision=self.l2,
        )

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        means, widths = self._means_and_widths(contexts)
        return ucb_scores(means, widths, self.alpha)
