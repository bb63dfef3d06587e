"""The reliability router (laser.routing.reliability) and its routing strategy ``reliability``."""

import json

import numpy as np
import pytest

from laser.routing.reliability import ReliabilityRouter, pair_votes


def columns_up_to_sign(v):
    """The vote columns with each column's sign normalised (first non-zero vote +1), sorted."""
    out = []
    for col in v.T:
        nz = col[col != 0]
        out.append(tuple(int(x) for x in (col * (nz[0] if len(nz) else 1))))
    return sorted(out)


def test_pair_votes_keeps_pairs_with_different_answers_and_ties_abstain():
    """3 RMs x 3 responses, answers (7, 7, 9): only pairs (0, 2) and (1, 2) carry a preference.
    RM0 scores (1, 2, 3): prefers 2 on both -> (-1, -1) as (first - second) with first < second;
    RM1 scores (5, 5, 5): ties, abstains (0, 0); RM2 scores (3, NaN, 1): (+1, 0)."""
    s = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [3.0, np.nan, 1.0]])
    v = pair_votes(s, ["7", "7", "9"], ["a", "b", "c"], np.random.default_rng(0))
    assert v.shape == (3, 2) and v.dtype == np.int8
    expected = np.array([[-1, -1], [0, 0], [1, 0]])  # columns (0, 2), (1, 2) in that orientation
    assert columns_up_to_sign(v) == columns_up_to_sign(expected)


def test_pair_votes_free_form_uses_distinct_texts_and_caps_the_pairs():
    s = np.arange(15, dtype=float).reshape(3, 5)
    texts = ["x", "x", "y", "z", "w"]  # one duplicate text: C(5,2) - 1 = 9 pairs
    assert pair_votes(s, None, texts, np.random.default_rng(0)).shape == (3, 9)
    assert pair_votes(s, None, texts, np.random.default_rng(0), max_pairs=4).shape == (3, 4)
    assert pair_votes(s, ["1"] * 5, texts, np.random.default_rng(0)).shape == (3, 0)  # one answer: no pair


def feed(router, group, acc, rng, n_pairs=24):
    y = rng.choice([-1, 1], n_pairs)
    v = np.where(rng.random((len(acc), n_pairs)) < np.asarray(acc)[:, None], y, -y)
    router.observe(group, v)


def run(router, groups_acc, steps, rng, batch=8):
    for step in range(steps):
        g = list(groups_acc)[step % len(groups_acc)]
        _, probes = router.plan([g] * batch)
        for p in probes:
            if p:
                feed(router, g, groups_acc[g], rng)
        if any(probes):
            router.refit(g)


def test_router_finds_each_groups_best_rm_with_an_anchor():
    """Two groups whose experts mirror each other (0.95 / 0.05), generalist 0.75 as anchor:
    each group is routed to its own expert after warm-up."""
    groups = {"math": [0.95, 0.05, 0.75, 0.5, 0.45], "logic": [0.05, 0.95, 0.75, 0.5, 0.45]}
    r = ReliabilityRouter(5, anchor=2, warmup=4, probe_share=0.1, seed=0)
    assert r.best("math") == (2, "warm-up")  # before any vote: the anchor
    run(r, groups, 20, np.random.default_rng(0))
    assert r.best("math") == (0, "estimate") and r.best("logic") == (1, "estimate")
    r.mask_arm(0)  # the math expert goes down: the next best up RM
    assert r.best("math") == (2, "estimate")


def test_probes_stay_within_the_share_and_go_to_uncertain_groups():
    """After warm-up at most probe_share of the prompts are probes; a group whose best RM is clear
    (uncertainty 0, floored at min_uncertainty) gets fewer probes than one whose estimates are close."""
    groups = {"clear": [0.95, 0.3, 0.75, 0.5, 0.45], "close": [0.66, 0.65, 0.64, 0.5, 0.45]}
    r = ReliabilityRouter(5, anchor=2, warmup=4, probe_share=0.1, min_uncertainty=0.1, seed=1)
    run(r, groups, 80, np.random.default_rng(1))
    seen, probes = r.after_warmup_
    assert probes <= 0.1 * seen + 1
    assert r.groups_["close"].uncertainty > r.groups_["clear"].uncertainty
    assert r.groups_["close"].probes > 1.3 * r.groups_["clear"].probes


