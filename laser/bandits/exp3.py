"""Exp3 (Auer, Cesa-Bianchi, Freund & Schapire 2002), the paper's non-contextual ablation."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.base import Selector


class Exp3(Selector):
    """Exponential weights for adversarial bandits; rewards must lie in [0, 1].

    With log-weights l_k (all 0 at the start) and A the available (unmasked) arms:

        p_k = (1 - gamma) * exp(l_k) / sum_{j in A} exp(l_j) + gamma / |A|   for k in A, else 0
        k ~ p                                                             (decision)
        r_hat = r / p_k,   l_k <- l_k + gamma * r_hat / K                  (update of arm k)

    where p_k is the probability arm k had at its most recent selection (the importance
    weight of the draw that produced r) and K = n_arms. A new arm starts at the largest
    existing log-weight, so it gets tried. ``scores`` returns p.

    Args:
        n_arms: number of arms.
        gamma: exploration rate in (0, 1].
        seed: seed of the owned RNG.

    Attributes:
        log_weights_: (n_arms,) float64 log-weights l_k.
        last_p_: (n_arms,) each arm's probability at its most recent selection.
    """

    name: ClassVar[str] = "exp3"
    _hparam_names: ClassVar[tuple[str, ...]] = ("gamma",)

    def __init__(self, n_arms: int, gamma: float = 0.1, seed: int = 0) -> None:
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"Exp3: gamma must be in (0, 1], got {gamma!r}")
        super().__init__(n_arms, seed)
        self.gamma = float(gamma)
        self.log_weights_ = np.zeros(self.n_arms)
        self.last_p_ = np.full(self.n_arms, 1.0 / self.n_arms)

    def probabilities(self) -> np.ndarray:
        """p over all arms (0 for masked ones), (n_arms,) float64."""
        free = self._available()
        w = np.exp(self.log_weights_[free] - self.log_weights_[free].max())
        p = np.zeros(self.n_arms)
        p[free] = (1.0 - self.gamma) * w / w.sum() + self.gamma / free.size
        return p

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        if not (~self.masked).any():
            return np.zeros((len(contexts), self.n_arms))
        return np.tile(self.probabilities(), (len(contexts), 1))

    def _choose(self, scores: np.ndarray) -> np.ndarray:
        p = self.probabilities()
        arms = self.rng_.choice(self.n_arms, size=len(scores), p=p).astype(np.int64)
        self.last_p_[arms] = p[arms]
        return arms

    def _update(self, arm: int, context: np.ndarray, reward: float) -> None:
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"Exp3: reward for arm {arm} must be in [0, 1], got {reward!r}")
        self.log_weights_[arm] += self.gamma * (reward / self.last_p_[arm]) / self.n_arms

    def _add_arm(self) -> None:
        self.log_weights_ = np.append(self.log_weights_, self.log_weights_.max())
        self.last_p_ = np.append(self.last_p_, 1.0 / self.n_arms)

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {"log_weights": self.log_weights_.copy(), "last_p": self.last_p_.copy()}

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        self.log_weights_ = np.array(sd["log_weights"], dtype=np.float64)
        self.last_p_ = np.array(sd["last_p"], dtype=np.float64)
