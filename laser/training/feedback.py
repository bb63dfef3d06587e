"""Bandit feedback: what the selector is told about the arm it picked.

A feedback function maps a step's :class:`StepOutcome` to a raw reward (higher = better arm);
the loop then normalises it with the quantile normaliser before ``selector.update``. Adding a
signal is one function plus one line in ``FEEDBACKS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StepOutcome:
    """What one training step produced, for the feedback function.

    Attributes:
        loss: mean training loss over the step's pairs, before the update.
        loss_after: the same pairs' mean loss after the update (only computed when the
            feedback needs it, else None).
        prompt_loss: per-prompt mean loss before the update (NaN where a prompt had no pairs).
        prompt_loss_after: per-prompt mean loss after the update, when computed.
    """

    loss: float
    loss_after: float | None = None
    prompt_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    prompt_loss_after: np.ndarray | None = None


def neg_loss(loss: float, loss_after: float | None) -> float:
    """The paper's signal: ``r = -L`` (a low training loss is a good arm)."""
    return -loss


def loss_decrease(loss: float, loss_after: float | None) -> float:
    """Learning progress (Graves et al. 2017): ``r = L_before - L_after`` on the same pairs.

    Rewards RMs whose preferences the update actually moved the policy towards, instead of
    preferences the policy already satisfies (which give a low loss but teach nothing).
    """
    return loss - loss_after


def margin_gain(loss: float, loss_after: float | None) -> float:
    """Relative progress ``r = (L_before - L_after) / L_before``: loss_decrease made scale-free."""
    return (loss - loss_after) / max(loss, 1e-8)


# name -> (function, whether it needs the loss after the update)
FEEDBACKS = {"neg_loss": (neg_loss, False), "loss_decrease": (loss_decrease, True),
             "margin_gain": (margin_gain, True)}
