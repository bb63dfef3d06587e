"""Linear Thompson sampling (Agrawal & Goyal 2013) with an optional Gaussian prior per arm."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.linear import LinearSelector


class LinTS(LinearSelector):
    """Disjoint linear Thompson sampling, exact and O(t d) per step while t < d.

    Each arm's posterior is theta_k ~ N(mu_k, v^2 A_k^-1) with

        A_k = P0_k + sum_i f_i f_i^T,   b_k = P0_k m0_k + sum_i r_i f_i,   mu_k = A_k^-1 b_k

    starting from the prior N(m0_k, P0_k^-1) (default m0 = 0, P0 = I). Decision for context c:

        s_k = f^T mu_k + v * sqrt(f^T A_k^-1 f) * z_k,   z_k ~ N(0, 1) i.i.d.;   k* = argmax_k s_k

    s_k has exactly the law of f^T theta~_k with theta~_k drawn from the posterior, so a
    decision equals full-vector Thompson sampling in distribution but costs O(t d), not O(d^3).
    In ``select_batch`` each context gets its own independent draw. Updates are LinUCB's.

    Args:
        n_arms: number of arms.
        dim: context dimension d.
        v: posterior scale (exploration); 0 gives the greedy ridge rule.
        seed: seed of the owned RNG (draws, tie-breaks, projection).
        dtype: float64 (default) or float32.
        projection_dim: optional fixed random projection of the context to this dimension.
        prior_mean: shared prior mean m0 (p,), or None for zeros.
        prior_precision: shared prior precision P0: scalar, (p,) diagonal or (p, p) matrix
            (a matrix puts arms in dense form from the start). Per-arm priors: :meth:`set_prior`.
        woodbury_max_rank: see :class:`~laser.bandits.linear.LinearSelector`.
    """

    name: ClassVar[str] = "lints"
    _hparam_names: ClassVar[tuple[str, ...]] = ("v",)

    def __init__(
        self,
        n_arms: int,
        dim: int,
        v: float = 0.1,
        seed: int = 0,
        dtype: type = np.float64,
        projection_dim: int | None = None,
        prior_mean: np.ndarray | None = None,
        prior_precision: float | np.ndarray = 1.0,
        woodbury_max_rank: int | None = None,
    ) -> None:
        if not v >= 0:
            raise ValueError(f"LinTS: v must be >= 0, got {v!r}")
        self.v = float(v)
        super().__init__(
            n_arms,
            dim,
            seed=seed,
            dtype=dtype,
            projection_dim=projection_dim,
            woodbury_max_rank=woodbury_max_rank,
            prior_precision=prior_precision,
            prior_mean=prior_mean,
        )

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        means, widths = self._means_and_widths(contexts)
        return means + self.v * widths * self.rng_.standard_normal(means.shape)
