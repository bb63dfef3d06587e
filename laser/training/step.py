"""One step's data, passed from each phase of the loop to the next.

The Trainer creates a :class:`Step` per mini-batch and hands it to the context, sampling,
strategy (decide, score, learn), pairing and update phases; nothing about the step is kept on
the Trainer. The log record is built from the finished step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Step:
    """Everything one step produces, filled phase by phase.

    Attributes:
        iteration, index, global_step: where the step is (``global_step`` is 1-based).
        batch: the whole batch's examples; ``shard`` this process's part of it.
        contexts: ``(B, d)`` over the whole batch (gathered in rank order).
        samples: this process's :class:`laser.policy.model.Samples`.
        arms: arm per prompt of the whole batch (-1: every RM scores); ``my_arms`` this shard's.
        scores: ``(N,)`` per response of this shard; ``votes`` the per-RM matrix (agreement rule).
        pairs: per prompt of the shard, (chosen, rejected) response indices.
        terms: loss terms and per-prompt outcomes of the update (see :mod:`laser.training.update`).
        rewards, raw: the normalised and raw bandit rewards the strategy learned from.
        events: RM availability changes and failures during the step.
    """

    iteration: int
    index: int
    global_step: int
    batch: list
    shard: list
    contexts: np.ndarray | None = None
    samples: object = None
    arms: list[int] = field(default_factory=list)
    my_arms: list[int] = field(default_factory=list)
    arms_by_rank: list[list[int]] = field(default_factory=list)
    scores: np.ndarray | None = None
    votes: np.ndarray | None = None
    pairs: list[list[tuple[int, int]]] = field(default_factory=list)
    skipped_prompts: int = 0
    terms: dict = field(default_factory=dict)
    rewards: list = field(default_factory=list)
    raw: list = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # strategy-specific values for the log record
    times: dict[str, float] = field(default_factory=lambda: {"start": time.perf_counter()})

    @property
    def prompts(self) -> list[str]:
        return [ex.prompt for ex in self.shard]

    def mark(self, phase: str) -> None:
        """Record the end of ``phase`` (context, sample, score, update, end)."""
        self.times[phase] = time.perf_counter()

    def flat_pairs(self) -> list[tuple[int, int, int]]:
        """(prompt, chosen, rejected) over the shard, in the order the update trains them."""
        return [(i, c, r) for i, ps in enumerate(self.pairs) for c, r in ps]
