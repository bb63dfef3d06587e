"""The RM online ensemble: every RM scores, ensemble weights adapted by multiplicative weights.

The paper's "RM online ensemble" baseline. Unlike a bandit it does not pick one arm: all K
reward models score every response, the responses are ranked by a weighted mean of the per-RM
standardised scores, and after each step every RM's weight moves with the feedback that RM
earned (Hedge / multiplicative weights, Freund & Schapire 1997):

    w_k <- w_k * exp(eta * r_k),  then  w <- w / sum(w)           r_k in [0, 1]

An RM with no information this step (``r_k`` NaN) keeps its weight before renormalisation. The
weights are stored as log-weights, so many updates never underflow.

numpy only, like every module of :mod:`laser.bandits`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.base import hparam_array, rng_from_state_array, rng_state_array


class OnlineEnsemble:
    """Multiplicative-weights ensemble of K reward models.

    Args:
        n_arms: number of reward models K (>= 1).
        eta: learning rate of the multiplicative update (> 0).
        seed: seed of the owned RNG (unused by the rule; kept so the state has the same shape
            as every selector's).

    Attributes:
        log_weights_: float64 ``(K,)``, log of the unnormalised weights (all 0 at the start).
        counts_: int64 ``(K,)``, number of updates in which each RM had a finite reward.
        masked_: bool ``(K,)``, RMs excluded from the ensemble (down, or not joined yet).
    """

    name: ClassVar[str] = "online_ensemble"

    def __init__(self, n_arms: int, eta: float = 0.5, seed: int = 0) -> None:
        if int(n_arms) != n_arms or n_arms < 1:
            raise ValueError(f"OnlineEnsemble: n_arms must be an integer >= 1, got {n_arms!r}")
        if not (np.isfinite(eta) and eta > 0):
            raise ValueError(f"OnlineEnsemble: eta must be a finite number > 0, got {eta!r}")
        self.eta, self.seed = float(eta), int(seed)
        self.rng_ = np.random.default_rng(self.seed)
        self.log_weights_ = np.zeros(int(n_arms))
        self.counts_ = np.zeros(int(n_arms), dtype=np.int64)
        self.masked_ = np.zeros(int(n_arms), dtype=bool)

    @property
    def n_arms(self) -> int:
        """Number of reward models K."""
        return int(self.log_weights_.shape[0])

    def _check_arm(self, k: int) -> int:
        if int(k) != k or not 0 <= k < self.n_arms:
            raise IndexError(f"OnlineEnsemble: arm {k!r} out of range [0, {self.n_arms})")
        return int(k)

    def mask_arm(self, k: int) -> None:
        """Leave RM ``k`` out of :meth:`weights` and :meth:`combine` (its weight is kept)."""
        self.masked_[self._check_arm(k)] = True

    def unmask_arm(self, k: int) -> None:
        """Bring RM ``k`` back into the ensemble with the weight it had."""
        self.masked_[self._check_arm(k)] = False

    def weights(self) -> np.ndarray:
        """Normalised weights ``(K,)`` summing to 1; masked RMs get 0.

        ``w_k = exp(l_k) / sum_{j unmasked} exp(l_j)``. If every RM is masked, the weights are
        uniform over all of them (so the sum is still 1).
        """
        free = ~self.masked_ if (~self.masked_).any() else np.ones(self.n_arms, dtype=bool)
        w = np.zeros(self.n_arms)
        e = np.exp(self.log_weights_[free] - self.log_weights_[free].max())
        w[free] = e / e.sum()
        return w

    def combine(self, z: np.ndarray) -> np.ndarray:
        """Ensemble score per response: the weighted mean of the RMs' standardised scores.

        ``s_n = sum_{k in S_n} w_k z_kn / sum_{k in S_n} w_k`` with ``S_n`` the RMs that scored
        response n (finite ``z_kn``) and have weight > 0; NaN when ``S_n`` is empty.

        Args:
            z: ``(K, N)`` per-RM standardised scores (e.g.
                :func:`laser.routing.pairs.standardize`); NaN = not scored by that RM.

        Returns:
            float64 ``(N,)``.
        """
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] != self.n_arms:
            raise ValueError(f"OnlineEnsemble.combine: z must have shape ({self.n_arms}, N), got {z.shape}")
        w = self.weights()[:, None] * np.isfinite(z)
        total = w.sum(axis=0)
        num = (w * np.where(np.isfinite(z), z, 0.0)).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, num / np.where(total > 0, total, 1.0), np.nan)

    def update(self, rewards: np.ndarray) -> None:
        """Multiplicative update ``w_k <- w_k exp(eta r_k)`` for every RM with a finite reward.

        Args:
            rewards: ``(K,)`` in [0, 1]; NaN = no information for that RM (weight unchanged).

        Raises:
            ValueError: wrong shape, an infinite reward, or a reward outside [0, 1].
        """
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if r.shape != (self.n_arms,):
            raise ValueError(f"OnlineEnsemble.update: rewards must have shape ({self.n_arms},), got {r.shape}")
        known = ~np.isnan(r)
        bad = known & ~((r >= 0.0) & (r <= 1.0))
        if bad.any():
            raise ValueError(
                f"OnlineEnsemble.update: rewards must lie in [0, 1] or be NaN; "
                f"arm(s) {np.flatnonzero(bad).tolist()} got {r[bad].tolist()}"
            )
        self.log_weights_[known] += self.eta * r[known]
        self.log_weights_ -= self.log_weights_.max()  # renormalise: the largest log-weight is 0
        self.counts_[known] += 1

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays: ``selector``, ``hp.eta``, ``hp.seed``, ``log_weights``, ``counts``,
        ``masked``, ``rng`` (``np.savez`` round-trips it exactly)."""
        return {
            "selector": np.array(self.name),
            "hp.eta": hparam_array(self.eta),
            "hp.seed": hparam_array(self.seed),
            "log_weights": self.log_weights_.copy(),
            "counts": self.counts_.copy(),
            "masked": self.masked_.copy(),
            "rng": rng_state_array(self.rng_),
        }

    def load_state_dict(self, sd: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            ValueError: a key is missing, or the state is from another selector, another eta or
                seed, or another number of RMs.
        """
        missing = [
            k for k in ("selector", "hp.eta", "hp.seed", "log_weights", "counts", "masked", "rng") if k not in sd
        ]
        if missing:
            raise ValueError(f"OnlineEnsemble.load_state_dict: missing keys {missing}")
        problems = []
        if str(sd["selector"][()]) != self.name:
            problems.append(f"state is from selector {str(sd['selector'][()])!r}")
        if float(sd["hp.eta"]) != self.eta or int(sd["hp.seed"]) != self.seed:
            problems.append(
                f"saved eta={float(sd['hp.eta'])}, seed={int(sd['hp.seed'])}; "
                f"this object eta={self.eta}, seed={self.seed}"
            )
        if len(sd["log_weights"]) != self.n_arms:
            problems.append(f"saved {len(sd['log_weights'])} arms, this object {self.n_arms}")
        if problems:
            raise ValueError("OnlineEnsemble.load_state_dict: " + "; ".join(problems))
        self.log_weights_ = np.array(sd["log_weights"], dtype=np.float64)
        self.counts_ = np.array(sd["counts"], dtype=np.int64)
        self.masked_ = np.array(sd["masked"], dtype=bool)
        self.rng_ = rng_from_state_array(sd["rng"])

    def __repr__(self) -> str:
        return f"OnlineEnsemble(n_arms={self.n_arms}, eta={self.eta}, seed={self.seed})"


def pair_agreement(z: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Whether each RM orders each trained pair the way the ensemble did.

    Args:
        z: ``(K, N)`` per-RM scores (standardised or raw: only the order matters); NaN = unscored.
        pairs: ``(chosen, rejected)`` indices into the N responses.

    Returns:
        float64 ``(K, P)``: 1 where ``z[k, chosen] > z[k, rejected]``, 0 where RM k ties or
        prefers the rejected response, NaN where RM k did not score both responses.
    """
    z = np.asarray(z, dtype=np.float64)
    if not pairs:
        return np.zeros((z.shape[0], 0))
    c = np.array([p[0] for p in pairs])
    r = np.array([p[1] for p in pairs])
    a, b = z[:, c], z[:, r]
    return np.where(np.isfinite(a) & np.isfinite(b), (a > b).astype(np.float64), np.nan)
