"""Bandit feedback: what the selector is told about the arm it picked.

A feedback function maps a step's (or a prompt's) outcome to a raw reward, higher = better arm;
the loop normalises it with the quantile normaliser before ``selector.update``. Adding a signal
is one function plus one line in ``FEEDBACKS``.

The outcome is a dict with ``loss`` (mean training loss of the pairs before the update) and,
when the feedback asks for them, ``loss_after`` (the same pairs after the update) and
``pair_accuracy`` (mean over pairs of correct(chosen) - correct(rejected), checked against the
prompts' gold answers).
"""

from __future__ import annotations


def neg_loss(o: dict) -> float:
    """The paper's signal: ``r = -L`` (a low training loss is a good arm).

    Known failure: it favours RMs whose preferences the policy already satisfies, including a
    consistent but meaningless RM, over RMs that correct the policy's mistakes.
    """
    return -o["loss"]


def loss_decrease(o: dict) -> float:
    """Learning progress (Graves et al. 2017): ``r = L_before - L_after`` on the same pairs."""
    return o["loss"] - o["loss_after"]


def margin_gain(o: dict) -> float:
    """Relative progress ``r = (L_before - L_after) / L_before``: loss_decrease made scale-free."""
    return (o["loss"] - o["loss_after"]) / max(o["loss"], 1e-8)


def pair_accuracy(o: dict) -> float:
    """Does the RM's preference point the right way? ``r = mean(correct(y_c) - correct(y_r))``.

    In [-1, 1]; needs a gold answer and a known task for every prompt. No extra RM calls: the
    answer check is the task's own extraction.
    """
    return o["pair_accuracy"]


# name -> (function, what it needs beyond the loss: "after" and/or "labels")
FEEDBACKS = {
    "neg_loss": (neg_loss, ()),
    "loss_decrease": (loss_decrease, ("after",)),
    "margin_gain": (margin_gain, ("after",)),
    "pair_accuracy": (pair_accuracy, ("labels",)),
}
