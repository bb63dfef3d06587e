"""One step's data, passed from each phase of the loop to the next.

The Trainer creates a :class:`Step` per mini-batch; the routing core's view of it (contexts,
arms, responses, scores, pairs, events) is ``step.route``, a :class:`laser.routing.Batch`; the
policy's samples, the update's terms and the timings stay here. Nothing about the step is kept
on the Trainer; the log record is built from the finished step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from laser.routing import Batch


@dataclass
class Step:
    """Everything one step produces, filled phase by phase.

    Attributes:
        iteration, index, global_step: where the step is (``global_step`` is 1-based).
        batch: the whole batch's examples; ``shard`` this process's part of it.
        route: the routing core's :class:`~laser.routing.Batch` of the shard.
        samples: this process's :class:`laser.policy.model.Samples`.
        terms: the policy update's loss terms (see :mod:`laser.training.update`).
        outcome: the typed :class:`~laser.routing.Outcome` the feedback read.
        rewards, raw: the normalised and raw bandit rewards the strategy learned from.
    """

    iteration: int
    index: int
    global_step: int
    batch: list
    shard: list
    route: Batch = None
    samples: object = None
    arms_by_rank: list[list[int]] = field(default_factory=list)
    terms: dict = field(default_factory=dict)
    outcome: object = None
    rewards: list = field(default_factory=list)
    raw: list = field(default_factory=list)
    times: dict[str, float] = field(default_factory=lambda: {"start": time.perf_counter()})

    def __post_init__(self):
        if self.route is None:
            self.route = Batch.of(self.shard, step=self.global_step)

    @property
    def prompts(self) -> list[str]:
        return [ex.prompt for ex in self.shard]

    def mark(self, phase: str) -> None:
        """Record the end of ``phase`` (context, sample, score, update, end)."""
        self.times[phase] = time.perf_counter()
