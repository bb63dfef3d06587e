"""LASeR's strategy: a bandit picks one RM per batch (or per prompt) and learns from the step."""

from __future__ import annotations

import numpy as np

from laser.training.outcomes import KINDS
from laser.training.strategies.base import Strategy

#: selectors that ignore the context (the loop feeds them a constant 1-d context)
CONTEXT_FREE = ("fixed", "random", "round_robin", "exp3", "ucb1", "epsilon_greedy")


class BanditPerBatch(Strategy):
    """One arm for the whole batch, from the mean context; one update per step.

    Args:
        selector: a :mod:`laser.bandits` selector.
        name: the configured selector name.
    """

    def __init__(self, selector, name: str, needs_context: bool = True):
        self.selector, self.name, self.needs_context = selector, name, needs_context

    def decide(self, step, dist) -> list[int]:
        decision = None
        if dist.is_main:
            arm, scores = self.selector.select_with_scores(step.contexts.mean(axis=0))
            step.extra["ucb"] = np.asarray(scores).tolist()  # exactly what the decision used
            decision = [int(arm)] * len(step.contexts)
        return dist.broadcast(decision)

    def outcomes(self, step, dist):
        ok = step.terms["n_pairs"] > 0 and np.isfinite(step.terms["loss"])
        return [(step.arms[0], step.contexts.mean(axis=0), step.terms if ok else None)]

    def learn(self, items, rewards):
        # no pairs (all ties / unscorable) teaches nothing: the lowest reward, kept out of the history
        applied = [0.0 if r is None else r for r in rewards]
        self.selector.update_batch(np.asarray([a for a, _, _ in items]), np.stack([c for _, c, _ in items]),
                                   np.asarray(applied))
        return applied

    def record(self, step) -> dict:
        return {"ucb": step.extra.get("ucb")}


class BanditPerPrompt(BanditPerBatch):
    """One arm per prompt from its own context; one update per prompt (per-prompt outcomes)."""

    #: per-prompt outcome key -> the update's per-prompt term
    PROMPT_TERMS = {"loss": "prompt_loss", "loss_after": "prompt_loss_after",
                    **{kind: keys[1] for kind, keys in KINDS.items()}}

    def decide(self, step, dist) -> list[int]:
        decision = None
        if dist.is_main:
            decision = [int(a) for a in self.selector.select_batch(step.contexts)]
        return dist.broadcast(decision)

    def outcomes(self, step, dist):
        cols = {k: dist.gather_rows(step.terms[v][:, None])[:, 0]
                for k, v in self.PROMPT_TERMS.items() if v in step.terms}
        out = []
        for i, arm in enumerate(step.arms):
            o = {k: float(col[i]) for k, col in cols.items()}
            out.append((arm, step.contexts[i], o if np.isfinite(o["loss"]) else None))
        return out

    def record(self, step) -> dict:
        return {"ucb": None}
