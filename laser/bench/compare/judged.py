"""Instruction following, judged: a CPU pairwise judge for the embedded benchmark.

The prompts are the benchmark's with their gold answers (and domain labels) stripped, so the
training loop and the judge see prompts only. The judge is built on
:func:`laser.bench.rms.quality`: like the expert RMs it *solves* the prompt from its text
and grades each response (right answer 1, partial credit below 0.5, no answer 0); it never reads
a gold answer. It is not an LLM: it stands in for one so the win-rate machinery runs in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class QualityJudge:
    """Pairwise judge: P(a better than b), averaged over both presentation orders.

    One presentation (``first`` shown before ``second``) says "first is better" with probability
    ``sigmoid((q(first) - q(second)) / temperature + position_bias)``: a deliberate bias towards
    the first-shown response, like LLM judges have. Averaging over both orders,

        P(a > b) = 1/2 [ sigmoid(D/T + beta) + 1 - sigmoid(-D/T + beta) ]
                 = 1/2 [ sigmoid(D/T + beta) + sigmoid(D/T - beta) ],      D = q(a) - q(b),

    which is 0.5 exactly when D = 0 (the bias cancels) and above 0.5 exactly when D > 0.

    Args:
        temperature: scale of quality differences.
        position_bias: the first-position bias beta of one presentation.
    """

    def __init__(self, temperature: float = 0.1, position_bias: float = 1.0):
        self.temperature, self.position_bias = float(temperature), float(position_bias)

    def quality(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """q per response; NaN for a prompt that is not a benchmark prompt."""
        from laser.bench.rms import quality

        q = [quality(p, r) for p, r in zip(prompts, responses, strict=True)]
        return np.array([np.nan if v is None else v for v in q], dtype=np.float64)

    def prefer_one_order(self, prompts, first, second) -> np.ndarray:
        """P(the judge says ``first`` is better) when ``first`` is shown first."""
        d = self.quality(prompts, first) - self.quality(prompts, second)
        return _sigmoid(d / self.temperature + self.position_bias)

    def prefer(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> np.ndarray:
        """P(a better than b) per item, averaged over both orders; NaN where quality is unknown."""
        ab = self.prefer_one_order(prompts, responses_a, responses_b)
        ba = self.prefer_one_order(prompts, responses_b, responses_a)
        return 0.5 * (ab + (1.0 - ba))


def strip_gold(examples) -> list:
    """The examples as a prompt-only set: no answer, no task, no domain (ids kept)."""
    from laser.tasks.base import Example

    return [Example(id=ex.id, prompt=ex.prompt) for ex in examples]
