"""BayesianRouter-style selection: linear Thompson sampling whose per-arm priors come from labels.

Wu & Lu (arXiv 2510.02850, "BayesianRouter") route each prompt to a reward model with linear
Thompson sampling, starting every RM's Gaussian prior at what an offline router learned from
labelled preference data (the prior mean is that router's weight vector for the RM; the prior
precision a multiple of the identity). Here the offline router is the closed-form one that the
labelled split of :mod:`laser.bench.compare.labels` supports: per arm, a ridge regression of
``1[label == k]`` on the context (the same labels :class:`~laser.bandits.ClassifierSelector`
is fitted on), whose Bayesian posterior also supplies the prior's precision.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.lints import LinTS


class BayesRouterSelector(LinTS):
    """Linear Thompson sampling (:class:`~laser.bandits.LinTS`) with priors fitted on labelled contexts.

    :meth:`fit` on M labelled contexts (features F, ``(M, p)``; labels y) sets, for every arm k,

        G = ridge * I + F^T F,     m0_k = G^-1 F^T 1[y == k],     P0_k = prior_strength * G

    i.e. the posterior of a Bayesian linear regression of the arm's label indicator on the context
    (prior N(0, I / ridge), unit noise), its precision scaled by ``prior_strength`` (a power prior:
    below 1 the labels count for less than as many bandit rewards). From there it is LinTS:

        A_k = P0_k + sum_i f_i f_i^T,   b_k = P0_k m0_k + sum_i r_i f_i,   mu_k = A_k^-1 b_k
        s_k = f^T mu_k + v * sqrt(f^T A_k^-1 f) * z_k,   z_k ~ N(0, 1);   k* = argmax_k s_k

    (a posterior N(mu_k, v^2 A_k^-1): Bayesian linear regression of the reward with noise variance
    v^2 and prior N(m0_k, v^2 P0_k^-1)). Before :meth:`fit` every arm has LinTS's shared prior, so
    the selector is plain LinTS. An arm added later (:meth:`add_arm`) gets the shared prior too:
    the labels say nothing about it. The fitted priors live in each arm's state, so
    :meth:`state_dict` round-trips them.

    Args:
        n_arms: number of arms (reward models).
        dim: context dimension d.
        v: posterior scale (exploration); 0 gives the greedy rule.
        seed: seed of the owned RNG (draws, tie-breaks, projection).
        prior_strength: multiplies the fitted prior precision (> 0).
        ridge: L2 penalty of the offline regression, the ``lambda`` of G (> 0).
        dtype, projection_dim, prior_precision, woodbury_max_rank: as :class:`~laser.bandits.LinTS`
            (``prior_precision`` is the shared prior before :meth:`fit` and of added arms).

    Attributes:
        fitted_: whether :meth:`fit` has set the priors.
        label_counts_: int64 ``(n_arms,)``, labels per arm seen by :meth:`fit`.
    """

    name: ClassVar[str] = "bayes_router"
    _hparam_names: ClassVar[tuple[str, ...]] = ("v", "prior_strength", "ridge")

    def __init__(
        self,
        n_arms: int,
        dim: int,
        v: float = 0.1,
        seed: int = 0,
        prior_strength: float = 1.0,
        ridge: float = 1.0,
        dtype: type = np.float64,
        projection_dim: int | None = None,
        prior_precision: float | np.ndarray = 1.0,
        woodbury_max_rank: int | None = None,
    ) -> None:
        if not prior_strength > 0 or not ridge > 0:
            raise ValueError(
                f"BayesRouterSelector: prior_strength and ridge must be > 0, got {prior_strength!r}, {ridge!r}"
            )
        self.prior_strength, self.ridge = float(prior_strength), float(ridge)
        super().__init__(
            n_arms,
            dim,
            v=v,
            seed=seed,
            dtype=dtype,
            projection_dim=projection_dim,
            prior_precision=prior_precision,
            woodbury_max_rank=woodbury_max_rank,
        )
        self.fitted_ = False
        self.label_counts_ = np.zeros(self.n_arms, dtype=np.int64)

    @classmethod
    def from_labelled(
        cls, contexts: np.ndarray, labels: np.ndarray, n_arms: int, seed: int = 0, **kwargs
    ) -> BayesRouterSelector:
        """A selector of context dimension ``contexts.shape[1]``, fitted on the labelled split."""
        return cls(n_arms, int(np.shape(contexts)[1]), seed=seed, **kwargs).fit(contexts, labels)

    def fit(self, contexts: np.ndarray, labels: np.ndarray) -> BayesRouterSelector:
        """Set every arm's prior from labelled contexts (see the class docstring).

        Args:
            contexts: ``(M, dim)`` finite floats.
            labels: ``(M,)`` arm indices in ``[0, n_arms)`` (the RM that is right for the prompt).

        Returns:
            self.

        Raises:
            ValueError: wrong shapes, non-finite contexts, no rows, a label out of range, or an arm
                that already has bandit updates (its data would be lost).
        """
        x = self._as_contexts(contexts)
        y = np.asarray(labels).reshape(-1)
        if len(x) == 0 or y.shape != (len(x),):
            raise ValueError(
                f"BayesRouterSelector.fit: need M >= 1 contexts and M labels, got {len(x)} contexts "
                f"and labels of shape {y.shape}"
            )
        if not np.all((y >= 0) & (y < self.n_arms) & (y == np.round(y))):
            raise ValueError(
                f"BayesRouterSelector.fit: labels must be arm indices in [0, {self.n_arms}), got "
                f"values {sorted(set(y.tolist()))[:10]}"
            )
        if self.counts_.any():
            raise ValueError(
                f"BayesRouterSelector.fit: arms already have {self.counts_.tolist()} updates; "
                "fit the priors before training"
            )
        F = self._features(x).astype(np.float64)
        G = self.ridge * np.eye(F.shape[1]) + F.T @ F
        means = np.linalg.solve(G, F.T @ np.eye(self.n_arms)[y.astype(np.int64)])  # (p, K)
        for k in range(self.n_arms):
            self.set_prior(k, mean=means[:, k], precision=self.prior_strength * G)
        self.fitted_ = True
        self.label_counts_ = np.bincount(y.astype(np.int64), minlength=self.n_arms).astype(np.int64)
        return self

    def _add_arm(self) -> None:
        super()._add_arm()
        self.label_counts_ = np.append(self.label_counts_, np.int64(0))

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {**super()._extra_state(), "fitted": np.array(self.fitted_), "label_counts": self.label_counts_.copy()}

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        super()._load_extra_state(sd)
        self.fitted_ = bool(sd["fitted"])
        self.label_counts_ = np.array(sd["label_counts"], dtype=np.int64)
