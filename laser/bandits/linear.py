"""Shared machinery of the linear contextual bandits: one :class:`RidgeArm` per arm.

Each arm k keeps its own (disjoint) ridge posterior A_k, b_k, theta_k = A_k^-1 b_k over the
features f(c) of the context: f(c) = c, or f(c) = P c with a fixed random projection
P (p x d), P_ij ~ N(0, 1/p), when ``projection_dim = p`` is given (Johnson-Lindenstrauss: inner
products, hence scores, are preserved up to O(1/sqrt(p)) relative error).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.base import Selector
from laser.bandits.ridge import RidgeArm


class LinearSelector(Selector):
    """Base of LinUCB-style selectors: feature map, per-arm ridge state, state dict.

    Args:
        n_arms: number of arms.
        dim: context dimension d.
        seed: seed of the owned RNG (and of the projection matrix).
        dtype: float64 (default) or float32 for the stored state and the arithmetic.
        projection_dim: if set, contexts are projected to this many dimensions first.
        woodbury_max_rank: an arm works in the t-dimensional (Woodbury) form while it has at
            most this many observations, then switches to a dense rank-1-updated inverse.
            None means 0.6 x the feature dimension (where the low-rank form stops being
            cheaper, see :class:`RidgeArm`); 0 means dense from the start.
        prior_precision: shared prior precision of every arm (scalar, (p,) diagonal or (p, p)).
        prior_mean: shared prior mean (p,) or None for zeros.

    Attributes:
        arms_: list of :class:`RidgeArm`, one per arm.
        projection_: the (p, d) projection matrix, or None.
    """

    contextual: ClassVar[bool] = True
    _keep_rows: ClassVar[bool] = False
    _linear_hparams: ClassVar[tuple[str, ...]] = (
        "dim",
        "dtype",
        "projection_dim",
        "woodbury_max_rank",
        "prior_precision",
        "prior_mean",
    )

    def __init__(
        self,
        n_arms: int,
        dim: int,
        seed: int = 0,
        dtype: type = np.float64,
        projection_dim: int | None = None,
        woodbury_max_rank: int | None = None,
        prior_precision: float | np.ndarray = 1.0,
        prior_mean: np.ndarray | None = None,
    ) -> None:
        super().__init__(n_arms, seed)
        if int(dim) != dim or dim < 1:
            raise ValueError(f"{type(self).__name__}: dim must be an integer >= 1, got {dim!r}")
        if np.dtype(dtype) not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"{type(self).__name__}: dtype must be float64 or float32, got {dtype!r}")
        if projection_dim is not None and not 1 <= int(projection_dim) <= dim:
            raise ValueError(f"{type(self).__name__}: projection_dim must be in [1, dim={dim}], got {projection_dim!r}")
        self.dim, self.dtype = int(dim), np.dtype(dtype)
        self.projection_dim, self.woodbury_max_rank = projection_dim, woodbury_max_rank
        self.prior_precision = prior_precision
        self.prior_mean = None if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
        self.projection_ = None
        if projection_dim is not None:
            # A stream separate from rng_, so projecting does not shift tie-breaks or samples.
            gen = np.random.default_rng([self.seed, 0x9E3779B9])
            p = int(projection_dim)
            self.projection_ = (gen.standard_normal((p, self.dim)) / np.sqrt(p)).astype(self.dtype)
        self.arms_ = [self._new_arm() for _ in range(self.n_arms)]

    @property
    def feature_dim(self) -> int:
        """Dimension of the arms' models: projection_dim if projecting, else dim."""
        return self.dim if self.projection_dim is None else int(self.projection_dim)

    def _new_arm(self, precision=None, mean=None) -> RidgeArm:
        return RidgeArm(
            self.feature_dim,
            self.prior_precision if precision is None else precision,
            self.prior_mean if mean is None else mean,
            dtype=self.dtype,
            max_rank=self.woodbury_max_rank,
            keep_rows=self._keep_rows,
        )

    def _features(self, contexts: np.ndarray) -> np.ndarray:
        """f(C): (B, d) -> (B, p) in the state dtype."""
        C = contexts.astype(self.dtype, copy=False)
        return C if self.projection_ is None else C @ self.projection_.T

    def set_prior(self, arm: int, mean: np.ndarray | None = None, precision: float | np.ndarray | None = None) -> None:
        """Give an arm that has no updates yet its own Gaussian prior N(mean, precision^-1).

        Use this to warm-start from an offline-learned prior (e.g. a router trained on logs).

        Raises:
            ValueError: the arm was already updated (its data would be lost), or bad shapes.
        """
        arm = self._check_arm(arm)
        if self.arms_[arm].t or self.counts_[arm]:
            raise ValueError(
                f"{type(self).__name__}.set_prior: arm {arm} already has "
                f"{self.counts_[arm]} updates; set priors before training"
            )
        self.arms_[arm] = self._new_arm(precision, mean)

    def warm_start(self, arm: int, contexts: np.ndarray, rewards: np.ndarray) -> None:
        """Add many logged observations to one arm at once (a block update, m x m solve only).

        The model equals that of ``update`` called on each row (up to round-off, not
        bit-for-bit); ``counts_[arm]`` grows by the number of rows. Sliding-window selectors
        fall back to row-by-row updates so their window stays exact.
        """
        arm = self._check_arm(arm)
        C = self._as_contexts(np.asarray(contexts, dtype=np.float64))
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(r) != len(C) or not np.all(np.isfinite(r)):
            raise ValueError(f"{type(self).__name__}.warm_start: need {len(C)} finite rewards, got {r.shape}")
        if self._keep_rows:
            self.update_batch(np.full(len(r), arm), C, r)
            return
        self.arms_[arm].add_rows(self._features(C), r)
        self.counts_[arm] += len(r)

    # ----------------------------------------------------------------- learned state
    @property
    def theta_(self) -> np.ndarray:
        """(n_arms, p) ridge estimates theta_k = A_k^-1 b_k."""
        return np.stack([a.theta for a in self.arms_])

    @property
    def b_(self) -> np.ndarray:
        """(n_arms, p) b_k = P0 m0 + sum_i r_i f(c_i)."""
        return np.stack([a.b for a in self.arms_])

    def A_inv(self, arm: int) -> np.ndarray:
        """Arm's A_k^-1 as a (p, p) matrix (materialised on demand; for tests and inspection)."""
        return self.arms_[self._check_arm(arm)].inverse()

    def _means_and_widths(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, K) f(c)^T theta_k and sqrt(f(c)^T A_k^-1 f(c)), in float64."""
        F = self._features(contexts)
        means = np.stack([a.mean(F) for a in self.arms_], axis=1).astype(np.float64)
        widths = np.sqrt(np.stack([a.quad(F) for a in self.arms_], axis=1).astype(np.float64))
        return means, widths

    def _update(self, arm: int, context: np.ndarray, reward: float) -> None:
        self.arms_[arm].add(self._features(context[None, :])[0], reward)

    def _add_arm(self) -> None:
        self.arms_.append(self._new_arm())

    def _hparams(self) -> dict:
        hp = {name: getattr(self, name) for name in ("seed", *self._linear_hparams, *self._hparam_names)}
        hp["prior_precision"] = np.asarray(self.prior_precision, dtype=np.float64)
        hp["prior_mean"] = self.prior_mean
        return hp

    def _extra_state(self) -> dict[str, np.ndarray]:
        sd = {}
        for k, arm in enumerate(self.arms_):
            sd.update({f"arm{k}.{key}": v for key, v in arm.state().items()})
        if self.projection_ is not None:
            sd["projection"] = self.projection_.copy()
        return sd

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        self.arms_ = []
        for k in range(self.n_arms):
            prefix = f"arm{k}."
            arm = self._new_arm()
            arm.load({key[len(prefix) :]: v for key, v in sd.items() if key.startswith(prefix)})
            self.arms_.append(arm)
        if "projection" in sd:
            self.projection_ = np.array(sd["projection"], dtype=self.dtype)
