"""Labelled preference pairs for the reliability router, in every engine.

The reliability router (:mod:`laser.routing.reliability`) estimates each RM's accuracy per group of
prompts from the RMs' agreement alone; a few labelled pairs per group (a prompt, the preferred
response, the other one) fix the label model's sign when no anchor RM is named and let the router
veto a fit whose pick loses on them (docs/reliability_routing.md, "Labelled pairs"). This module
reads them (a JSONL file or a ``{group: [(prompt, chosen, rejected), ...]}`` mapping, one
validator for both) and scores them once with every RM that is up
(:func:`add_labelled_pairs`). Framework-free: no torch.

File format, one JSON object per line (blank lines are skipped)::

    {"prompt": "...", "chosen": "...", "rejected": "...", "group": "math"}

``group`` is optional: a line without it belongs to the group the engine uses for a prompt without
one (the training loop and ``laser bon``: ``""``, an example with neither domain nor task; the TRL
router, ``laser serve-rm`` and verl: ``"all"``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("laser")

#: the fields of a labelled pair's line (``group`` is optional)
FIELDS = ("prompt", "chosen", "rejected")
#: problems listed in one error at most (the count of the rest is given)
MAX_LISTED = 10

Pairs = dict[str, list[tuple[str, str, str]]]


class LabelledPairsError(ValueError):
    """Problems of a labelled-pairs file or mapping; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = len(problems) - MAX_LISTED
        super().__init__("; ".join(problems[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else ""))


def load_labelled_pairs(path: str | os.PathLike, default_group: str = "all") -> Pairs:
    """The labelled pairs of a JSONL file, by group, in file order.

    Args:
        path: the file (one object per line: ``prompt``, ``chosen``, ``rejected``, optional ``group``).
        default_group: the group of a line without ``group``.

    Raises:
        LabelledPairsError: the file cannot be read or holds no pair; a line that is not JSON, not
            an object, lacks a field, has a field that is not a string, or has ``chosen ==
            rejected`` (every problem, each as ``file:line: field ...``).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelledPairsError([f"{path}: cannot read the labelled pairs: {exc}"]) from exc
    pairs: Pairs = {}
    problems: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        found = _line_problems(row, where)
        if found:
            problems += found
            continue
        group = row.get("group", default_group)
        pairs.setdefault(group, []).append((row["prompt"], row["chosen"], row["rejected"]))
    if not pairs and not problems:
        problems.append(f"{path}: no labelled pair (the file is empty)")
    if problems:
        raise LabelledPairsError(problems)
    return pairs


def _line_problems(row, where: str) -> list[str]:
    if not isinstance(row, dict):
        return [f"{where}: expected a JSON object with {', '.join(FIELDS)}, got {type(row).__name__}"]
    problems = []
    for name in (*FIELDS, "group"):
        if name not in row:
            if name != "group":
                problems.append(f"{where}: field {name!r} is missing")
        elif not isinstance(row[name], str):
            problems.append(f"{where}: field {name!r} must be a string, got {type(row[name]).__name__}")
    if not problems and row["chosen"] == row["rejected"]:
        problems.append(f"{where}: field 'rejected' equals 'chosen' (a pair needs two different responses)")
    return problems


def check_labelled(pairs) -> list[str]:
    """Problems of labelled pairs given as a mapping ``{group: [(prompt, chosen, rejected), ...]}``
    (empty: fine); each names the pair as ``labelled_pairs[group][i]``."""
    if not isinstance(pairs, dict):
        return [f"labelled_pairs must map a group to [(prompt, chosen, rejected), ...], got {type(pairs).__name__}"]
    problems = [
        f"labelled_pairs[{g!r}]: expected a list of pairs, got {type(v).__name__}"
        for g, v in pairs.items()
        if not isinstance(v, (list, tuple))
    ]
    bad = [
        f"labelled_pairs[{g!r}][{i}]"
        for g, v in pairs.items()
        if isinstance(v, (list, tuple))
        for i, p in enumerate(v)
        if not (isinstance(p, (tuple, list)) and len(p) == 3 and all(isinstance(x, str) for x in p) and p[1] != p[2])
    ]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        problems.append(
            f"{', '.join(bad[:5])}{more}: each labelled pair is (prompt, chosen, rejected), three strings, "
            "chosen != rejected"
        )
    if not problems and not any(pairs.values()):
        problems.append("labelled_pairs: no labelled pair")
    return problems


def labelled_pairs_of(source, default_group: str = "all") -> Pairs:
    """Labelled pairs from a JSONL path or a mapping, validated (the one entry point of the engines).

    Raises:
        LabelledPairsError: see :func:`load_labelled_pairs` and :func:`check_labelled`.
    """
    if isinstance(source, (str, os.PathLike)):
        return load_labelled_pairs(source, default_group)
    problems = check_labelled(source)
    if problems:
        raise LabelledPairsError(problems)
    return {str(g): [tuple(p) for p in v] for g, v in source.items() if v}


def add_labelled_pairs(core, pairs: Pairs, rms: list | None = None) -> dict:
    """Score every labelled pair once with every RM that is up and give the votes (chosen first) to
    the router's groups; several processes use the main process's votes. An RM that fails is
    masked and abstains.

    Args:
        core: the :class:`~laser.routing.Router` (reliability strategy; ``pool``, ``coll``).
        pairs: ``{group: [(prompt, chosen, rejected), ...]}`` (validated).
        rms: the RMs that score, arm k = ``rms[k]``, when the core's pool holds placeholders (a
            routed ``laser serve-rm``); the core's pool counts their calls.

    Returns:
        ``{"pairs": {group: L}, "scored": {rm name: responses scored}, "failed": {rm name: error}}``
        (the same on every process).
    """
    from laser.rewards.base import RewardModelError
    from laser.routing.pool import RewardPool

    pool, coll, router = core.pool, core.coll, core.strategy.selector
    scorer = pool if rms is None else RewardPool(rms)
    votes, failed, scored = {}, {}, {}
    if coll.is_main:
        for group, group_pairs in pairs.items():
            prompts = [p for p, _, _ in group_pairs]
            texts = [c for _, c, _ in group_pairs] + [r for _, _, r in group_pairs]
            v = np.zeros((len(pool.rms), len(group_pairs)), np.int8)
            for k in sorted(set(range(len(pool.rms))) - pool.off(1) - set(failed)):
                if rms is not None:  # the placeholder pool counts the real RMs' calls
                    pool.responses_scored[k] += len(texts)
                    pool.score_calls[k] += 1
                scored[k] = scored.get(k, 0) + len(texts)
                try:
                    s = scorer.score(k, prompts + prompts, texts)
                except RewardModelError as exc:  # masked below, on every process at once
                    failed[k] = f"{exc.__class__.__name__}: {exc}"
                    continue
                with np.errstate(invalid="ignore"):
                    diff = s[: len(group_pairs)] - s[len(group_pairs) :]
                v[k] = np.where(np.isfinite(diff), np.sign(diff), 0)
            votes[str(group)] = v.tolist()
    votes, failed, scored = coll.broadcast((votes, failed, scored))
    for k, error in failed.items():  # every process masks what failed on the main one (and raises
        if k not in pool.down:  # AllRewardModelsDown together when none is left)
            pool.mark_down(k, error, router)
    for group, v in votes.items():
        router.add_labelled(group, np.asarray(v, np.int8))
    names = pool.names
    return {
        "pairs": {g: len(p) for g, p in pairs.items()},
        "scored": {names[k]: n for k, n in sorted(scored.items())},
        "failed": {names[k]: e for k, e in sorted(failed.items())},
    }


def describe(summary: dict) -> str:
    """One log line of :func:`add_labelled_pairs`'s summary."""
    groups = ", ".join(f"{g!r}: {n}" for g, n in summary["pairs"].items())
    scored = ", ".join(f"{name} {n}" for name, n in summary["scored"].items())
    failed = "; ".join(f"{name} failed ({e})" for name, e in summary["failed"].items())
    total = sum(summary["pairs"].values())
    return f"labelled pairs: {total} in {len(summary['pairs'])} group(s) ({groups}); responses scored: {scored}" + (
        f"; {failed}" if failed else ""
    )


def score_strategy_pairs(core, seen_groups=None, key: str = "selector.kwargs.labelled_pairs") -> dict | None:
    """Score the labelled pairs the core's reliability strategy was configured with, once, and log
    the summary (main process); a labelled group that is not among ``seen_groups`` (the engine's
    prompts' groups) is named in a warning. Returns the summary, None without labelled pairs."""
    pairs = getattr(core.strategy, "labelled_pairs", None)
    if not pairs:
        return None
    unseen = sorted(set(pairs) - {str(g) for g in seen_groups}) if seen_groups is not None else []
    if unseen and core.coll.is_main:
        log.warning(
            "%s: group(s) %s never appear in the prompts' groups (their pairs are scored, no prompt uses them)",
            key,
            ", ".join(map(repr, unseen)),
        )
    summary = add_labelled_pairs(core, pairs)
    if core.coll.is_main:
        log.info("%s", describe(summary))
    return summary
