"""Per-pair correctness of a step's preference pairs: the inputs of the answer-based feedbacks.

``pair_accuracy`` checks each pair against the prompt's gold answer; ``majority_pair_accuracy``
against the majority answer of the prompt's own samples (no labels: only the task's answer
extractor); ``mixed_pair_accuracy`` against the gold answer where the prompt has one, else the
majority answer. All are ``correct(chosen) - correct(rejected)`` in {-1, 0, 1}, averaged over pairs.
"""

from __future__ import annotations

import numpy as np

from laser.tasks.choice import parse_options
from laser.training.feedback import majority_answer, pair_correctness

#: outcome key -> (per-pair key, per-prompt key, which reference answer)
KINDS = {"pair_accuracy": ("pair_diffs", "prompt_pair_accuracy", "gold"),
         "majority_pair_accuracy": ("majority_pair_diffs", "prompt_majority_pair_accuracy", "majority"),
         "mixed_pair_accuracy": ("mixed_pair_diffs", "prompt_mixed_pair_accuracy", "gold_or_majority")}


def correctness_terms(kind: str, shard: list, samples, pairs: list, dist) -> dict:
    """Mean over every process's pairs, per-prompt means (NaN: no pairs) and the per-pair values.

    Args:
        kind: a key of :data:`KINDS`.
        shard: this process's examples; samples: their samples; pairs: per prompt (chosen, rejected).
        dist: :class:`laser.training.dist.Dist` (the mean is over all processes' pairs).
    """
    per_pair_key, per_prompt_key, ref = KINDS[kind]
    n = len(samples.texts) // max(len(shard), 1)
    per_prompt_values = np.full(len(shard), np.nan)
    diffs: list[float] = []
    for i, (ex, ps) in enumerate(zip(shard, pairs)):
        if not ps:
            continue
        texts, options = samples.texts, parse_options(ex.prompt)
        use_gold = ref == "gold" or (ref == "gold_or_majority" and ex.answer)
        reference = ex.answer if use_gold else majority_answer(ex.task, texts[i * n:(i + 1) * n], options)
        d = pair_correctness(ex.task, texts, ps, reference, options)
        per_prompt_values[i] = float(np.mean(d))
        diffs += d
    total, count = dist.sum([float(np.sum(diffs)), float(len(diffs))])
    return {kind: total / count if count else float("nan"), per_prompt_key: per_prompt_values,
            per_pair_key: np.asarray(diffs, dtype=np.float64)}
