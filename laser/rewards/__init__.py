"""Reward models: the protocol ``score(prompts, responses) -> np.ndarray`` and its adapters.

Heavy adapters (transformers models, HTTP clients) import lazily through
:func:`laser.rewards.factory.build_reward_models`.
"""

from laser.rewards.base import CallableRM, RewardModel, RewardModelError, check_scores

__all__ = ["CallableRM", "RewardModel", "RewardModelError", "check_scores", "build_reward_models"]


def build_reward_models(specs):
    """Build RMs from config specs; see :mod:`laser.rewards.factory`."""
    from laser.rewards.factory import build_reward_models as build

    return build(specs)
