"""Selectors by name: the one dict a new bandit is added to, and ``make_selector``."""

from __future__ import annotations

import inspect

from laser.bandits.base import Selector
from laser.bandits.baselines import FixedSelector, RandomSelector, RoundRobinSelector
from laser.bandits.bayes_router import BayesRouterSelector
from laser.bandits.epsilon_greedy import EpsilonGreedy
from laser.bandits.exp3 import Exp3
from laser.bandits.lints import LinTS
from laser.bandits.linucb import LinUCB
from laser.bandits.sliding_linucb import SlidingWindowLinUCB
from laser.bandits.ucb1 import UCB1

#: name -> class; ``make_selector`` and configs use these names.
SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls
    for cls in (
        LinUCB,
        LinTS,
        SlidingWindowLinUCB,
        Exp3,
        UCB1,
        EpsilonGreedy,
        FixedSelector,
        RandomSelector,
        RoundRobinSelector,
        BayesRouterSelector,
    )
}


def make_selector(name: str, n_arms: int, dim: int, seed: int, **kwargs) -> Selector:
    """Build a selector from its name and options.

    Args:
        name: a key of :data:`SELECTORS` (e.g. "linucb", "exp3", "fixed").
        n_arms: number of arms (reward models).
        dim: context dimension; ignored by non-contextual selectors.
        seed: seed of the selector's own RNG.
        **kwargs: the selector's other constructor arguments (e.g. ``alpha=0.1``, ``arm=2``).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        TypeError: an option the selector does not take (named in the message).
    """
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; valid names: {', '.join(sorted(SELECTORS))}")
    cls = SELECTORS[name]
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "n_arms", "dim", "seed")]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(
            f"selector {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(params) or '(none)'}"
        )
    if cls.contextual:
        return cls(n_arms, dim, seed=seed, **kwargs)
    return cls(n_arms, seed=seed, **kwargs)
