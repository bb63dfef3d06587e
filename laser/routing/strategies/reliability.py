"""The reliability router as a training strategy (label-free, per group of prompts).

The routing logic lives in :mod:`laser.routing.reliability`; this adapter maps a routing
:class:`~laser.routing.batch.Batch` onto it: groups are the batch's ``groups`` (``Example.group``:
its domain, else its task); probe
prompts are scored by every RM that is up, the others by their group's best RM only; a probe
prompt trains on its group's best RM too (the same RM as the rest of its group, so probing changes
the cost, never the training signal). Votes come from pairs whose extracted answers differ when the
task has an extractor (:data:`laser.tasks.extract.TASK_FORMATS`), otherwise from pairs of distinct
texts. The run's feedback is not used: the router learns from the RMs' agreement alone, in
:meth:`ReliabilityStrategy.units` (after the update), which returns no bandit unit.

Configured with ``selector.name: reliability`` and ``selector.kwargs`` (``anchor``: an RM name;
``probe_share``, ``warmup``, ``window``, ``max_pairs``, ``min_votes``, ``method``: see
:class:`~laser.routing.reliability.ReliabilityRouter`). A label-free strategy (``label_free``): a
:class:`~laser.routing.Router` built without a feedback learns through it. Decisions gather the
whole batch's groups over the processes; learning needs the whole batch's probe scores on every
process, which the TRL router gathers (its rounds); the training loop refuses several processes.
"""

from __future__ import annotations

import time

import numpy as np

from laser.routing.reliability import ReliabilityRouter, pair_votes
from laser.routing.strategies.base import Strategy

#: selector.kwargs the strategy reads (anything else is a config error)
KWARGS = ("anchor", "probe_share", "warmup", "window", "max_pairs", "min_votes", "method", "n_boot", "min_uncertainty")


def answers_of(task: str | None, prompt: str, options, texts: list[str]) -> list | None:
    """Extracted answers of ``texts`` for ``task``, or None when it has no extractor (free-form).

    ``options``: the prompt's option texts when known (else parsed from ``prompt``).
    """
    from laser.tasks.extract import TASK_FORMATS, extract_answer, parse_options

    if (task or "").lower() not in TASK_FORMATS:
        return None
    if options is None:
        options = parse_options(prompt)
    return [extract_answer(task, t, options) for t in texts]


def whole_groups(batch, coll) -> list[str]:
    """The group key of every prompt of the whole batch: this process's ``batch.groups`` gathered
    by ``batch.index`` over the processes (a prompt held by two processes counted once)."""
    mine = [str(g) for g in batch.groups]
    if coll is None or coll.world == 1:
        return mine
    table: dict[int, str] = {}
    for part in coll.all_gather(list(zip(batch.index, mine, strict=True))):
        for i, g in part:
            table.setdefault(int(i), g)
    return [table[i] for i in sorted(table)]


