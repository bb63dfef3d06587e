"""Config checks of the non-bandit strategies come from the strategies themselves
(``laser.routing.strategies.check_strategy``): the config loader reports, before anything is built,
the errors the run would raise when it builds the strategy, each named by its key."""

from __future__ import annotations

import pytest

from laser.config import ConfigError, load_config
from laser.routing.strategies.online import OnlineEnsembleStrategy

RMS = [{"name": n, "type": "length"} for n in ("a", "b", "c")]


def problems(selector: dict, rewards=RMS, feedback: str = "auto") -> list[str]:
    try:
        load_config(
            data={"rewards": rewards, "selector": selector, "train": {"feedback": feedback}}, require_data=False
        )
    except ConfigError as exc:
        return exc.problems
    return []


def test_reliability_with_two_rms_is_refused_by_the_config_naming_the_selector():
    """The reliability router refuses fewer than three RMs when built; the loader now says so first."""
    got = problems({"name": "reliability"}, rewards=RMS[:2])
    assert len(got) == 1 and got[0].startswith("selector.name=reliability: ") and "three" in got[0]
    assert problems({"name": "reliability"}) == []


def test_each_strategy_says_why_per_prompt_does_not_apply_to_it():
    """No strategy but the ensembles is told it is an ensemble; oracle and reliability name themselves."""
    oracle = problems({"name": "oracle", "per_prompt": True, "kwargs": {"arms_by_group": {"x": "a"}}})
    reliability = problems({"name": "reliability", "per_prompt": True})
    online = problems({"name": "online_ensemble", "per_prompt": True})
    assert oracle == ["selector.per_prompt: not meaningful with the oracle (it picks each prompt's RM by its group)"]
    assert reliability == [
        "selector.per_prompt: not meaningful with selector.name=reliability "
        "(it decides how each prompt is scored itself)"
    ]
    assert online == ["selector.per_prompt: not meaningful with an ensemble (every RM scores every prompt)"]
    assert problems({"name": "linucb", "per_prompt": True}) == []  # a bandit routes per prompt


def test_config_and_run_refuse_a_feedback_with_the_same_message():
    """online_ensemble + margin_gain: the loader's line is the strategy's own check (one source);
    'auto' is resolved against the data later, so the loader lets it through."""
    got = problems({"name": "online_ensemble"}, feedback="margin_gain")
    with pytest.raises(ValueError) as run_time:
        OnlineEnsembleStrategy(3).check("margin_gain", 1)
    assert got == [str(run_time.value)]
    assert got[0].startswith("train.feedback: margin_gain is not computed per pair")
    assert problems({"name": "online_ensemble"}, feedback="auto") == []
