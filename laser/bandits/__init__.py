"""Bandits and baseline rules that pick which reward model scores a batch (numpy only).

Every selector shares the :class:`Selector` interface (``select``, ``update``, ``scores``,
``select_batch``, ``update_batch``, arm masking, ``state_dict``); build one by name with
:func:`make_selector`. :class:`QuantileNormalizer` turns raw feedback into rewards in [0, 1].
"""

from laser.bandits.base import NoArmAvailable, Selector
from laser.bandits.baselines import FixedSelector, RandomSelector, RoundRobinSelector
from laser.bandits.bayes_router import BayesRouterSelector
from laser.bandits.classifier import ClassifierSelector
from laser.bandits.epsilon_greedy import EpsilonGreedy
from laser.bandits.exp3 import Exp3
from laser.bandits.factory import SELECTORS, make_selector
from laser.bandits.linear import LinearSelector
from laser.bandits.lints import LinTS
from laser.bandits.linucb import LinUCB, ucb_scores
from laser.bandits.normalizer import QuantileNormalizer
from laser.bandits.online_ensemble import OnlineEnsemble, pair_agreement
from laser.bandits.sliding_linucb import SlidingWindowLinUCB
from laser.bandits.ucb1 import UCB1

__all__ = [
    "SELECTORS",
    "UCB1",
    "EpsilonGreedy",
    "Exp3",
    "FixedSelector",
    "LinTS",
    "LinUCB",
    "LinearSelector",
    "NoArmAvailable",
    "QuantileNormalizer",
    "RandomSelector",
    "RoundRobinSelector",
    "Selector",
    "SlidingWindowLinUCB",
    "make_selector",
    "ucb_scores",
    "ClassifierSelector",
    "OnlineEnsemble",
    "pair_agreement",
    "BayesRouterSelector",
]
