"""The demo's reward models: protocol, determinism and measured reliability profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from laser.bench.rms import (
    SyntheticRM,
    make_demo_rms,
    measure_reliability,
    quality,
)
from laser.bench.tasks import (
    DOMAINS,
    make_benchmark,
    worked_response,
    wrong_response,
)
from laser.rewards.base import RewardModel

OWN = {"math_expert": {"arith", "count"}, "logic_expert": {"compare", "choice"}}


@pytest.fixture(scope="module")
def rms():
    return {rm.name: rm for rm in make_demo_rms(seed=0)}


@pytest.fixture(scope="module")
def reliability(rms):
    examples = make_benchmark(200, seed=0, split="test")
    return {name: measure_reliability(rm, examples, seed=0) for name, rm in rms.items()}


def test_five_named_rms_follow_the_protocol(rms):
    assert list(rms) == ["math_expert", "logic_expert", "generalist", "length_lover", "noise"]
    prompts = [e.prompt for e in make_benchmark(3, seed=1)]
    responses = [worked_response(p) for p in prompts]
    for rm in rms.values():
        assert isinstance(rm, RewardModel)
        scores = rm.score(prompts, responses)
        assert scores.dtype == np.float64 and scores.shape == (len(prompts),)
        assert np.isfinite(scores).all()
        np.testing.assert_array_equal(scores, rm.score(prompts, responses))  # consistent
        with pytest.raises(ValueError, match=rm.name):
            rm.score(prompts, responses[:-1])


@pytest.mark.parametrize("name", ["math_expert", "logic_expert"])
def test_specialist_reliable_on_own_domains_random_elsewhere(reliability, name):
    for domain, share in reliability[name].items():
        if domain in OWN[name]:
            assert share >= 0.9, (name, domain, share)
        else:
            assert 0.4 <= share <= 0.6, (name, domain, share)


def test_generalist_between_specialist_and_chance(reliability):
    """score = right + 1.2 z, z ~ N(0, 1) per pair, so P(right > wrong) = Phi(1 / (1.2 sqrt 2))
    = Phi(0.589) = 0.722; with 200 pairs per domain the standard error is about 0.032."""
    expected = 0.5 * (1 + math.erf(1 / (1.2 * math.sqrt(2)) / math.sqrt(2)))
    assert abs(expected - 0.722) < 1e-3
    for domain, share in reliability["generalist"].items():
        assert 0.62 <= share <= 0.82, (domain, share)
        assert share < min(reliability[e][domain] for e in OWN if domain in OWN[e])


def test_noise_and_length_are_near_chance_on_right_vs_wrong(reliability):
    for name in ("noise", "length_lover"):
        for domain, share in reliability[name].items():
            assert 0.4 <= share <= 0.6, (name, domain, share)


def test_length_lover_prefers_the_longer_response(rms):
    rm = rms["length_lover"]
    prompt = make_benchmark(1, seed=0)[0].prompt
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = ("x" * int(n) for n in rng.choice(np.arange(1, 60), size=2, replace=False))
        sa, sb = rm.score([prompt, prompt], [a, b])
        assert (sa > sb) == (len(a) > len(b))


def test_every_domain_has_a_reliable_specialist(reliability):
    for domain in DOMAINS:
        assert max(reliability[e][domain] for e in OWN) >= 0.9


def test_quality_golden_values():
    """Partial credits, derived by hand from `quality`'s rules:
    arith 12+6*3 = 30, answer 33: 0.5 / (1 + |33 - 30|) = 0.125;
    compare 38+29 = 67 > 65 so 'yes'; 'no' with the right sum written: 0.75*0 + 0.25*1 = 0.25;
    choice max is C (85); answering B (42, rank 2 of 0..3): 0.5 * 2 / 3 = 1/3."""
    assert quality("12+6*3=?\n", "6*3=18. 12+18=33. The answer is 33") == pytest.approx(0.125)
    assert quality("12+6*3=?\n", "The answer is 30") == 1.0
    assert quality("Is 38+29>65?\n", "38+29=67. 67<65. The answer is no") == 0.25
    assert quality("Is 38+29>65?\n", "38+29=67. 67>65. The answer is yes") == 1.0
    assert quality("Max? A.17 B.42 C.85 D.23\n", "The answer is B") == pytest.approx(1 / 3)
    assert quality("Max? A.17 B.42 C.85 D.23\n", "gibberish") == 0.0
    assert quality("How many a in abca?\n", "The answer is 2") == 1.0
    assert quality("Tell me a story\n", "Once upon a time") is None


def test_experts_rank_the_right_answer_first_among_many_wrong(rms):
    """No gold is passed to score(): the experts solve the prompt themselves."""
    rng = np.random.default_rng(1)
    for e in make_benchmark(20, seed=3, split="test"):
        expert = rms["math_expert"] if e.domain in OWN["math_expert"] else rms["logic_expert"]
        responses = [worked_response(e.prompt)] + [wrong_response(e, rng) for _ in range(7)]
        scores = expert.score([e.prompt] * len(responses), responses)
        assert int(np.argmax(scores)) == 0, (e, responses, scores)


def test_distinct_responses_rarely_tie(rms):
    rng = np.random.default_rng(2)
    tied = total = 0
    for e in make_benchmark(30, seed=4, split="test"):
        responses = sorted({worked_response(e.prompt)} | {wrong_response(e, rng) for _ in range(7)})
        for rm in rms.values():
            s = rm.score([e.prompt] * len(responses), responses)
            i, j = np.triu_indices(len(s), k=1)
            tied += int((s[i] == s[j]).sum())
            total += len(i)
    assert total > 1000 and tied / total < 0.01


def test_noise_depends_on_seed_and_name():
    prompts = [e.prompt for e in make_benchmark(20, seed=0)]
    responses = [worked_response(p) for p in prompts]
    a = SyntheticRM("noise", "noise", seed=0).score(prompts, responses)
    b = SyntheticRM("noise", "noise", seed=1).score(prompts, responses)
    c = SyntheticRM("other", "noise", seed=0).score(prompts, responses)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert ((a >= 0) & (a < 1)).all()


def test_foreign_prompts_get_finite_uninformative_scores(rms):
    prompts = ["Write a haiku\n"] * 2
    for rm in rms.values():
        assert np.isfinite(rm.score(prompts, ["short", "a longer response"])).all()


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match="unknown kind"):
        SyntheticRM("x", "oracle")
    with pytest.raises(ValueError, match="unknown domains"):
        SyntheticRM("x", "expert", ("poetry",))


def test_generalist_judges_the_final_answer_not_the_worked_steps(rms):
    """On compare, a right verdict after a wrong sum is still right for the generalist: it beats
    a wrong verdict after a right sum about 72% of the time (see the generalist test above)."""
    wins = []
    for e in make_benchmark(200, seed=5, split="test", domains=("compare",)):
        a, b = (int(x) for x in e.prompt[3:].split(">")[0].split("+"))
        c = int(e.prompt.split(">")[1].rstrip("?\n"))
        s, verdict = a + b, e.answer
        wrong_verdict = "no" if verdict == "yes" else "yes"
        right = f"{a}+{b}={s + 1}. {s + 1}{'>' if verdict == 'yes' else '<'}{c}. The answer is {verdict}"
        wrong = f"{a}+{b}={s}. {s}{'<' if verdict == 'yes' else '>'}{c}. The answer is {wrong_verdict}"
        sr, sw = rms["generalist"].score([e.prompt] * 2, [right, wrong])
        wins.append(sr > sw)
    assert 0.62 <= np.mean(wins) <= 0.82


# ---------------------------------------------------------------- v2 (issue 13: a benchmark with power)
@pytest.fixture(scope="module")
def reliability_v2():
    examples = make_benchmark(200, seed=0, split="test", version="v2")
    rms = make_demo_rms(seed=0, version="v2")
    return {
        rm.name: {style: measure_reliability(rm, examples, seed=0, style=style) for style in ("worked", "answer_first")}
        for rm in rms
    }


def test_v2_rms_keep_v1_names_and_v1_stays_the_default():
    assert [rm.name for rm in make_demo_rms(0, "v2")] == [rm.name for rm in make_demo_rms(0)]
    assert {rm.off_domain for rm in make_demo_rms(0)} == {"noise"}
    with pytest.raises(ValueError, match="version 'v3'"):
        make_demo_rms(0, "v3")
    with pytest.raises(ValueError, match="off_domain"):
        SyntheticRM("x", "expert", ("arith",), off_domain="random")


@pytest.mark.parametrize("name", ["math_expert", "logic_expert"])
def test_v2_experts_are_right_on_their_domains_and_mislead_elsewhere(reliability_v2, name):
    """Off its domains a v2 expert scores 1 - quality: a wrong answer (quality < 0.5) beats the
    right one (quality 1) on every pair, so its reliability there is 0, not chance."""
    for style, table in reliability_v2[name].items():
        for domain, share in table.items():
            if domain in OWN[name]:
                assert share >= 0.9, (name, style, domain, share)
            else:
                assert share <= 0.1, (name, style, domain, share)


def test_v2_other_rms_keep_their_v1_profiles(reliability_v2):
    for style in ("worked", "answer_first"):
        for domain in DOMAINS:
            assert 0.62 <= reliability_v2["generalist"][style][domain] <= 0.82
            for name in ("noise", "length_lover"):
                assert 0.4 <= reliability_v2[name][style][domain] <= 0.6, (name, style, domain)


def test_v2_choice_quality_golden_values():
    """27+14=41 is B; D (32) is 9 away: 0.5 / (1 + 9) = 0.05; C (37) is 4 away: 0.5 / 5 = 0.1."""
    prompt = "27+14=? A.50 B.41 C.37 D.32\n"
    assert quality(prompt, "27+14=41. The answer is B") == 1.0
    assert quality(prompt, "The answer is D. 27+14=32") == pytest.approx(0.05)
    assert quality(prompt, "The answer is C") == pytest.approx(0.1)
    assert quality(prompt, "no letter here") == 0.0
    logic_v2 = make_demo_rms(0, "v2")[1]
    math_v2 = make_demo_rms(0, "v2")[0]
    right, wrong = "27+14=41. The answer is B", "27+14=32. The answer is D"
    assert logic_v2.score([prompt] * 2, [right, wrong]).tolist() == pytest.approx([1.0, 0.05], abs=0.01)
    assert math_v2.score([prompt] * 2, [right, wrong]).tolist() == pytest.approx([0.0, 0.95], abs=0.01)
