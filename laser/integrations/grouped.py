"""Routing of prompt groups that arrive a row or a request at a time: verl's reward loop, ``laser serve-rm``.

Engines that score rollouts as they finish (verl's reward workers call one row at a time; OpenRLHF
posts one query per rollout to a reward server) never hand the router a whole group at once. A
:class:`GroupRouter` keeps the groups in flight: the first row of a group (same ``uid``, or the same
prompt) decides its RM through the routing core, the other rows get the same RM, and when
``group_size`` rows are in, the group is learned from with the core's feedback and rules.
:class:`SharedRouter` adds the state's atomic saves on a schedule and its restore at start. Both
are framework-free: verl runs a :class:`SharedRouter` as a named Ray actor, the server in-process
under a lock. With ``selector: reliability`` the :class:`SharedRouter` holds a
:class:`~laser.integrations.grouped_reliability.ReliabilityGroups` instead, with the same calls.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from laser.integrations.context import HashedNgramEmbedder
from laser.integrations.routing_spec import RoutingSpec

log = logging.getLogger("laser")

STATE_FILES = ("strategy.npz", "normalizer.npz", "verl.json")


@dataclass
class _Group:
    prompt: str
    arm: int
    context: np.ndarray
    texts: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    arms: set = field(default_factory=set)  # every arm that scored a row (several after a failure)


class _Arm:
    """An arm's name in the actor's reward pool; the RM itself runs in the reward workers."""

    def __init__(self, name: str):
        self.name = name

    def score(self, prompts, responses):
        raise RuntimeError(f"reward model {self.name!r} is scored in verl's reward workers, not in the router")


class GroupRouter:
    """The routing state one verl run shares, on the routing core (:class:`laser.routing.Router`):
    decide per prompt group when its first row arrives, learn when its last row is reported.

    Args:
        names: the RM names (arm k = ``names[k]``).
        spec: the :class:`RoutingSpec`.

    Attributes:
        core: the :class:`~laser.routing.Router` (per-prompt bandit, reward pool of the arms'
            names with their counters and outages, feedback, normaliser).
        learned_, tied_, skipped_, unlabelled_, dropped_: finished groups learned from (``tied_`` of
            them as the lowest reward: no ranked pair though the responses differ), not learned
            (identical responses, or scored by two RMs after a failure), not learnable (no task, or
            no gold answer for a gold-only feedback), dropped before they finished (``max_pending``).
    """

    def __init__(self, names: list[str], spec: RoutingSpec):
        from laser.routing import Router

        self.names, self.spec = list(names), spec
        self.embedder = HashedNgramEmbedder(spec.context_dim)
        feedback = "mixed_pair_accuracy" if spec.feedback == "auto" else spec.feedback
        self.core = Router.from_rms(
            [_Arm(n) for n in names],
            spec.selector,
            dim=spec.context_dim,
            per_prompt=True,
            selector_options=spec.selector_options,
            seed=spec.seed,
            feedback=feedback,
            pairing="all",
        )  # every ranked pair of the group, as verl's GRPO sees it
        self.pending: OrderedDict[str, _Group] = OrderedDict()
        self.learned_ = self.tied_ = self.skipped_ = self.unlabelled_ = self.dropped_ = 0

    def _context(self, prompt: str) -> np.ndarray:
        return self.embedder.embed([prompt])[0] if self.core.strategy.needs_context else np.ones(1)

    def _decide(self, prompt: str, context: np.ndarray) -> int:
        from laser.routing import Batch

        batch = Batch([prompt], contexts=context[None, :], index=[0])
        return int(self.core.decide(batch)[0])  # AllRewardModelsDown names every RM when none is left

    def plan(self, uid: str, prompt: str, group: str | None = None) -> list[int]:
        """The arms that score ``uid``'s rows: its group's arm alone (``group`` is not used)."""
        return [self.route(uid, prompt)]

    def route(self, uid: str, prompt: str) -> int:
        """The arm of ``uid``'s group (decided when its first row arrives)."""
        group = self.pending.get(uid)
        if group is None:
            context = self._context(prompt)
            group = self.pending[uid] = _Group(prompt, self._decide(prompt, context), context)
            while len(self.pending) > self.spec.max_pending:
                self.pending.popitem(last=False)
                self.dropped_ += 1
        return group.arm

    def fail(self, uid: str, arm: int, error: str) -> int:
        """``arm``'s RM raised on a row of ``uid``: masked (the core's rule), the group decided again."""
        pool = self.core.pool
        if arm not in pool.down:
            log.warning("%s", pool.mark_down(arm, error, self.core.selector))
        group = self.pending.get(uid)
        if group is None:
            return self._decide("", self._context(""))
        if group.arm == arm:
            group.arm = self._decide(group.prompt, group.context)
        return group.arm

    COUNTED = ("learned", "tied")  # finished groups that count towards a save

    def report(
        self, uid: str, arm: int, text: str, score: float, gold: Any, task: str | None, probe_scores=None
    ) -> str | None:
        """One row scored by ``arm``; learns when its group is complete. Returns what happened to the
        group when it completed (``learned``, ``tied``, ``skipped``, ``unlabelled``), else None.
        ``probe_scores`` (other arms' scores) never comes: a bandit plans one arm per group."""
        self.core.pool.responses_scored[arm] += 1  # one score() call per row, one response each
        self.core.pool.score_calls[arm] += 1
        group = self.pending.get(uid)
        if group is None:
            return None  # dropped (max_pending) or routed before a restart: nothing to learn from
        group.texts.append(text)
        group.scores.append(float(score))
        group.arms.add(int(arm))
        if len(group.texts) < self.spec.group_size:
            return None
        del self.pending[uid]
        return self._learn(group, gold, task)

    def _learn(self, group: _Group, gold: Any, task: str | None) -> str:
        labelled = gold is not None and str(gold) != ""
        needs_gold = self.core.feedback == "pair_accuracy"
        if task is None or (needs_gold and not labelled):
            if self.spec.feedback != "auto":
                raise ValueError(
                    f"router.feedback={self.core.feedback} needs a task (answer format) on every row"
                    f"{' and reward_model.ground_truth' if needs_gold else ''}; a group has "
                    f"task={task!r}, ground_truth={gold!r}"
                )
            self.unlabelled_ += 1  # chat prompts: no answer to check; the label-free signal is not here yet
            return "unlabelled"
        if len(group.arms) > 1:
            self.skipped_ += 1  # rows scored by two RMs (after a failure) do not compare
            return "skipped"
        from laser.routing import Batch

        batch = Batch(
            [group.prompt],
            tasks=[task],
            answers=[gold if labelled else ""],
            contexts=group.context[None, :],
            index=[0],
            arms=[group.arm],
            my_arms=[group.arm],
        )
        batch.add_responses(group.texts, [0] * len(group.texts))
        batch.scores = np.asarray(group.scores, dtype=np.float64)
        self.core.pairs(batch)
        raw, applied = self.core.learn(batch, self.core.outcome(batch))
        outcome = "learned" if raw[0] is not None else ("tied" if applied[0] is not None else "skipped")
        setattr(self, f"{outcome}_", getattr(self, f"{outcome}_") + 1)
        return outcome

    def finished(self) -> int:
        """Groups finished (the save step)."""
        return self.learned_ + self.tied_ + self.skipped_ + self.unlabelled_

    def summary(self) -> dict:
        return {"counts": self.core.selector.counts_.tolist()}

    def counters(self) -> dict:
        pool = self.core.pool
        return {
            "rows_scored": pool.responses_scored.tolist(),
            "score_calls": pool.score_calls.tolist(),
            "learned": self.learned_,
            "tied": self.tied_,
            "skipped": self.skipped_,
            "unlabelled": self.unlabelled_,
            "dropped": self.dropped_,
            "pending": len(self.pending),
            "down": {self.names[k]: pool.last_errors.get(k, "") for k in sorted(pool.down)},
        }

    def state_dict(self) -> dict:
        """The core router's state plus this adapter's counters (``verl``)."""
        c = self.counters()
        return {
            **self.core.state_dict(),
            "verl": {k: c[k] for k in ("learned", "tied", "skipped", "unlabelled", "dropped")},
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output; arms masked by failures are given a fresh chance."""
        self.core.load_state_dict(sd)
        self.core.pool.down.clear()
        self.core.pool.sync_mask(self.core.selector, 1)
        for key, value in sd["verl"].items():
            setattr(self, f"{key}_", int(value))


def save_router(root: str | Path, router: GroupRouter, step: int) -> Path:
    """Atomic save (temporary folder, manifest with sha256, rename) with the core's writer."""
    from laser.routing import save_state

    return save_state(root, step, router.state_dict())


def load_router(root: str | Path, router: GroupRouter) -> Path | None:
    """Load the newest verified save under ``root`` into ``router``; None when there is none."""
    from laser.routing import load_state

    state, folder = load_state(root, STATE_FILES)
    if state is not None:
        router.load_state_dict(state)
    return folder


class SharedRouter:
    """A :class:`GroupRouter` restored at start and saved on a schedule: the state verl's named Ray
    actor and a routed ``laser serve-rm`` hold.

    Its methods must be called one at a time (a Ray actor runs them so; the server holds a lock).

    Args:
        names: the RM names.
        spec: :class:`RoutingSpec` fields as a dict (what crosses to a Ray actor).
        rms: the RMs themselves (arm order) where they run beside the router (a routed ``laser
            serve-rm``): they score ``selector_options.labelled_pairs`` once, unless a saved state
            (which holds their votes) is restored. verl's actor holds none, so verl refuses the key.

    Raises:
        ValueError: labelled pairs configured without ``rms``.
    """

    def __init__(self, names: list[str], spec: dict, rms: list | None = None):
        self.spec = RoutingSpec(**spec)
        if self.spec.selector == "reliability":
            from laser.integrations.grouped_reliability import ReliabilityGroups

            self.router = ReliabilityGroups(names, self.spec)
        else:
            self.router = GroupRouter(names, self.spec)
        labelled = getattr(self.router.core.strategy, "labelled_pairs", None)
        if labelled and rms is None:
            raise ValueError(
                "router.selector_options.labelled_pairs: the routing state holds no reward model to score "
                "them (verl's routing actor); use a routed laser serve-rm"
            )
        self.root = Path(self.spec.state_dir) if self.spec.state_dir else None
        self.resumed_from = load_router(self.root, self.router) if self.root else None
        if self.resumed_from:
            log.info("laser router: resumed from %s", self.resumed_from)
        elif labelled:  # a restored state already holds their votes
            self.router.score_labelled(rms)
        self.saves = 0

    def route(self, uid: str, prompt: str) -> int:
        return self.router.route(uid, prompt)

    def plan(self, uid: str, prompt: str, group: str | None = None) -> list[int]:
        return self.router.plan(uid, prompt, group)

    def fail(self, uid: str, arm: int, error: str) -> int:
        return self.router.fail(uid, arm, error)

    def report(
        self, uid: str, arm: int, text: str, score: float, gold: Any, task: str | None, probe_scores=None
    ) -> str | None:
        outcome = self.router.report(uid, arm, text, score, gold, task, probe_scores)
        done = sum(getattr(self.router, f"{c}_") for c in self.router.COUNTED)
        if outcome in self.router.COUNTED and self.root and done % self.spec.save_every == 0:
            self.save()
        return outcome

    def save(self) -> str | None:
        """Write the state now (also called on the schedule); returns the folder (None: no state_dir)."""
        if self.root is None:
            return None
        folder = save_router(self.root, self.router, self.router.finished())
        self.saves += 1
        (log.warning if self.saves == 1 else log.info)("laser router: state saved to %s", folder)
        return str(folder)

    def state_dict(self) -> dict:
        return self.router.state_dict()

    def stats(self) -> dict:
        return {
            **self.router.counters(),
            **self.router.summary(),
            "saves": self.saves,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
        }
