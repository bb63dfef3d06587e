"""The embedded synthetic benchmark: determinism, disjoint splits, gold answers, lengths."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laser.bench.tasks import (
    DOMAIN_TASKS,
    DOMAINS,
    SEP,
    STYLES,
    VERSIONS,
    format_prompt,
    make_benchmark,
    solve,
    worked_response,
    wrong_response,
)
from laser.tasks.extract import extract_answer, is_correct


def _independent_answer(domain: str, body: str) -> str:
    """Recompute the gold answer without the module's parser: Python arithmetic on the text."""
    if domain == "arith":
        return str(eval(body.removesuffix("=?"), {}))  # "12+6*3" -> Python's precedence
    if domain == "compare":
        lhs, rhs = body.removeprefix("Is ").removesuffix("?").split(">")
        return "yes" if eval(lhs, {}) > int(rhs) else "no"
    if domain == "choice":
        options = dict(re.findall(r"([A-D])\.(\d+)", body))
        if body.startswith("Max?"):
            return max(options, key=lambda k: int(options[k]))
        total = eval(body.split("=")[0], {})  # v2: "a+b=? A.x ..." -> the option equal to a+b
        return next(k for k, v in options.items() if int(v) == total)
    letter, text = re.fullmatch(r"How many (\w) in (\w+)\?", body).groups()
    return str(sum(ch == letter for ch in text))


@pytest.fixture(scope="module")
def bench():
    return {split: make_benchmark(300, seed=0, split=split) for split in ("train", "test")}


def test_shape_and_fields(bench):
    train = bench["train"]
    assert len(train) == 300 * len(DOMAINS)
    assert len(DOMAINS) >= 4
    assert set(DOMAIN_TASKS.values()) == {"gsm8k", "strategyqa", "mmlu"}
    assert Counter(e.domain for e in train) == {d: 300 for d in DOMAINS}
    for e in train:
        assert e.task == DOMAIN_TASKS[e.domain]
        assert e.group == e.domain
    assert len({e.id for e in train}) == len(train)


def test_same_seed_same_items_other_seed_other_items():
    a = make_benchmark(40, seed=7, split="train")
    b = make_benchmark(40, seed=7, split="train")
    c = make_benchmark(40, seed=8, split="train")
    assert a == b
    assert [e.prompt for e in a] != [e.prompt for e in c]


def test_splits_disjoint_across_seeds():
    train = {e.prompt for s in range(3) for e in make_benchmark(300, seed=s, split="train")}
    test = {e.prompt for s in range(3) for e in make_benchmark(200, seed=s, split="test")}
    assert train and test and not train & test


@settings(max_examples=15, deadline=None)
@given(seed_a=st.integers(0, 10**6), seed_b=st.integers(0, 10**6))
def test_splits_disjoint_any_seeds(seed_a, seed_b):
    train = {e.prompt for e in make_benchmark(30, seed=seed_a, split="train")}
    test = {e.prompt for e in make_benchmark(30, seed=seed_b, split="test")}
    assert not train & test


def test_prompts_unique_within_split(bench):
    for examples in bench.values():
        assert len({e.prompt for e in examples}) == len(examples)


def test_gold_matches_independent_computation(bench):
    for e in bench["train"] + bench["test"]:
        body = e.prompt.removesuffix(SEP)
        assert e.answer == _independent_answer(e.domain, body), e
        assert solve(e.prompt) == (e.domain, e.answer)


def test_worked_responses_extract_to_gold_with_shared_extractor(bench):
    for e in bench["train"] + bench["test"]:
        response = worked_response(e.prompt)
        assert response.endswith(f"The answer is {e.answer}")
        assert extract_answer(e.task, response) == e.answer
        assert is_correct(e.task, response, e.answer)


def test_wrong_responses_are_wrong_but_well_formed(bench):
    rng = np.random.default_rng(0)
    for e in bench["test"]:
        response = wrong_response(e, rng)
        got = extract_answer(e.task, response)
        assert got is not None and got != e.answer, (e, response)
        assert not is_correct(e.task, response, e.answer)


def test_lengths_fit_the_tiny_model(bench):
    """Prompts <= 40 chars (incl. SEP); responses < 40 chars so response + <eos> fits in 40
    generated tokens (the demo's max_new_tokens)."""
    for e in bench["train"] + bench["test"]:
        assert e.prompt.endswith(SEP) and len(e.prompt) <= 40
        assert format_prompt(e) == e.prompt
        assert len(worked_response(e.prompt)) < 40


def test_answers_are_balanced(bench):
    answers = {d: Counter(e.answer for e in bench["train"] if e.domain == d) for d in DOMAINS}
    yes_share = answers["compare"]["yes"] / 300
    assert 0.4 < yes_share < 0.6
    assert set(answers["choice"]) == set("ABCD")
    assert min(answers["choice"].values()) > 50  # ~75 each expected
    assert len(answers["count"]) >= 4 and len(answers["arith"]) >= 20


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split"):
        make_benchmark(5, split="dev")
    with pytest.raises(ValueError, match="n_per_domain"):
        make_benchmark(0)
    with pytest.raises(ValueError, match="unknown synthetic domains"):
        make_benchmark(5, domains=("arith", "poetry"))
    with pytest.raises(ValueError, match="'arith'.*too large"):
        make_benchmark(1500, domains=("arith",))  # 40*5*5*2 = 2000 items, ~70% of them train


