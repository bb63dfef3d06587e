"""The selection strategy: the routing core's one extension point.

A strategy answers three questions for every batch, and nothing else differs between LASeR,
its per-prompt variant, the ensembles and the oracle:

1. ``decide(batch, coll)``: which RM scores each prompt of the whole batch (``-1``: every RM);
2. ``score(batch, pool)``: the score of every response of this process, through the
   :class:`~laser.routing.pool.RewardPool` (which counts calls and isolates failures);
3. ``units(batch, outcome, coll, reference)`` / ``learn(units, rewards)``: what to learn from
   the finished batch.

The :class:`~laser.routing.router.Router` turns each unit's signal into a raw reward with the
feedback function, applies the no-pair and non-finite rules, normalises, and hands the rewards
back to ``learn``. A new strategy is one module with one class plus one line in
:data:`laser.routing.strategies.STRATEGIES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Unit:
    """One thing a strategy learns from.

    Attributes:
        arm: the arm it credits.
        context: the context of the update (None: context-free).
        signal: the unit's :class:`~laser.routing.outcome.Signal`; None: the unit has no pair.
        prompts: the whole-batch prompt indices it covers (the no-pair rule reads them); empty:
            a unit defined by pairs alone, which teaches nothing without them.
    """

    arm: int
    context: np.ndarray | None
    signal: object
    prompts: list[int]


class Strategy:
    """Base class; subclasses override what they need.

    Attributes:
        name: the strategy's name as configured (``selector.name``); logs, checkpoints and the
            resolved config carry it.
        selector: the learned state (a bandit, or the online ensemble's weights), or None.
        needs_context: whether decisions use the prompts' context vectors.
        per_prompt_refused: why ``selector.per_prompt`` does not apply (the strategies of
            ``STRATEGIES``; ``{name}`` is filled in).
    """

    name = "strategy"
    needs_context = True
    #: whether ``learn`` uses the engine's feedback (a learning bandit, the online ensemble); the
    #: loop's log names the feedback only then
    reads_feedback = False
    selector = None
    per_prompt_refused = "not meaningful with selector.name={name} (it decides how each prompt is scored itself)"

    def check(self, feedback: str, n_processes: int) -> None:
        """Refuse a feedback or a process count the strategy cannot work with (ValueError)."""

    def decide(self, batch, coll) -> list[int]:
        """Arm per prompt of the whole batch (``-1`` = every RM); every process computes the same."""
        raise NotImplementedError

    def score(self, batch, pool) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores ``(N,)`` of this process's responses and, optionally, the per-RM matrix ``(K, N)``."""
        return score_by_arm(batch, pool), None

    def units(self, batch, outcome, coll, reference) -> list[Unit]:
        """What to learn from the finished batch (identical on every process)."""
        return []

    def learn(self, units: list[Unit], rewards: list[float | None]) -> list[float | None]:
        """Update the learned state from ``units`` and their normalised rewards (None: skip the
        unit); returns the rewards as applied (logged)."""
        return []

    def record(self, batch) -> dict:
        """Extra fields of the batch's log record."""
        return {}

    def arm_name(self, batch, names: list[str]) -> str:
        return names[batch.arms[0]]

    def state_dict(self) -> dict | None:
        return None if self.selector is None else self.selector.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        if self.selector is not None:
            self.selector.load_state_dict(sd)


def score_by_arm(batch, pool) -> np.ndarray:
    """Each response scored by its prompt's arm only: one batched call per RM."""
    prompts, texts = batch.response_prompts(), batch.texts
    scores = np.full(len(texts), np.nan)
    per_response = batch.response_arms()
    for k in sorted(set(per_response.tolist())):
        idx = np.flatnonzero(per_response == k)
        scores[idx] = pool.score(k, [prompts[i] for i in idx], [texts[i] for i in idx])
    return scores
