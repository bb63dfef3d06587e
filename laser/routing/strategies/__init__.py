"""Selection strategies (see :mod:`laser.routing.strategies.base`) and their registry.

``make_strategy`` maps ``selector.name`` to a strategy: the names in :data:`STRATEGIES` have
their own class; every other name is a :mod:`laser.bandits` selector run per batch (or per
prompt with ``selector.per_prompt``). ``check_strategy`` is what the config loader asks of them.
"""

from __future__ import annotations

import re

from laser.routing.strategies.bandit import CONTEXT_FREE, BanditPerBatch, BanditPerPrompt
from laser.routing.strategies.base import Strategy, Unit
from laser.routing.strategies.ensembles import AgreementEnsemble, ScoreEnsemble
from laser.routing.strategies.online import OnlineEnsembleStrategy
from laser.routing.strategies.oracle import make_oracle
from laser.routing.strategies.reliability import ReliabilityStrategy, make_reliability

#: name -> factory(rm_names, cfg) for the strategies that are not a plain bandit
STRATEGIES = {
    "score_ensemble": lambda names, cfg: ScoreEnsemble(),
    "agreement_ensemble": lambda names, cfg: AgreementEnsemble(),
    "online_ensemble": lambda names, cfg: OnlineEnsembleStrategy(
        len(names), eta=float(cfg.selector.kwargs.get("eta", 0.5)), seed=cfg.seed
    ),
    "oracle": make_oracle,
    "reliability": make_reliability,
}


def make_strategy(cfg, names: list[str], dim_fn, selector=None, per_prompt: bool | None = None) -> Strategy:
    """The run's strategy.

    Args:
        cfg: the run config (``selector`` section, ``seed``).
        names: the RM names (arm k = ``names[k]``).
        dim_fn: ``() -> int``, the context dimension (called only when the bandit uses contexts).
        selector: an already-built selector (e.g. a fitted classifier) instead of ``cfg.selector``.
        per_prompt: overrides ``cfg.selector.per_prompt`` (best-of-n routes per prompt).
    """
    s = cfg.selector
    if s.name in STRATEGIES:
        return STRATEGIES[s.name](names, cfg)
    needs_context = s.name not in CONTEXT_FREE and s.context != "none"
    if selector is None:
        from laser.bandits import make_selector

        kwargs = dict(s.kwargs)
        if s.name == "fixed":
            kwargs["arm"] = names.index(s.arm)
        if s.name in ("linucb", "sliding_linucb"):
            kwargs.setdefault("alpha", s.alpha)
        selector = make_selector(s.name, len(names), dim_fn() if needs_context else 1, seed=cfg.seed, **kwargs)
    cls = BanditPerPrompt if (s.per_prompt if per_prompt is None else per_prompt) else BanditPerBatch
    return cls(selector, s.name, needs_context)


def check_strategy(cfg, names: list[str]) -> list[str]:
    """The problems of a strategy's config, one line each (none for a bandit selector).

    The strategy is built as the run will build it, so its own factory checks its kwargs and its
    ``check`` the feedback; nothing is repeated in the config loader.

    Args:
        cfg: the run config. names: the RM names (empty: the rewards section is broken and
            already reported, so nothing is built).
    """
    s, problems, strategy = cfg.selector, [], Strategy
    if s.name not in STRATEGIES:
        return problems
    if names:
        try:
            strategy = STRATEGIES[s.name](names, cfg)
            if cfg.train.feedback not in ("auto", "auto_label_free"):  # those resolve against the data later
                strategy.check(cfg.train.feedback, 1)
        except ValueError as exc:  # named by its key; a message that names none is the selector's
            problems.append(str(exc) if re.match(r"[\w.\[\]]+[:=]", str(exc)) else f"selector.name={s.name}: {exc}")
    if s.per_prompt:
        problems.append(f"selector.per_prompt: {strategy.per_prompt_refused.format(name=s.name)}")
    return problems


__all__ = [
    "STRATEGIES",
    "check_strategy",
    "Strategy",
    "Unit",
    "make_strategy",
    "BanditPerBatch",
    "BanditPerPrompt",
    "ScoreEnsemble",
    "AgreementEnsemble",
    "OnlineEnsembleStrategy",
    "ReliabilityStrategy",
    "CONTEXT_FREE",
]
