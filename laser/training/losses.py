"""Preference losses as pure functions of per-sequence log-probabilities.

All inputs are 1-D tensors with one entry per pair; every function returns one loss per pair
so callers choose the reduction (the loop takes the mean over the step's pairs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Direct Preference Optimisation loss (Rafailov et al. 2023), one value per pair.

    ``L = -log sigmoid(beta * [(pi_c - ref_c) - (pi_r - ref_r)])`` where ``pi_*`` and ``ref_*``
    are summed log-probabilities of the response tokens under the policy and the frozen
    reference. Computed with ``logsigmoid`` so large margins neither overflow nor underflow.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps:
            shape ``(P,)``.
        beta: the KL-strength temperature (> 0).

    Returns:
        shape ``(P,)`` loss per pair.
    """
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * margin)


def nll_loss(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """Length-normalised negative log-likelihood of the chosen responses (Iterative RPO).

    ``L = -logp(y_c | x) / |y_c|`` with ``|y_c|`` the number of response tokens.

    Args:
        chosen_logps: shape ``(P,)`` summed response log-probs.
        chosen_lengths: shape ``(P,)`` response token counts (>= 1).

    Returns:
        shape ``(P,)``.
    """
    return -chosen_logps / chosen_lengths.clamp(min=1).to(chosen_logps.dtype)


def laser_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    beta: float,
    nll_weight: float,
) -> dict[str, torch.Tensor]:
    """DPO plus weighted NLL on the chosen response; pure DPO when ``nll_weight == 0``.

    Returns:
        dict with per-pair tensors ``loss``, ``dpo`` and ``nll`` (``nll`` is reported even
        when its weight is 0, detached in that case so it adds no gradient).
    """
    dpo = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    nll = nll_loss(policy_chosen_logps, chosen_lengths)
    loss = dpo + nll_weight * nll if nll_weight else dpo
    return {"loss": loss, "dpo": dpo, "nll": nll if nll_weight else nll.detach()}
