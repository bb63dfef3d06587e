"""The paper's ensemble baselines: every RM scores every response.

``score_ensemble`` ranks responses by the mean of per-RM standardised scores;
``agreement_ensemble`` ranks the same way but keeps only pairs that a strict majority of the RMs
order the same way. Neither learns anything.
"""

from __future__ import annotations

import numpy as np

from laser.routing.pairs import ensemble_scores
from laser.routing.strategies.base import Strategy


def score_matrix(batch, pool) -> np.ndarray:
    """``(K, N)`` scores of this process's responses by every RM that is up (NaN rows for the others)."""
    prompts, texts = batch.response_prompts(), batch.texts
    matrix = np.full((len(pool.rms), len(texts)), np.nan)
    off = pool.off(batch.step)
    for k in range(len(pool.rms)):
        if k not in off:
            matrix[k] = pool.score(k, prompts, texts)
    return matrix


class ScoreEnsemble(Strategy):
    """Every RM scores; the mean standardised score ranks the responses."""

    name = "score_ensemble"
    per_prompt_refused = "not meaningful with an ensemble (every RM scores every prompt)"
    needs_context = False

    def decide(self, batch, coll) -> list[int]:
        return [-1] * len(batch.contexts)

    def score(self, batch, pool):
        matrix = batch.extra["matrix"] = score_matrix(batch, pool)  # every RM's scores (best-of-n reuses them)
        return ensemble_scores(matrix), None

    def arm_name(self, batch, names):
        return self.name


class AgreementEnsemble(ScoreEnsemble):
    """As the score ensemble, but pairs are kept only where a strict majority of the RMs agree."""

    name = "agreement_ensemble"

    def score(self, batch, pool):
        matrix = batch.extra["matrix"] = score_matrix(batch, pool)
        return ensemble_scores(matrix), matrix
