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
  (``labelled_pairs={group: [(prompt, chosen, rejected), ...]}`` or the path of a JSONL file,
  :mod:`laser.routing.labelled`; scored once by every RM at set-up), else the label-free majority
  rule (flagged in ``history_`` as ``sign``).
"""

from __future__ import annotations

from laser.routing.labelled import LabelledPairsError, labelled_pairs_of
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
        try:  # a path is read now: its problems named by file and line before any model loads
            labelled_of(labelled_pairs)
        except LabelledPairsError as exc:
            problems.append(f"labelled_pairs: {exc}" if not str(exc).startswith("labelled_pairs") else str(exc))
    return problems


def labelled_of(labelled_pairs) -> dict:
    """The TRL router's labelled pairs (a mapping or a JSONL path; a line without ``group`` is in
    :data:`ONE_GROUP`), validated.

    Raises:
        LabelledPairsError: see :func:`laser.routing.labelled.labelled_pairs_of`.
    """
    return labelled_pairs_of(labelled_pairs, ONE_GROUP)


def make_strategy(names: list[str], options: dict, seed: int) -> ReliabilityStrategy:
    """The core's reliability strategy over ``names`` (the anchor given by RM name)."""
    kw = dict(options)
    anchor = kw.pop("anchor", None)
    router = ReliabilityRouter(len(names), anchor=None if anchor is None else names.index(anchor), seed=seed, **kw)
    return ReliabilityStrategy(names, router)


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