def test_probes_keep_refreshing_so_the_route_follows_a_moving_policy():
    """One group, RM 0 best for 30 steps, then RM 1 (the policy moved: its samples now suit the
    other RM). With the uncertainty floored at 0.25 the probes continue at the share and the
    window of 600 pairs ages the old votes out: the route moves to RM 1. With no floor, a clear
    group's uncertainty is 0, it is never probed again, and the route stays on the stale RM 0."""
    before, after = [0.95, 0.2, 0.75, 0.5, 0.45], [0.2, 0.95, 0.75, 0.5, 0.45]
    routes = {}
    for floor in (0.25, 0.0):
        r = ReliabilityRouter(5, anchor=2, warmup=4, probe_share=0.2, window=600, min_uncertainty=floor, seed=0)
        rng = np.random.default_rng(4)
        run(r, {"g": before}, 30, rng)
        assert r.best("g") == (0, "estimate") and r.groups_["g"].uncertainty == 0.0
        probes_then = r.groups_["g"].probes
        run(r, {"g": after}, 60, rng)
        routes[floor] = (r.best("g")[0], r.groups_["g"].probes - probes_then)
    assert routes[0.25][0] == 1 and routes[0.25][1] >= 0.2 * 60 * 8 * 0.5  # at least half the share probed
    assert routes[0.0] == (0, 0)


def test_shared_error_group_falls_back_to_the_anchor():
    """A group where RMs 0, 3, 4 share errors on 35% of pairs is flagged and routed to the anchor."""
    r = ReliabilityRouter(5, anchor=2, warmup=40, seed=0)
    rng = np.random.default_rng(3)
    for _ in range(40):
        y = rng.choice([-1, 1], 30)
        v = np.where(rng.random((5, 30)) < np.array([0.85, 0.15, 0.75, 0.7, 0.65])[:, None], y, -y)
        shared = rng.random(30) < 0.35
        for k in (0, 3, 4):
            follow = shared & (rng.random(30) < 0.85)
            v[k, follow] = -y[follow]
        r.observe("g", v)
    st = r.refit("g")
    assert not st.ok
    arm, status = r.best("g")
    assert arm == 2 and status.startswith("fallback")


def test_without_an_anchor_a_group_without_a_fit_keeps_one_arm_drawn_from_its_name():
    """No anchor, no labelled pairs: every prompt of a group goes to the same RM (a per-prompt draw
    would mix several RMs' scales in one group); different groups spread over the arms."""
    r = ReliabilityRouter(3, anchor=None, seed=0)
    arms = {r.plan(["g"])[0][0] for _ in range(30)}
    assert len(arms) == 1 and r.best("g")[1] == "warm-up"
    spread = {r.plan([f"group-{i}"])[0][0] for i in range(30)}
    assert spread == {0, 1, 2}
    r.mask_arm(next(iter(arms)))  # the group's arm is down: another one, still the same for every prompt
    assert len({r.best("g")[0] for _ in range(5)}) == 1 and r.best("g")[0] not in arms


def test_without_an_anchor_the_fallback_is_the_rm_best_on_labelled_pairs():
    """Labelled pairs (chosen first): RM 1 votes +1 on 9 of 10, RM 0 on 6, RM 2 on 3, so a group
    without a trusted fit falls back to RM 1."""
    r = ReliabilityRouter(3, anchor=None, seed=0)
    v = -np.ones((3, 10), np.int8)
    v[0, :6], v[1, :9], v[2, :3] = 1, 1, 1
    r.add_labelled("g", v)
    assert r.best("g") == (1, "warm-up")


def test_state_round_trip_is_exact_and_continues_identically():
    groups = {"a": [0.9, 0.2, 0.7, 0.5, 0.5], "b": [0.2, 0.9, 0.7, 0.5, 0.5]}
    r = ReliabilityRouter(5, anchor=2, seed=5)
    run(r, groups, 12, np.random.default_rng(0))
    sd = r.state_dict()
    r2 = ReliabilityRouter(5, anchor=2, seed=5)
    r2.load_state_dict({k: np.array(str(v)) for k, v in sd.items()})
    assert str(r2.state_dict()["router"]) == str(sd["router"])
    run(r, groups, 10, np.random.default_rng(7))
    run(r2, groups, 10, np.random.default_rng(7))
    assert str(r2.state_dict()["router"]) == str(r.state_dict()["router"])
    with pytest.raises(ValueError, match="hyper-parameters differ"):
        ReliabilityRouter(5, anchor=1, seed=5).load_state_dict(sd)


