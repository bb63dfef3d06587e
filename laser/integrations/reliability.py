"""The TRL router's label-free mode: ``selector="reliability"`` (prompts without gold answers).

The routing is the core's strategy :mod:`laser.routing.strategies.reliability` (one
:class:`~laser.routing.reliability.ReliabilityRouter`); this module only checks the router's
options, builds the strategy and scores the optional labelled pairs. The round's rules, as in
the training loop:

* groups: the dataset column ``group_column`` names each prompt's group (domain, dataset, task);
  without it every prompt is in the one group :data:`ONE_GROUP` (the label model then estimates
  one accuracy per RM over all prompts, which is right when the best RM does not depend on the
  prompt; a column is the only grouping the TRL router offers);
* probes: a share of the GRPO groups (and the first ``warmup`` of each group) is scored by every
  RM that is up; every other prompt by its group's best RM only;
* votes: pairs of distinct completions of the same prompt (the free-form rule), or of completions
  whose extracted answers differ when the row's task has an answer extractor; an RM whose two
  scores tie abstains;
* sign: the ``anchor`` RM (``selector_options={"anchor": name}``), else the group's labelled pairs
  (``labelled_pairs={group: [(prompt, chosen, rejected), ...]}``, scored once by every RM at
  set-up), else the label-free majority rule (flagged in ``history_`` as ``sign``).
"""

from __future__ import annotations

import numpy as np

from laser.rewards.base import RewardModelError
from laser.routing.reliability import ReliabilityRouter
from laser.routing.strategies.reliability import KWARGS, ReliabilityStrategy

RELIABILITY = "reliability"
#: the group of every prompt when no group column is named
ONE_GROUP = "all"


def check_options(names: list[str], options: dict, group_column, labelled_pairs) -> list[str]:
    """Problems with the reliability router's settings (empty: fine)."""
    problems = []
    unknown = sorted(set(options) - set(KWARGS))
    if unknown:
        problems.append(f"selector_options {unknown} are not options of selector='reliability' ({', '.join(KWARGS)})")
    anchor = options.get("anchor")
    if anchor is not None and anchor not in names:
        problems.append(f"selector_options['anchor']: unknown reward model {anchor!r} (valid: {', '.join(names)})")
    if len(names) < 3:
        problems.append(f"selector='reliability' needs at least three reward models, got {len(names)}")
    if group_column is not None and not isinstance(group_column, str):
        problems.append(f"group_column must be a column name, got {type(group_column).__name__}")
    if labelled_pairs is not None:
        problems += _check_labelled(labelled_pairs)
    return problems


def _check_labelled(labelled_pairs) -> list[str]:
    if not isinstance(labelled_pairs, dict):
        return [
            f"labelled_pairs must map a group to [(prompt, chosen, rejected), ...], got {type(labelled_pairs).__name__}"
        ]
    bad = [
        f"labelled_pairs[{g!r}][{i}]"
        for g, pairs in labelled_pairs.items()
        for i, p in enumerate(pairs)
        if not (isinstance(p, (tuple, list)) and len(p) == 3 and all(isinstance(x, str) for x in p) and p[1] != p[2])
    ]
    return (
        [f"{', '.join(bad[:5])}: each labelled pair is (prompt, chosen, rejected), three strings, chosen != rejected"]
        if bad
        else []
    )


def make_strategy(names: list[str], options: dict, seed: int) -> ReliabilityStrategy:
    """The core's reliability strategy over ``names`` (the anchor given by RM name)."""
    kw = dict(options)
    anchor = kw.pop("anchor", None)
    router = ReliabilityRouter(len(names), anchor=None if anchor is None else names.index(anchor), seed=seed, **kw)
    return ReliabilityStrategy(names, router)


def add_labelled_pairs(core, labelled_pairs: dict) -> None:
    """Score every labelled pair once with every RM that is up and give the votes (chosen first)
    to the router's groups; several processes use the main process's votes. An RM that fails is
    masked and abstains."""
    pool, coll, router = core.pool, core.coll, core.strategy.selector
    votes, failed = {}, {}
    if coll.is_main:
        for group, pairs in labelled_pairs.items():
            prompts = [p for p, _, _ in pairs]
            chosen, rejected = [c for _, c, _ in pairs], [r for _, _, r in pairs]
            v = np.zeros((len(pool.rms), len(pairs)), np.int8)
            for k in sorted(set(range(len(pool.rms))) - pool.off(1)):
                try:
                    s = pool.score(k, prompts + prompts, chosen + rejected)
                except RewardModelError as exc:
                    failed[k] = f"{exc.__class__.__name__}: {exc}"
                    pool.mark_down(k, failed[k], router)
                    continue
                with np.errstate(invalid="ignore"):
                    diff = s[: len(pairs)] - s[len(pairs) :]
                v[k] = np.where(np.isfinite(diff), np.sign(diff), 0)
            votes[str(group)] = v.tolist()
    votes, failed = coll.broadcast((votes, failed))
    for k, error in failed.items():  # every process masks what failed on the main one
        if k not in pool.down:
            pool.mark_down(k, error, router)
    for group, v in votes.items():
        router.add_labelled(group, np.asarray(v, np.int8))


def round_record(strategy: ReliabilityStrategy, batch) -> dict:
    """The reliability fields of a round's ``history_`` record: probes, votes, and per group the
    routed RM, its status, accuracies and sign source."""
    rec = strategy.record(batch)
    return {"probes": rec["probes"], "votes": rec["votes"], "routing": rec["routing"]}


def log_round(log_metric, record: dict, names: list[str]) -> None:
    """Log a training round's probes, votes and each group's routed RM (``laser/rel/<group>/arm``)."""
    if log_metric is None:
        return
    log_metric("laser/probes", float(record["probes"]))
    log_metric("laser/votes", float(sum(record["votes"].values())))
    for group, g in record["routing"].items():
        log_metric(f"laser/rel/{group}/arm", float(g["arm"]))
