"""Rule-based reward models: length, regular expression, and a task-answer verifier."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np


class LengthRM:
    """Scores a response by its length in characters (``prefer="long"``) or minus it (``"short"``).

    A deliberately superficial RM: useful as the degenerate arm in robustness studies.
    """

    def __init__(self, name: str = "length", prefer: str = "long"):
        if prefer not in ("long", "short"):
            raise ValueError(f"prefer must be 'long' or 'short', got {prefer!r}")
        self.name, self.prefer = name, prefer

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        n = np.array([len(r) for r in responses], dtype=np.float64)
        return n if self.prefer == "long" else -n


class RegexRM:
    """Scores ``weight`` times the number of matches of ``pattern`` in the response."""

    def __init__(self, name: str, pattern: str, weight: float = 1.0):
        self.name, self.pattern, self.weight = name, re.compile(pattern), weight

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array([self.weight * len(self.pattern.findall(r)) for r in responses], dtype=np.float64)


class VerifierRM:
    """1.0 when the response's extracted answer matches the prompt's gold answer, else 0.0.

    The only kind of RM that sees ground truth. A prompt without a known gold answer is
    unscorable (NaN), never 0.

    Args:
        name: the RM's name.
        task: the answer format (``gsm8k``, ``strategyqa``, ``mmlu``); see :mod:`laser.tasks`.
        gold: prompt text -> gold answer.
        data: alternatively a prompt JSONL file with ``prompt`` and ``answer`` fields.
        wrong: the score of a wrong or missing answer.
        tasks: prompt text -> its own answer format, for prompts of several tasks (else ``task``).
    """

    def __init__(
        self,
        name: str = "verifier",
        task: str = "gsm8k",
        gold: dict | None = None,
        data: str | None = None,
        wrong: float = 0.0,
        tasks: dict | None = None,
    ):
        from laser.tasks.extract import is_correct

        if gold is None and data is not None:
            from laser.tasks.datasets import read_prompts_jsonl

            gold = {ex.prompt: ex.answer for ex in read_prompts_jsonl(data) if ex.answer}
        self.name, self.task, self.gold, self.wrong = name, task, dict(gold or {}), wrong
        self.tasks = dict(tasks or {})
        self._is_correct = is_correct
        from laser.tasks.choice import parse_options

        self._options = parse_options  # an MMLU-style prompt's option texts: a reply may name the text

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        out = np.full(len(responses), np.nan)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            if p in self.gold:
                ok = self._is_correct(self.tasks.get(p, self.task), r, self.gold[p], options=self._options(p))
                out[i] = 1.0 if ok else self.wrong
        return out
