"""The selection strategy: the loop's one extension point.

A strategy answers three questions for every step, and nothing else differs between LASeR,
its per-prompt variant and the ensembles:

1. ``decide(step, dist)``: which RM scores each prompt of the batch (``-1``: every RM);
2. ``score(step, pool)``: the score of every response of this process's shard, through the
   :class:`~laser.training.scoring.RewardPool` (which counts calls and isolates failures);
3. ``outcomes(step)`` / ``learn(step, rewards)``: what to learn from the finished step.

The Trainer turns each outcome into a raw reward with the run's feedback function, checks it is
finite, normalises it, and hands the rewards back to ``learn``. A new strategy is one module with
one class plus one line in :data:`laser.training.strategies.STRATEGIES`.
"""

from __future__ import annotations

import numpy as np


class Strategy:
    """Base class; subclasses override what they need.

    Attributes:
        name: the strategy's name as configured (``selector.name``); logs, checkpoints and the
            resolved config carry it.
        selector: the learned state (a bandit, or the online ensemble's weights), or None.
        needs_context: whether decisions use the prompts' context vectors.
    """

    name = "strategy"
    needs_context = True
    selector = None

    def check(self, feedback: str, n_processes: int) -> None:
        """Refuse a feedback or a process count the strategy cannot work with (ValueError)."""

    def decide(self, step, dist) -> list[int]:
        """Arm per prompt of the whole batch (``-1`` = every RM), identical on every process."""
        raise NotImplementedError

    def score(self, step, pool) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores ``(N,)`` of this shard's responses and, optionally, the per-RM matrix ``(K, N)``."""
        return score_by_arm(step, pool), None

    def outcomes(self, step, dist) -> list[tuple[int, np.ndarray, dict | None]]:
        """(arm, context, outcome) triples to learn from; ``outcome`` None = the step taught nothing."""
        return []

    def learn(self, items: list, rewards: list[float | None]) -> list[float]:
        """Update the learned state from :meth:`outcomes`' items and their normalised rewards
        (None where the outcome was None); returns the rewards as applied (logged)."""
        return []

    def record(self, step) -> dict:
        """Extra fields of the step's log record."""
        return {}

    def arm_name(self, step, names: list[str]) -> str:
        return names[step.arms[0]]

    def state_dict(self) -> dict | None:
        return None if self.selector is None else self.selector.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        if self.selector is not None:
            self.selector.load_state_dict(sd)


def response_prompts(step) -> list[str]:
    """The prompt of every response of the shard."""
    prompts = step.prompts
    return [prompts[i] for i in step.samples.prompt_index]


def score_by_arm(step, pool) -> np.ndarray:
    """Each response scored by its prompt's arm (``step.my_arms``): one batched call per RM."""
    prompts, texts = response_prompts(step), step.samples.texts
    scores = np.full(len(texts), np.nan)
    per_response = np.array([step.my_arms[i] for i in step.samples.prompt_index], dtype=np.int64)
    for k in sorted(set(step.my_arms)):
        idx = np.flatnonzero(per_response == k)
        scores[idx] = pool.score(k, [prompts[i] for i in idx], [texts[i] for i in idx])
    return scores
