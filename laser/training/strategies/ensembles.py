"""The paper's ensemble baselines: every RM scores every response.

``score_ensemble`` ranks responses by the mean of per-RM standardised scores;
``agreement_ensemble`` ranks the same way but keeps only pairs that a strict majority of the RMs
order the same way. Neither learns anything.
"""

from __future__ import annotations

import numpy as np

from laser.training.pairs import ensemble_scores
from laser.training.strategies.base import Strategy, response_prompts


def score_matrix(step, pool) -> np.ndarray:
    """``(K, N)`` scores of the shard's responses by every RM that is up (NaN rows for the others)."""
    prompts, texts = response_prompts(step), step.samples.texts
    matrix = np.full((len(pool.rms), len(texts)), np.nan)
    off = pool.down | pool.waiting(step.global_step)
    for k in range(len(pool.rms)):
        if k not in off:
            matrix[k] = pool.score(k, prompts, texts)
    return matrix


class ScoreEnsemble(Strategy):
    """Every RM scores; the mean standardised score ranks the responses."""

    name = "score_ensemble"
    needs_context = False

    def decide(self, step, dist) -> list[int]:
        return [-1] * len(step.contexts)

    def score(self, step, pool):
        return ensemble_scores(score_matrix(step, pool)), None

    def arm_name(self, step, names):
        return self.name


class AgreementEnsemble(ScoreEnsemble):
    """As the score ensemble, but pairs are kept only where a strict majority of the RMs agree."""

    name = "agreement_ensemble"

    def score(self, step, pool):
        matrix = score_matrix(step, pool)
        return ensemble_scores(matrix), matrix