def test_non_synthetic_prompts():
    assert solve("What is the capital of France?") is None
    with pytest.raises(ValueError, match="not a synthetic"):
        worked_response("hello")


# ---------------------------------------------------------------- v2 (issue 13: a benchmark with power)
@pytest.fixture(scope="module")
def bench_v2():
    return {split: make_benchmark(300, seed=0, split=split, version="v2") for split in ("train", "test")}


def test_v1_is_the_default_and_unchanged():
    """The version argument must not change v1: same items, and v1 count targets have no working."""
    assert make_benchmark(20, seed=3) == make_benchmark(20, seed=3, version="v1")
    e = make_benchmark(1, seed=0, domains=("count",))[0]
    assert worked_response(e.prompt) == worked_response(e.prompt, style="v1") == f"The answer is {e.answer}"
    assert VERSIONS == ("v1", "v2") and STYLES == ("v1", "worked", "answer_first")


def test_v2_gold_matches_independent_computation(bench_v2):
    for e in bench_v2["train"] + bench_v2["test"]:
        body = e.prompt.removesuffix(SEP)
        assert e.answer == _independent_answer(e.domain, body), e
        assert solve(e.prompt) == (e.domain, e.answer)


def test_v2_items(bench_v2):
    """arith is v1's; compare's threshold is 1-3 from the sum; choice asks which of four options
    near it is a+b (one option is); count strings have 8 letters."""
    for e in bench_v2["train"]:
        body = e.prompt.removesuffix(SEP)
        if e.domain == "compare":
            lhs, rhs = body.removeprefix("Is ").removesuffix("?").split(">")
            assert 1 <= abs(eval(lhs, {}) - int(rhs)) <= 3
        elif e.domain == "choice":
            total = eval(body.split("=")[0], {})
            values = [int(v) for v in re.findall(r"[A-D]\.(\d+)", body)]
            assert values.count(total) == 1 and len(set(values)) == 4
            assert max(abs(v - total) for v in values) <= 9
        elif e.domain == "count":
            assert len(re.fullmatch(r"How many \w in (\w+)\?", body).group(1)) == 8
    assert [e.prompt for e in bench_v2["train"] if e.domain == "arith"] == [
        e.prompt for e in make_benchmark(300, seed=0, split="train", domains=("arith",))
    ]
    answers = Counter(e.answer for e in bench_v2["train"] if e.domain == "choice")
    assert set(answers) == set("ABCD") and min(answers.values()) > 50


def test_v2_splits_disjoint_across_seeds():
    train = {e.prompt for s in range(3) for e in make_benchmark(300, seed=s, split="train", version="v2")}
    test = {e.prompt for s in range(3) for e in make_benchmark(200, seed=s, split="test", version="v2")}
    assert train and test and not train & test


def test_v2_styles_extract_to_gold_and_share_their_characters(bench_v2):
    for e in bench_v2["train"] + bench_v2["test"]:
        worked = worked_response(e.prompt, style="worked")
        first = worked_response(e.prompt, style="answer_first")
        assert worked.endswith(f". The answer is {e.answer}")
        assert first.startswith(f"The answer is {e.answer}. ")
        assert sorted(worked) == sorted(first) and len(worked) < 40  # same length: no length cue
        for r in (worked, first):
            assert extract_answer(e.task, r) == e.answer and is_correct(e.task, r, e.answer)


def test_v2_working_golden_values():
    """Derived by hand: 12+6*3: 6*3=18, 12+18=30. Count of a in daddaccc, running tally per
    letter: d0 a1 d1 d1 a2 c2 c2 c2 -> 01112222. 27+14=41 is option B."""
    assert worked_response("12+6*3=?\n", style="answer_first") == "The answer is 30. 6*3=18. 12+18=30"
    assert worked_response("How many a in daddaccc?\n", style="worked") == "01112222. The answer is 2"
    assert worked_response("27+14=? A.50 B.41 C.37 D.32\n", style="worked") == "27+14=41. The answer is B"
    assert worked_response("27+14=? A.50 B.41 C.37 D.32\n", "D", style="worked") == "27+14=32. The answer is D"
    # a wrong count: the tally slips at the last letter, so the working agrees with the answer
    assert worked_response("How many a in daddaccc?\n", "5", style="worked") == "01112225. The answer is 5"


def test_v2_wrong_responses_are_wrong_in_both_styles(bench_v2):
    rng = np.random.default_rng(0)
    for e in bench_v2["test"]:
        for style in ("worked", "answer_first"):
            response = wrong_response(e, rng, style)
            got = extract_answer(e.task, response)
            assert got is not None and got != e.answer, (e, response)


def test_bad_version_and_style_are_named():
    with pytest.raises(ValueError, match="benchmark version 'v9'"):
        make_benchmark(5, version="v9")
    with pytest.raises(ValueError, match="response style 'fancy'"):
        worked_response("12+6*3=?\n", style="fancy")
