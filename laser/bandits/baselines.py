"""Non-learning selectors the paper compares against: one fixed RM, uniform random, round-robin."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.base import NoArmAvailable, Selector


class FixedSelector(Selector):
    """Always the same arm (the single-RM baseline). Score: 1 for that arm, 0 for the others.

    Args:
        n_arms: number of arms.
        arm: the arm to use.
        seed: unused by the rule; kept for the common interface.

    Raises:
        NoArmAvailable: on selection while that arm is masked or removed.
    """

    name: ClassVar[str] = "fixed"
    learns_from_rewards: ClassVar[bool] = False
    _hparam_names: ClassVar[tuple[str, ...]] = ("arm",)

    def __init__(self, n_arms: int, arm: int = 0, seed: int = 0) -> None:
        super().__init__(n_arms, seed)
        self.arm = self._check_arm(arm)

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        s = np.zeros((len(contexts), self.n_arms))
        s[:, self.arm] = 1.0
        return s

    def _choose(self, scores: np.ndarray) -> np.ndarray:
        if self.masked[self.arm]:
            raise NoArmAvailable(f"FixedSelector: its only arm {self.arm} is masked or removed")
        return np.full(len(scores), self.arm, dtype=np.int64)


class RandomSelector(Selector):
    """Uniformly random arm among the unmasked ones. Score: its probability 1 / (#available)."""

    name: ClassVar[str] = "random"
    learns_from_rewards: ClassVar[bool] = False

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        free = ~self.masked
        return np.tile(free / max(free.sum(), 1), (len(contexts), 1))

    def _choose(self, scores: np.ndarray) -> np.ndarray:
        free = self._available()
        return free[self.rng_.integers(free.size, size=len(scores))].astype(np.int64)


class RoundRobinSelector(Selector):
    """Arms in turn, 0, 1, ..., K-1, 0, ... skipping masked ones (the paper's "sequential").

    Each selection advances the turn (a batch of B contexts takes B turns). Score: 1 for the
    arm whose turn is next, 0 for the others.

    Attributes:
        next_: the arm whose turn is next (before skipping masked arms).
    """

    name: ClassVar[str] = "round_robin"
    learns_from_rewards: ClassVar[bool] = False

    def __init__(self, n_arms: int, seed: int = 0) -> None:
        super().__init__(n_arms, seed)
        self.next_ = 0

    def _turn(self) -> int:
        free = self._available()
        later = free[free >= self.next_ % self.n_arms]
        return int(later[0] if later.size else free[0])

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        s = np.zeros((len(contexts), self.n_arms))
        if (~self.masked).any():
            s[:, self._turn()] = 1.0
        return s

    def _choose(self, scores: np.ndarray) -> np.ndarray:
        out = np.empty(len(scores), dtype=np.int64)
        for i in range(out.size):
            out[i] = self._turn()
            self.next_ = (int(out[i]) + 1) % self.n_arms
        return out

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {"next": np.array(self.next_, dtype=np.int64)}

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        self.next_ = int(sd["next"])
