"""The oracle: each prompt scored by the RM known to be right for its group (domain).

An upper bound for selection on benchmarks whose design says which RM fits which domain (the
embedded benchmark: ``math_expert`` for arith and count, ``logic_expert`` for compare and choice),
and a baseline for users who know their domains. Configured with
``selector.kwargs.arms_by_group: {group: rm_name}``; it learns nothing.
"""

from __future__ import annotations

from laser.routing.strategies.base import Strategy


class Oracle(Strategy):
    """Args: arms_by_group: group name -> arm index."""

    name = "oracle"
    per_prompt_refused = "not meaningful with the oracle (it picks each prompt's RM by its group)"
    needs_context = False

    def __init__(self, arms_by_group: dict[str, int]):
        self.arms_by_group = dict(arms_by_group)

    def decide(self, batch, coll) -> list[int]:
        table: dict[int, str] = {}
        for part in coll.all_gather(list(zip(batch.index, batch.groups, strict=True))):
            for i, g in part:
                table.setdefault(i, g)
        groups = [table[i] for i in sorted(table)]
        missing = sorted({g for g in groups if g not in self.arms_by_group})
        if missing:
            raise ValueError(
                f"selector.kwargs.arms_by_group: no reward model for group(s) {missing} "
                f"(mapped: {sorted(self.arms_by_group)})"
            )
        return [self.arms_by_group[g] for g in groups]  # in whole-batch order, like the contexts


def make_oracle(names: list[str], cfg) -> Oracle:
    """The oracle of ``cfg.selector.kwargs.arms_by_group`` (RM names checked against ``names``).

    Raises:
        ValueError: the mapping is missing or names an unknown RM.
    """
    mapping = cfg.selector.kwargs.get("arms_by_group")
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(
            "selector.kwargs.arms_by_group: required with selector.name=oracle ({group: reward model name})"
        )
    unknown = sorted({rm for rm in mapping.values() if rm not in names})
    if unknown:
        raise ValueError(
            f"selector.kwargs.arms_by_group: unknown reward model(s) {unknown} (valid: {', '.join(names)})"
        )
    return Oracle({g: names.index(rm) for g, rm in mapping.items()})
