"""The pair view of a GRPO group: does the chosen RM's ranking agree with correctness?

GRPO scores a group of G completions of one prompt and builds no preference pairs, so the
router builds them from the chosen RM's scores s_1..s_G:

    pairs(s) = {(i, j) : s_i and s_j finite, s_i > s_j}          (ties carry no preference)

and the group's value for a reference answer a is

    mean over (i, j) in pairs(s) of  correct_a(y_i) - correct_a(y_j)   in [-1, 1]

with ``correct_a`` from ``laser.tasks.extract.is_correct``. Against the gold answer this is the
loop's ``pair_accuracy``; against ``majority_answer`` of the group's completions it is
``majority_pair_accuracy``; against the gold answer where the group has one and the majority
answer elsewhere it is ``mixed_pair_accuracy`` (all defined in ``laser.training.feedback``). A round pools its
groups like the loop pools a step's pairs: sum of all pair values / number of pairs; a round with
no pair (every group tied or unscored) has no value (NaN) and the bandit is not updated.

For 0/1 correctness with c right and w wrong completions and no ties, the group value is
``c w (2 AUC - 1) / (G (G - 1) / 2)``, where AUC is the chance that the RM scores a right
completion above a wrong one: a perfect RM gets ``c w / P``, a random one 0 on average.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from laser.training.feedback import majority_answer, pair_correctness

#: outcome key -> (what it needs, reference answer): the keys the router can compute. "mixed" is
#: the gold answer where the group has one, else the majority answer.
OUTCOME_KEYS = {"pair_accuracy": ("labels", "gold"), "majority_pair_accuracy": ("answers", "majority"),
                "mixed_pair_accuracy": ("answers", "mixed")}


def ranked_pairs(scores: Sequence[float]) -> list[tuple[int, int]]:
    """All (higher, lower) index pairs of finite scores with ``s_higher > s_lower``.

    Args:
        scores: one group's scores; NaN (unscorable) entries are left out.

    Returns:
        Pairs in row-major order of (higher, lower); at most G (G - 1) / 2 of them.
    """
    s = np.asarray(scores, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(s))
    return [(int(i), int(j)) for i in ok for j in ok if s[i] > s[j]]


def group_pair_values(task: str, texts: Sequence[str], scores: Sequence[float], gold: object,
                      keys: Sequence[str]) -> dict[str, list[float]]:
    """Each pair's ``correct(higher) - correct(lower)`` for every outcome key asked for.

    Args:
        task: the group's answer format.
        texts: the group's completions.
        scores: the chosen RM's scores of ``texts`` (NaN = unscored).
        gold: the gold answer (read for ``pair_accuracy``, and for ``mixed_pair_accuracy`` when
            it is neither None nor empty).
        keys: outcome keys from :data:`OUTCOME_KEYS`.

    Returns:
        ``{key: [one value per ranked pair]}`` (empty lists when the group has no pair).
    """
    pairs = ranked_pairs(scores)
    if not pairs:
        return {key: [] for key in keys}
    labelled = gold is not None and gold != ""
    majority = majority_answer(task, list(texts)) if any(OUTCOME_KEYS[k][1] != "gold" for k in keys) else None
    refs = {"gold": gold, "majority": majority, "mixed": gold if labelled else majority}
    return {key: pair_correctness(task, list(texts), pairs, refs[OUTCOME_KEYS[key][1]]) for key in keys}


def pooled(values: Sequence[Sequence[float]]) -> float:
    """Mean over all pairs of several groups (sum / count); NaN when there is no pair."""
    flat = [v for group in values for v in group]
    return float(np.mean(flat)) if flat else float("nan")
