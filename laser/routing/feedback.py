"""Bandit feedback: what the selector is told about the arm it picked, in one table.

A feedback function maps one unit's :class:`~laser.routing.outcome.Signal` (a step, a round, a
prompt, or an RM's share of the pairs) to a raw reward, higher = better arm; the router
normalises it with the quantile normaliser before the strategy learns. Each feedback declares in
its :data:`FEEDBACKS` line what it needs: ``loss`` (the policy update's loss on the pairs),
``after`` (the loss after the update), ``labels`` (a gold answer per prompt) or ``answers`` (an
answer extractor for the prompts' task), and, for answer-based signals, the ``reference`` each
pair is checked against (:data:`REFERENCES`). A new signal is one function and one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def neg_loss(o) -> float:
    """The paper's signal: ``r = -L`` (a low training loss is a good arm).

    Known failure: it favours RMs whose preferences the policy already satisfies, including a
    consistent but meaningless RM, over RMs that correct the policy's mistakes.
    """
    return -o.loss


def loss_decrease(o) -> float:
    """Learning progress (Graves et al. 2017): ``r = L_before - L_after`` on the same pairs."""
    return o.loss - o.loss_after


def margin_gain(o) -> float:
    """Relative progress ``r = (L_before - L_after) / L_before``: loss_decrease made scale-free."""
    return (o.loss - o.loss_after) / max(o.loss, 1e-8)


def pair_accuracy(o) -> float:
    """Does the RM's preference point the right way? ``r = mean(correct(y_c) - correct(y_r))``.

    In [-1, 1]; needs a gold answer and a known task for every prompt. No extra RM calls: the
    answer check is the task's own extraction.
    """
    return o.correct


def majority_pair_accuracy(o) -> float:
    """``pair_accuracy`` against the majority answer of the prompt's own samples instead of a gold
    answer: needs no labels, only the task's answer extractor.

    It rewards an RM for preferring the answer the policy gives most often, which resists the
    loss-as-reward failure (a consistent but meaningless RM orders pairs by something other than
    the answer, so its pairs score about 0) but cannot tell a right majority from a wrong one.
    """
    return o.correct


def mixed_pair_accuracy(o) -> float:
    """``pair_accuracy`` where the prompt has a gold answer, ``majority_pair_accuracy`` where it has
    none: uses whatever labels the prompts carry (a fraction f labelled: f = 1 is pair_accuracy,
    f = 0 is majority_pair_accuracy)."""
    return o.correct


def majority_answer(task: str, texts: list[str], options: list[str] | None = None) -> str | None:
    """The most common extracted answer among ``texts`` (ties: the one that appears first);
    None when no text has an answer. ``options``: a multiple-choice prompt's option texts."""
    from laser.tasks.extract import extract_answer

    answers = [a for a in (extract_answer(task, t, options=options) for t in texts) if a is not None]
    if not answers:
        return None
    counts = {a: answers.count(a) for a in answers}  # dicts keep first-appearance order
    return max(counts, key=counts.get)


def pair_correctness(
    task: str, texts: list[str], pairs: list[tuple[int, int]], reference, options: list[str] | None = None
) -> list[float]:
    """``correct(chosen) - correct(rejected)`` per (chosen, rejected) index pair into ``texts``,
    checked against ``reference`` (a gold or majority answer; None: nothing is correct)."""
    from laser.tasks.extract import is_correct

    if reference is None:
        return [0.0] * len(pairs)
    return [
        float(is_correct(task, texts[c], reference, options=options))
        - float(is_correct(task, texts[r], reference, options=options))
        for c, r in pairs
    ]


@dataclass(frozen=True)
class Feedback:
    """One feedback signal: its function and what it needs.

    Attributes:
        fn: ``Signal -> raw reward``.
        needs: a subset of ``("loss", "after", "labels", "answers")``.
        reference: for answer-based signals, the key of :data:`REFERENCES` pairs are checked against.
    """

    fn: Callable
    needs: tuple[str, ...] = ()
    reference: str | None = None


def _labelled(gold) -> bool:
    return gold is not None and gold != ""


#: reference name -> (gold answer, () -> majority answer) -> the answer a prompt's pairs are checked
#: against (None: nothing counts as correct)
REFERENCES = {
    "gold": lambda gold, majority: gold if _labelled(gold) else None,
    "majority": lambda gold, majority: majority(),
    "gold_or_majority": lambda gold, majority: gold if _labelled(gold) else majority(),
}

FEEDBACKS = {
    "neg_loss": Feedback(neg_loss, ("loss",)),
    "loss_decrease": Feedback(loss_decrease, ("loss", "after")),
    "margin_gain": Feedback(margin_gain, ("loss", "after")),
    "pair_accuracy": Feedback(pair_accuracy, ("labels",), "gold"),
    "majority_pair_accuracy": Feedback(majority_pair_accuracy, ("answers",), "majority"),
    "mixed_pair_accuracy": Feedback(mixed_pair_accuracy, ("answers",), "gold_or_majority"),
}


def resolve_feedback(name: str, examples: list) -> str:
    """The feedback a run uses, choosing by what the prompts carry for the two automatic names.

    ``auto``: ``pair_accuracy`` when every prompt has a gold answer and a task; ``mixed_pair_accuracy``
    when some have a gold answer and all have a task; else as ``auto_label_free``.
    ``auto_label_free`` (uses no gold answer): ``majority_pair_accuracy`` when every prompt has a
    task (an answer format to extract), else ``neg_loss``.

    Raises:
        ValueError: a label-based feedback was asked for but some prompt has no gold answer, or an
            answer-based one but some prompt has no task.
    """
    labelled = all(ex.answer and ex.task for ex in examples)
    tasks = bool(examples) and all(ex.task for ex in examples)
    if name == "auto" and examples and labelled:
        return "pair_accuracy"
    if name == "auto" and tasks and any(ex.answer for ex in examples):
        return "mixed_pair_accuracy"
    if name in ("auto", "auto_label_free"):
        return "majority_pair_accuracy" if tasks else "neg_loss"
    needs = FEEDBACKS[name].needs
    if "labels" in needs and not labelled:
        missing = next(ex.id for ex in examples if not (ex.answer and ex.task))
        raise ValueError(
            f"train.feedback={name} needs a gold answer and a task for every prompt; prompt {missing!r} has none"
        )
    if "answers" in needs and not all(ex.task for ex in examples):
        missing = next(ex.id for ex in examples if not ex.task)
        raise ValueError(
            f"train.feedback={name} needs a task (an answer format) for every prompt; prompt {missing!r} has none"
        )
    return name
