"""Reliability routing of prompt groups that arrive a row or a request at a time (verl, ``laser serve-rm``).

The label-free counterpart of :class:`laser.integrations.grouped.GroupRouter`, with the same calls
(``plan``, ``fail``, ``report``, ``state_dict``) so :class:`~laser.integrations.grouped.SharedRouter`
holds either. The decisions and the learning are the routing core's
:class:`~laser.routing.strategies.reliability.ReliabilityStrategy` (its
:class:`~laser.routing.reliability.ReliabilityRouter`): when a prompt group's first row arrives, the
core decides whether the group is a probe and which RM its group key (``router.group_key``: verl's
``data_source`` column, a request field) trusts most. ``plan`` answers the arms that must score the
group's rows: the trusted arm first (its score is the reward), then, for a probe, every other RM that
is up. When the group's ``group_size`` rows are in, a probe's score matrix goes to the strategy,
which turns pairs of the group's responses into votes with the one rule of the core (pairs whose
extracted answers differ when the row's task has an answer extractor, else pairs of distinct texts;
ties abstain) and refits the group's label model. Gold answers are not used: the estimates come from
the RMs' agreement alone, on chat prompts and on math prompts alike.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

log = logging.getLogger("laser")

#: the group of a row without a group key
DEFAULT_GROUP = "all"


@dataclass
class _Pending:
    prompt: str
    group: str
    arm: int
    probe: bool
    texts: list = field(default_factory=list)
    scores: list = field(default_factory=list)  # per row: {arm: score} of every arm that scored it


class ReliabilityGroups:
    """Per-group label-free routing for row-at-a-time engines (see the module docstring).

    Args:
        names: the RM names (arm k = ``names[k]``; at least three).
        spec: the :class:`~laser.integrations.routing_spec.RoutingSpec` (``selector: reliability``;
            ``selector_options``: the strategy's kwargs, ``anchor`` by RM name).

    Attributes:
        core: the :class:`~laser.routing.Router` (reliability strategy, reward pool of the arms'
            names with their counters and outages).
        learned_, routed_, empty_, dropped_: finished probe groups whose votes were learned,
            finished groups scored by one RM, probe groups without a single vote (identical or
            unscorable responses), groups dropped before they finished (``max_pending``).
    """

    COUNTED = ("learned", "routed", "empty")  # finished groups that count towards a save

    def __init__(self, names: list[str], spec: Any):
        from laser.integrations.grouped import _Arm
        from laser.routing import Router
        from laser.routing.strategies.reliability import make_reliability

        self.names, self.spec = list(names), spec
        cfg = SimpleNamespace(selector=SimpleNamespace(kwargs=dict(spec.selector_options)), seed=spec.seed)
        strategy = make_reliability(self.names, cfg, DEFAULT_GROUP, "router.selector_options")
        self.core = Router(strategy, [_Arm(n) for n in names], feedback=None)
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.learned_ = self.routed_ = self.empty_ = self.dropped_ = self.rows_ = self.votes_ = 0

    def score_labelled(self, rms: list) -> dict | None:
        """Score the labelled pairs of ``selector_options.labelled_pairs`` once with ``rms`` (the
        served RMs, arm order; this router's pool holds placeholders and counts the calls).
        Returns the summary (None without labelled pairs)."""
        from laser.routing.labelled import add_labelled_pairs, describe

        pairs = self.core.strategy.labelled_pairs
        if not pairs:
            return None
        summary = add_labelled_pairs(self.core, pairs, rms=rms)
        log.info("%s", describe(summary))
        return summary

    @property
    def reliability(self):
        """The core's :class:`~laser.routing.reliability.ReliabilityRouter`."""
        return self.core.selector

    def plan(self, uid: str, prompt: str, group: str | None = None) -> list[int]:
        """The arms that score ``uid``'s rows: the group's trusted arm (its score is the reward)
        first, then for a probe every other RM that is up. Decided when the group's first row arrives."""
        from laser.routing import Batch

        p = self.pending.get(uid)
        if p is None:
            key = DEFAULT_GROUP if group is None or str(group) == "" else str(group)
            batch = Batch([prompt], groups=[key], index=[0])
            arm = int(self.core.decide(batch)[0])
            p = self.pending[uid] = _Pending(prompt, key, arm, bool(batch.extra["probe"][0]))
            while len(self.pending) > self.spec.max_pending:
                self.pending.popitem(last=False)
                self.dropped_ += 1
        others = [k for k in range(len(self.names)) if k != p.arm and k not in self.core.pool.down] if p.probe else []
        return [p.arm, *others]

    def route(self, uid: str, prompt: str, group: str | None = None) -> int:
        """The arm whose score is the reward for ``uid``'s rows."""
        return self.plan(uid, prompt, group)[0]

    def fail(self, uid: str, arm: int, error: str) -> int:
        """``arm``'s RM raised: masked (the core's rule); returns the group's trusted arm, decided
        again among the RMs that are up when it was ``arm``."""
        pool = self.core.pool
        if arm not in pool.down:
            log.warning("%s", pool.mark_down(arm, error, self.reliability))
        p = self.pending.get(uid)
        group = p.group if p is not None else DEFAULT_GROUP
        best = self.reliability.best(group)[0]
        if p is None:
            return best
        if p.arm == arm:
            p.arm = best
        return p.arm

    def report(
        self,
        uid: str,
        arm: int,
        text: str,
        score: float,
        gold: Any,
        task: str | None,
        probe_scores: dict | None = None,
    ) -> str | None:
        """One row scored by ``arm`` (and, for a probe, by every arm in ``probe_scores``: arm ->
        score); learns when its group is complete. ``gold`` is not used. Returns what happened to
        the group when it completed (``learned``, ``routed``, ``empty``), else None."""
        scored = {int(k): float(v) for k, v in (probe_scores or {arm: score}).items()}
        scored[int(arm)] = float(score)
        for k in scored:  # one score() call per row and RM
            self.core.pool.responses_scored[k] += 1
            self.core.pool.score_calls[k] += 1
        self.rows_ += 1
        p = self.pending.get(uid)
        if p is None:
            return None  # dropped (max_pending) or routed before a restart
        p.texts.append(text)
        p.scores.append(scored)
        if len(p.texts) < self.spec.group_size:
            return None
        del self.pending[uid]
        if not p.probe:
            self.routed_ += 1
            return "routed"
        return self._learn(p, task)

    #: None: ``_learn`` refits the groups a probe touched (verl's actor, one call at a time); a
    #: callable (:class:`~laser.integrations.background_refit.BackgroundRefits`): ``_learn`` hands it
    #: those groups (with the caller's lock held) and the refits run later, outside the lock
    defer_refit = None

    def _learn(self, p: _Pending, task: str | None) -> str:
        """The probe's votes (the strategy's rule) into its group's window, and a refit (now, or by
        ``defer_refit``)."""
        from laser.routing import Batch

        matrix = np.full((len(self.names), len(p.texts)), np.nan)
        for j, row in enumerate(p.scores):
            for k, v in row.items():
                matrix[k, j] = v
        batch = Batch([p.prompt], tasks=[task], groups=[p.group], index=[0])
        batch.add_responses(p.texts, [0] * len(p.texts))
        batch.extra.update(probe=[True], matrix=matrix, refit=self.defer_refit is None)
        self.core.strategy.units(batch, None, self.core.coll, None)
        if self.defer_refit is not None:
            self.defer_refit(list(batch.extra["votes"]))
        votes = int(batch.extra["votes"].get(p.group, 0))
        self.votes_ += votes
        outcome = "learned" if votes else "empty"
        setattr(self, f"{outcome}_", getattr(self, f"{outcome}_") + 1)
        return outcome

    def finished(self) -> int:
        """Groups finished (the save step)."""
        return self.learned_ + self.routed_ + self.empty_

    def counters(self) -> dict:
        pool = self.core.pool
        return {
            "rows_scored": pool.responses_scored.tolist(),
            "score_calls": pool.score_calls.tolist(),
            "rows": self.rows_,
            "calls_per_response": round(float(pool.responses_scored.sum()) / max(self.rows_, 1), 4),
            "learned": self.learned_,
            "routed": self.routed_,
            "empty": self.empty_,
            "votes": self.votes_,
            "dropped": self.dropped_,
            "pending": len(self.pending),
            "down": {self.names[k]: pool.last_errors.get(k, "") for k in sorted(pool.down)},
        }

    def summary(self) -> dict:
        """Per group: the trusted RM, why, the estimated accuracies, probes and prompts seen."""
        rel, out = self.reliability, {}
        for g, st in rel.groups_.items():
            arm, status = rel.best(g)
            acc = None if st.acc is None else {n: a for n, a in zip(self.names, st.acc, strict=True)}
            out[g] = {
                "rm": self.names[arm],
                "status": status,
                "acc": acc,
                "uncertainty": st.uncertainty,
                "sign": st.sign_source,
                "twins": {self.names[int(d)]: self.names[t] for d, t in st.twins.items()},
                "probes": st.probes,
                "prompts": st.prompts_seen,
            }
        return {"groups": out, "label_model_s": round(rel.fit_seconds_, 4)}

    def state_dict(self) -> dict:
        """The core router's state plus this adapter's counters (``verl``)."""
        c = self.counters()
        return {**self.core.state_dict(), "verl": {k: c[k] for k in ("learned", "routed", "empty", "votes", "rows")}}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output; arms masked by failures are given a fresh chance.

        Raises:
            ValueError: the state was saved by another strategy, other RMs or other options.
        """
        self.core.load_state_dict(sd)
        self.core.pool.down.clear()
        self.core.pool.sync_mask(self.reliability, 1)
        for key, value in sd["verl"].items():
            setattr(self, f"{key}_", int(value))