class ReliabilityStrategy(Strategy):
    """Args: names: the RM names; router: a :class:`ReliabilityRouter` over them."""

    name = "reliability"
    needs_context = False
    label_free = True  # learns in units() from the RMs' agreement: the engine's feedback is not read

    def __init__(self, names: list[str], router: ReliabilityRouter):
        self.names, self.selector = list(names), router

    def check(self, feedback: str, n_processes: int) -> None:
        if n_processes > 1:
            raise ValueError("selector.name=reliability runs on a single process for now")

    def decide(self, batch, coll) -> list[int]:
        """Arms and probe flags of the whole batch (``batch.extra["probe"]``); an engine that will
        not learn from the batch (an evaluation round) sets ``batch.extra["learn"] = False``: no probes.
        Decided again after an RM failed: the same probes, each group's best RM among those up (the
        plan's counters and draws are not repeated)."""
        groups = whole_groups(batch, coll)
        if "probe" in batch.extra:
            return [self.selector.best(g)[0] for g in groups]
        arms, probes = self.selector.plan(groups)
        batch.extra["probe"] = probes if batch.extra.get("learn", True) else [False] * len(probes)
        return arms

    def score(self, batch, pool):
        """Probe prompts' responses by every RM that is up, the others by their prompt's arm
        (``batch.extra``: ``matrix`` (K, N) the scores, ``scored`` (K, N) which RM scored what)."""
        prompts, texts = batch.response_prompts(), batch.texts
        owner = np.asarray(batch.prompt_index)
        whole = np.asarray(batch.index if batch.index is not None else range(len(batch.prompts)), np.int64)
        probe = np.asarray(batch.extra["probe"], bool)[whole[owner]]
        arm = np.asarray(batch.my_arms)[owner]
        matrix = np.full((len(pool.rms), len(texts)), np.nan)
        scored = np.zeros(matrix.shape, bool)
        off = pool.off(batch.step)
        for k in range(len(pool.rms)):
            idx = np.flatnonzero((probe & (k not in off)) | (arm == k))
            if len(idx):
                matrix[k, idx] = pool.score(k, [prompts[i] for i in idx], [texts[i] for i in idx])
                scored[k, idx] = True
        batch.extra["matrix"], batch.extra["scored"] = matrix, scored
        return matrix[arm, np.arange(len(texts))], None

    def units(self, batch, outcome, coll, reference):
        """Feed the probes' votes to the router and refit the groups that got new votes (no bandit unit)."""
        t0, matrix, router = time.perf_counter(), batch.extra.pop("matrix"), self.selector
        touched = {}
        for i, prompt in enumerate(batch.prompts):
            if not batch.extra["probe"][i]:
                continue
            idx = batch.responses_of(i)
            mine = [batch.texts[j] for j in idx]
            group = str(batch.groups[i])
            votes = pair_votes(
                matrix[:, idx],
                answers_of(batch.tasks[i], prompt, batch.options[i], mine),
                mine,
                router.rng_,
                router.max_pairs,
            )
            router.observe(group, votes)
            touched[group] = touched.get(group, 0) + votes.shape[1]
        for g in touched:
            router.refit(g)
        batch.extra["label_model_s"] = time.perf_counter() - t0
        batch.extra["votes"] = touched
        return []

    def record(self, batch) -> dict:
        router = self.selector
        groups = sorted({str(g) for g in batch.groups})
        return {
            "probes": int(sum(batch.extra.get("probe", []))),
            "votes": batch.extra.get("votes", {}),
            "label_model_s": round(batch.extra.get("label_model_s", 0.0), 5),
            "routing": {
                g: {
                    "arm": router.best(g)[0],
                    "status": router.best(g)[1],
                    "acc": router.groups_[g].acc,
                    "uncertainty": router.groups_[g].uncertainty,
                    "sign": router.groups_[g].sign_source,
                    "twins": router.groups_[g].twins,
                }
                for g in groups
                if g in router.groups_
            },
        }


def make_reliability(names: list[str], cfg) -> ReliabilityStrategy:
    """The strategy of ``cfg.selector.kwargs`` (the anchor by RM name).

    Raises:
        ValueError: an unknown kwarg, an unknown anchor, or fewer than three RMs.
    """
    kw = dict(cfg.selector.kwargs)
    unknown = sorted(set(kw) - set(KWARGS))
    if unknown:
        raise ValueError(
            f"selector.kwargs: unknown key(s) {unknown} for selector.name=reliability (valid: {', '.join(KWARGS)})"
        )
    anchor = kw.pop("anchor", None)
    if anchor is not None and anchor not in names:
        raise ValueError(f"selector.kwargs.anchor: unknown reward model {anchor!r} (valid: {', '.join(names)})")
    router = ReliabilityRouter(len(names), anchor=None if anchor is None else names.index(anchor), seed=cfg.seed, **kw)
    return ReliabilityStrategy(names, router)
