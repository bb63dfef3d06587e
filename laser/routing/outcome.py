"""What a finished step, round or request yields, typed: the inputs of every feedback signal.

:class:`Outcome` is the whole unit's result: the policy update's loss terms (when there was an
update), and the per-pair and per-prompt correctness of the preference pairs against a reference
answer (gold, majority of the prompt's own responses, or gold where given else majority; see
:data:`laser.routing.feedback.REFERENCES`). :class:`Signal` is what one feedback function reads
about one unit a strategy learns from (the step, a prompt, an RM's share of the pairs).

Correctness of a pair is ``correct(chosen) - correct(rejected)`` in {-1, 0, 1}, with
``laser.tasks.extract.is_correct`` and the prompt's option texts; a unit's value is the mean over
its pairs (NaN: no pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from laser.routing.collectives import Collectives, Local
from laser.routing.feedback import REFERENCES, majority_answer, pair_correctness

NAN = float("nan")


@dataclass(frozen=True)
class Signal:
    """One learning unit's scalars (NaN where not computed).

    Attributes:
        loss: mean training loss of the unit's pairs before the update; ``loss_after`` after it.
        correct: mean pair correctness against the feedback's reference.
        n_pairs: the unit's pairs.
    """

    loss: float = NAN
    loss_after: float = NAN
    correct: float = NAN
    n_pairs: int = 0


@dataclass
class Correctness:
    """Pair correctness against one reference: ``mean`` over every process's pairs, per local
    prompt (NaN: no pairs) and per local pair (training order)."""

    reference: str
    mean: float = NAN
    per_prompt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_pair: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class Outcome:
    """Everything a finished unit yields.

    Attributes:
        n_pairs: pairs over every process.
        loss, loss_after: means over every process's pairs (NaN: no update, or no pairs).
        pair_loss: per local pair, training order; ``prompt_loss``/``prompt_loss_after`` per local prompt.
        correct: reference name -> :class:`Correctness` (the feedback's own reference, and any
            other one an adapter asked for to log).
        terms: other loss terms for logs only (``dpo``, ``nll``, ``grad_norm``).
        nonfinite: what was non-finite in the update (the step was not applied), else "".
    """

    n_pairs: int = 0
    loss: float = NAN
    loss_after: float = NAN
    pair_loss: np.ndarray | None = None
    prompt_loss: np.ndarray | None = None
    prompt_loss_after: np.ndarray | None = None
    correct: dict[str, Correctness] = field(default_factory=dict)
    terms: dict = field(default_factory=dict)
    nonfinite: str = ""

    def signal(self, reference: str | None) -> Signal:
        """The whole unit's :class:`Signal`, correctness against ``reference``."""
        c = self.correct.get(reference)
        return Signal(self.loss, self.loss_after, c.mean if c else NAN, self.n_pairs)

    def prompt_signals(self, batch, reference: str | None, coll: Collectives) -> list[Signal]:
        """One :class:`Signal` per prompt of the whole batch (gathered in rank order)."""
        n = len(batch.prompts)
        pairs = [len(p) for p in batch.pairs]
        loss = _or_nan(self.prompt_loss, n)
        after = _or_nan(self.prompt_loss_after, n)
        c = self.correct.get(reference)
        correct = _or_nan(c.per_prompt if c else None, n)
        local = [Signal(float(loss[i]), float(after[i]), float(correct[i]), pairs[i]) for i in range(n)]
        return [s for part in coll.all_gather(local) for s in part]

    def pair_signal(self, mask: np.ndarray, reference: str | None) -> Signal:
        """The :class:`Signal` of a subset of the local pairs (``mask`` over them, training order)."""
        c = self.correct.get(reference)
        loss = float(self.pair_loss[mask].mean())
        correct = float(c.per_pair[mask].mean()) if c is not None else NAN
        return Signal(loss, NAN, correct, int(mask.sum()))


def _or_nan(values, n: int) -> np.ndarray:
    return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)


def correctness(batch, reference: str, coll: Collectives | None = None) -> Correctness:
    """Pair correctness of ``batch.pairs`` against ``reference`` (a :data:`REFERENCES` key).

    The majority answer of a prompt is over all its responses; a prompt without a task has no
    answer to check (its pairs count 0). The mean is over every process's pairs.
    """
    coll = coll or Local()
    rule = REFERENCES[reference]
    per_prompt = np.full(len(batch.prompts), np.nan)
    diffs: list[float] = []
    for i, ps in enumerate(batch.pairs):
        if not ps:
            continue
        task, options = batch.tasks[i], batch.options[i]
        if not task:
            d = [0.0] * len(ps)
        else:
            mine = batch.responses_of(i)
            texts = [batch.texts[j] for j in mine]
            ref = rule(batch.answers[i], lambda t=task, x=texts, o=options: majority_answer(t, x, o))
            d = pair_correctness(task, batch.texts, ps, ref, options)
        per_prompt[i] = float(np.mean(d))
        diffs += d
    total, count = coll.sum([float(np.sum(diffs)), float(len(diffs))])
    return Correctness(reference, total / count if count else NAN, per_prompt, np.asarray(diffs, dtype=np.float64))


def finite(x: float) -> bool:
    return x is not None and math.isfinite(x)