def test_fewer_than_three_rms_is_refused():
    with pytest.raises(ValueError, match="at least three reward models"):
        ReliabilityRouter(2)


# ----- the training strategy -------------------------------------------------------------
def strategy_setup(tmp_path, iterations=2, **kwargs):
    from helpers import make_tiny_policy

    from laser.config import load_config
    from laser.rewards.rules import LengthRM, RegexRM
    from laser.tasks.base import Example

    examples = [
        Example(id=f"p{i}", prompt=f"{i}+{i}=", answer=str(2 * i), task="gsm8k", domain="even" if i % 2 == 0 else "odd")
        for i in range(8)
    ]
    specs = [
        {"name": "ones", "type": "regex", "pattern": "1"},
        {"name": "long", "type": "length"},
        {"name": "twos", "type": "regex", "pattern": "2"},
    ]
    cfg = load_config(
        data={
            "output_dir": str(tmp_path),
            "seed": 3,
            "rewards": specs,
            "selector": {"name": "reliability", "kwargs": {"anchor": "long", "warmup": 2, "min_votes": 2, **kwargs}},
            "train": {
                "iterations": iterations,
                "batch_size": 4,
                "n_samples": 6,
                "max_new_tokens": 10,
                "lr": 1e-2,
                "pairs_per_prompt": 3,
            },
        },
        require_data=False,
    )
    rms = [RegexRM("ones", "1"), LengthRM("long"), RegexRM("twos", "2")]
    return cfg, make_tiny_policy(), rms, examples


def test_strategy_scores_probes_with_every_rm_and_the_rest_with_one(tmp_path):
    """RM calls = responses + (K - 1) x probe responses; the log carries probes, routing and timing."""
    from laser.training.loop import Trainer

    cfg, policy, rms, examples = strategy_setup(tmp_path)
    tr = Trainer(cfg, policy, rms, examples, show_progress=False)
    summary = tr.run()
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    probes = sum(r["probes"] for r in log)
    assert probes >= 4  # warm-up: two probe prompts per group
    assert sum(summary["responses_scored"]) == 2 * 8 * 6 + 2 * probes * 6
    assert all({"routing", "label_model_s", "votes"} <= set(r) for r in log)
    assert all(r["routing"][g]["status"] for r in log for g in r["routing"])


def test_strategy_resumes_exactly(tmp_path):
    """One iteration, then a resumed second one == two uninterrupted iterations (arms and router state)."""
    from laser.training.loop import Trainer

    cfg, policy, rms, ex = strategy_setup(tmp_path / "ref", iterations=2)
    ref = Trainer(cfg, policy, rms, ex, show_progress=False)
    ref.run()
    cfg1, policy1, rms1, _ = strategy_setup(tmp_path / "cut", iterations=1)
    Trainer(cfg1, policy1, rms1, ex, show_progress=False).run()
    cfg2, policy2, rms2, _ = strategy_setup(tmp_path / "cut", iterations=2)
    resumed = Trainer(cfg2, policy2, rms2, ex, show_progress=False)
    resumed.run()
    arms = [
        [json.loads(line)["prompt_arms"] for line in open(p / "log.jsonl")]
        for p in (tmp_path / "ref", tmp_path / "cut")
    ]
    assert arms[0] == arms[1]
    assert str(ref.strategy.state_dict()["router"]) == str(resumed.strategy.state_dict()["router"])


@pytest.mark.parametrize("kwargs, match", [({"bogus": 1}, "unknown key"), ({"anchor": "nope"}, "unknown reward model")])
def test_strategy_config_errors(tmp_path, kwargs, match):
    from laser.config import ConfigError
    from laser.routing.strategies import make_strategy

    cfg, _, _, _ = strategy_setup(tmp_path)
    cfg.selector.kwargs.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_strategy(cfg, ["ones", "long", "twos"], lambda: 1)
    # the config loader builds the strategy too (check_strategy): the same error, before any model loads
    with pytest.raises(ConfigError, match=match):
        strategy_setup(tmp_path, **kwargs)
