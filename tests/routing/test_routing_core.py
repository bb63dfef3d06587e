"""The routing core (laser.routing) loads no framework, and its rules hold on a hand-made batch."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from laser.bandits import FixedSelector, RoundRobinSelector
from laser.rewards.base import CallableRM
from laser.routing import (
    LOWEST,
    AllRewardModelsDown,
    Batch,
    Local,
    NonFiniteReward,
    RewardPool,
    Router,
    load_state,
    save_state,
)
from laser.routing.strategies import BanditPerBatch, BanditPerPrompt


def test_routing_core_imports_no_framework():
    """A fresh interpreter imports laser.routing (and every module in it); none of torch,
    transformers, accelerate, trl or ray is loaded."""
    code = (
        "import sys, pkgutil, importlib, laser.routing as r\n"
        "for m in pkgutil.walk_packages(r.__path__, 'laser.routing.'): importlib.import_module(m.name)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'trl', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


ANSWERS = ["The answer is 3", "The answer is 5"]


def router(rms, per_prompt=False, selector=None, feedback="pair_accuracy", **kw):
    sel = selector or FixedSelector(len(rms), arm=0)
    cls = BanditPerPrompt if per_prompt else BanditPerBatch
    return Router(cls(sel, "fixed", False), RewardPool(rms), feedback, pairing="all", **kw)


def batch(texts_per_prompt, gold="3"):
    """One prompt per list of texts, task gsm8k, gold ``gold``, context-free."""
    b = Batch(
        [f"q{i}" for i in range(len(texts_per_prompt))],
        tasks=["gsm8k"] * len(texts_per_prompt),
        answers=[gold] * len(texts_per_prompt),
        contexts=np.zeros((len(texts_per_prompt), 1)),
    )
    b.add_responses(
        [t for ts in texts_per_prompt for t in ts], [i for i, ts in enumerate(texts_per_prompt) for _ in ts]
    )
    return b


def cycle(r, b):
    r.route(b)
    r.pairs(b)
    return r.learn(b, r.outcome(b))


def test_no_pair_rule_tied_distinct_is_lowest_identical_is_skipped():
    """A constant RM ties two different responses: no pair, learned as LOWEST (0, not in the
    normaliser's history); two identical responses: no RM could order them, skipped (no update)."""
    const = CallableRM(lambda p, r: 1.0, name="const")
    r = router([const, CallableRM(lambda p, r: 0.0, name="other")])
    raw, rewards = cycle(r, batch([ANSWERS]))
    assert raw == [None] and rewards == [LOWEST] and r.tied_ == 1 and r.selector.counts_.tolist() == [1, 0]
    raw, rewards = cycle(r, batch([[ANSWERS[0]] * 2]))
    assert raw == [None] and rewards == [None] and r.skipped_ == 1 and r.selector.counts_.tolist() == [1, 0]
    assert r.normalizer.history_ == []
    # per prompt: each prompt is its own unit
    rp = router([const, const.__class__(lambda p, r: 0.0, name="b")], per_prompt=True)
    raw, rewards = cycle(rp, batch([ANSWERS, [ANSWERS[1]] * 2]))
    assert rewards == [LOWEST, None] and rp.tied_ == 1 and rp.skipped_ == 1


def test_a_pair_is_learned_through_feedback_and_normaliser():
    """Scores 'is 3' > 'is 5' with gold 3: one pair, correct(chosen) - correct(rejected) = 1; the first
    normalised value is 0.5 (QuantileNormalizer with one value)."""
    r = router([CallableRM(lambda p, t: float("3" in t), name="right"), CallableRM(lambda p, t: 0.0, name="b")])
    raw, rewards = cycle(r, batch([ANSWERS]))
    assert raw == [1.0] and rewards == [0.5] and r.normalizer.history_ == [1.0]


def test_any_exception_is_isolated_masked_and_all_down_names_every_rm():
    """A local RM's bug (ZeroDivisionError, not a RewardModelError) masks its arm and the batch is
    decided again on the next arm; when the last one fails too, the error names both RMs."""

    def bug(prompts, responses):
        raise ZeroDivisionError("bug in my RM")

    ok = CallableRM(lambda p, t: float(len(t)), name="ok")
    r = router([CallableRM(bug, name="buggy", batched=True), ok], selector=RoundRobinSelector(2))
    b = batch([ANSWERS])
    scores = r.route(b)
    assert b.arms == [1] and np.isfinite(scores).all() and r.pool.down == {0}
    assert any("buggy" in e and "ZeroDivisionError: bug in my RM" in e for e in b.events)
    r.pool.rms[1] = CallableRM(bug, name="ok", batched=True)  # now the second RM breaks too
    with pytest.raises(AllRewardModelsDown, match="buggy: .*ZeroDivisionError.*; ok: .*ZeroDivisionError"):
        r.route(batch([ANSWERS]))


def test_nan_scores_are_unscorable_and_infinite_scores_mask_the_rm():
    nan_rm = CallableRM(lambda p, t: float("nan") if "5" in t else 1.0, name="nan")
    r = router([nan_rm, CallableRM(lambda p, t: 0.0, name="b")])
    b = batch([ANSWERS + ["The answer is 3."]])
    r.route(b)
    assert np.isnan(b.scores[1]) and r.pairs(b) == [[]]  # NaN never enters a pair (the other two tie)
    inf = router(
        [CallableRM(lambda p, t: float("inf"), name="inf"), CallableRM(lambda p, t: 0.0, name="b")],
        selector=RoundRobinSelector(2),
    )
    b = batch([ANSWERS])
    inf.route(b)
    assert inf.pool.down == {0} and b.arms == [1] and "infinite" in inf.pool.last_errors[0]


def test_nonfinite_feedback_stops_naming_the_arm_or_is_skipped():
    r = router([CallableRM(lambda p, t: float("3" in t), name="right"), CallableRM(lambda p, t: 0.0, name="b")])
    r.fb = dataclasses.replace(r.fb, fn=lambda s: float("inf"))
    with pytest.raises(NonFiniteReward, match=r"\(inf\), arm right"):
        cycle(r, batch([ANSWERS]))
    seen = []
    r.on_nonfinite = lambda arm, value: seen.append((arm, value))
    raw, rewards = cycle(r, batch([ANSWERS]))
    assert seen == [("right", float("inf"))] and rewards == [None] and r.normalizer.history_ == []


def test_counters_responses_scored_and_score_calls():
    """Two prompts routed per prompt by round robin (arms 0, 1), 3 responses each: each RM gets one
    score() call with 3 responses."""
    rms = [CallableRM(lambda p, t: 1.0, name=n) for n in "ab"]
    r = router(rms, per_prompt=True, selector=RoundRobinSelector(2))
    r.route(batch([ANSWERS + ["x"], ANSWERS + ["y"]]))
    assert r.pool.responses_scored.tolist() == [3, 3] and r.pool.score_calls.tolist() == [1, 1]
    assert r.counters()["score_calls"] == [1, 1]


def test_state_round_trip_through_the_atomic_writer(tmp_path):
    """A router saved with save_state (manifest, sha256) and loaded into a fresh one continues with
    identical decisions, rewards and counters."""

    def make():
        rms = [
            CallableRM(lambda p, t: float("3" in t) + 0.1 * len(t), name="a"),
            CallableRM(lambda p, t: float(len(t)), name="b"),
        ]
        from laser.bandits import make_selector

        return Router(
            BanditPerBatch(make_selector("exp3", 2, 1, seed=1), "exp3", False),
            RewardPool(rms),
            "pair_accuracy",
            pairing="all",
        )

    a = make()
    for _ in range(3):
        cycle(a, batch([ANSWERS + ["The answer is 33"]]))
    folder = save_state(tmp_path, 3, a.state_dict())
    sd, found = load_state(tmp_path, required=("normalizer.npz", "strategy.npz", "pool.json"))
    assert found == folder
    b = make()
    b.load_state_dict(sd)
    for _ in range(4):
        ba, bb = batch([ANSWERS + ["The answer is 33"]]), batch([ANSWERS + ["The answer is 33"]])
        assert cycle(a, ba) == cycle(b, bb) and ba.arms == bb.arms
    assert a.counters() == b.counters()
    with pytest.raises(ValueError, match="rm_names"):
        Router(
            BanditPerBatch(FixedSelector(2), "exp3", False),
            RewardPool([CallableRM(len, name="x")] * 2),
            "pair_accuracy",
        ).load_state_dict(sd)


def test_serve_routes_scores_once_and_learns_from_gold_answers():
    """A service's request: each prompt scored by its arm's RM only, then learned from."""
    calls = []
    rms = [CallableRM(lambda p, t, k=k: calls.append(k) or float("3" in t), name=f"rm{k}") for k in range(2)]
    r = router(rms, per_prompt=True, selector=RoundRobinSelector(2))
    scores = r.serve(batch([ANSWERS, ANSWERS]))
    assert scores.tolist() == [1.0, 0.0, 1.0, 0.0] and sorted(calls) == [0, 0, 1, 1]
    assert r.selector.counts_.tolist() == [1, 1] and r.batches_ == 1
    assert Local().sum([1, 2]) == [1.0, 2.0]
