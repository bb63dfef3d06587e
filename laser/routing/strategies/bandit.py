"""LASeR's strategy: a bandit picks one RM per batch (or per prompt) and learns from the batch."""

from __future__ import annotations

import numpy as np

from laser.routing.strategies.base import Strategy, Unit

#: selectors that ignore the context (they are fed a constant 1-d context)
CONTEXT_FREE = ("fixed", "random", "round_robin", "exp3", "ucb1", "epsilon_greedy")


class BanditPerBatch(Strategy):
    """One arm for the whole batch, from the mean context; one update per batch.

    Args:
        selector: a :mod:`laser.bandits` selector.
        name: the configured selector name.
        needs_context: whether the selector reads contexts.
    """

    def __init__(self, selector, name: str, needs_context: bool = True):
        self.selector, self.name, self.needs_context = selector, name, needs_context

    @property
    def reads_feedback(self) -> bool:
        """A learning bandit does; random, round-robin, one RM and a classifier only count it."""
        return bool(getattr(self.selector, "learns_from_rewards", True))

    def decide(self, batch, coll) -> list[int]:
        arm, scores = self.selector.select_with_scores(batch.contexts.mean(axis=0))
        batch.extra["ucb"] = np.asarray(scores).tolist()  # exactly what the decision used
        return [int(arm)] * len(batch.contexts)

    def units(self, batch, outcome, coll, reference) -> list[Unit]:
        signal = outcome.signal(reference) if outcome.n_pairs > 0 else None
        return [Unit(batch.arms[0], batch.contexts.mean(axis=0), signal, list(range(len(batch.arms))))]

    def learn(self, units, rewards):
        keep = [i for i, r in enumerate(rewards) if r is not None]
        if keep:
            self.selector.update_batch(
                np.asarray([units[i].arm for i in keep]),
                np.stack([units[i].context for i in keep]),
                np.asarray([rewards[i] for i in keep], dtype=np.float64),
            )
        return list(rewards)

    def record(self, batch) -> dict:
        return {"ucb": batch.extra.get("ucb")}


class BanditPerPrompt(BanditPerBatch):
    """One arm per prompt from its own context; one update per prompt."""

    def decide(self, batch, coll) -> list[int]:
        return [int(a) for a in self.selector.select_batch(batch.contexts)]

    def units(self, batch, outcome, coll, reference) -> list[Unit]:
        signals = outcome.prompt_signals(batch, reference, coll)
        return [
            Unit(arm, batch.contexts[i], s if s.n_pairs > 0 else None, [i])
            for i, (arm, s) in enumerate(zip(batch.arms, signals, strict=True))
        ]

    def record(self, batch) -> dict:
        return {"ucb": None}
