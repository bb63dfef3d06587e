"""Metrics: hand-derived numbers, an independent LCS for ROUGE-L, bootstrap against theory/scipy."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laser.tasks import metrics
from laser.tasks.metrics import accuracy, bootstrap_ci, rouge_l, token_f1, win_rate


def test_accuracy_mixed_gold_forms() -> None:
    """4 items, 3 right: 0.75. Golds given raw ("#### 18") and bare ("7")."""
    texts = ["The answer is 18.", "so 7", "I give up", "The answer is $1,000"]
    golds = ["She makes $18.\n#### 18", "7", "5", 1000]
    assert accuracy("gsm8k", texts, golds) == 0.75
    assert accuracy("strategyqa", ["Yes.", "the answer is no"], [True, True]) == 0.5
    assert accuracy("mmlu", ["(C)"], [2]) == 1.0


def test_accuracy_input_errors() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        accuracy("gsm8k", ["1"], ["1", "2"])
    with pytest.raises(ValueError, match="no items"):
        accuracy("gsm8k", [], [])
    with pytest.raises(ValueError, match="not a valid number"):
        accuracy("gsm8k", ["1"], ["one"])


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        # pred tokens [cat, sat, on, mat], ref [cat, sat]: c=2, P=1/2, R=1, F1=2*(1/2)/(3/2)=2/3
        ("The cat sat on the mat.", "a cat sat", 2 / 3),
        # multiset overlap: {cat:2,dog:1} & {cat:1,dog:2} = 2 tokens, P=R=2/3, F1=2/3
        ("cat cat dog", "cat dog dog", 2 / 3),
        ("Paris!", "paris", 1.0),  # case and punctuation are normalised away
        ("London", "Paris", 0.0),
        ("the", "", 1.0),  # both normalise to no tokens
        ("!!!", "cat", 0.0),
    ],
)
def test_token_f1_hand_derived(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected)


def test_token_f1_takes_the_best_reference() -> None:
    """Refs: "London" scores 0; "The city of Paris" -> [city, of, paris], c=1, P=1, R=1/3,
    F1 = 2*(1/3)/(4/3) = 1/2. The max is 1/2."""
    assert token_f1("Paris", ["London", "The city of Paris"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one reference"):
        token_f1("Paris", [])


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab c.", max_size=20), st.text(alphabet="ab c.", max_size=20))
def test_token_f1_properties(x: str, y: str) -> None:
    f = token_f1(x, y)
    assert 0.0 <= f <= 1.0
    assert f == pytest.approx(token_f1(y, x))  # symmetric
    assert token_f1(x, x) == 1.0


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, ta in enumerate(a):
        for j, tb in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if ta == tb else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_rouge_l_hand_derived() -> None:
    """6 tokens each; LCS "the cat on the mat" = 5; P = R = 5/6, so F = 5/6."""
    assert rouge_l("the cat was on the mat", "The cat sat on the mat.") == pytest.approx(5 / 6)
    assert rouge_l("x y", ["a b", "y"]) == pytest.approx(2 / 3)  # refs max: P=1/2, R=1
    assert rouge_l("running fast", "runs fast", use_stemmer=True) == pytest.approx(1.0)
    assert rouge_l("running fast", "runs fast") == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), min_size=1, max_size=12),
    st.lists(st.sampled_from("abcd"), min_size=1, max_size=12),
)
def test_rouge_l_matches_independent_lcs(pred: list[str], ref: list[str]) -> None:
    lcs = _lcs(pred, ref)
    p, r = lcs / len(pred), lcs / len(ref)
    expected = 0.0 if lcs == 0 else 2 * p * r / (p + r)
    assert rouge_l(" ".join(pred), " ".join(ref)) == pytest.approx(expected)


def test_rouge_l_without_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics._rouge_scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    try:
        with pytest.raises(ImportError, match=r"pip install rouge-score"):
            rouge_l("a", "a")
    finally:
        metrics._rouge_scorer.cache_clear()


def test_bootstrap_ci_degenerate_and_deterministic() -> None:
    assert bootstrap_ci([0.7] * 10) == (0.7, 0.7)
    x = np.random.default_rng(1).random(50)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    low, high = bootstrap_ci(x)
    assert low < x.mean() < high
    narrow, wide = bootstrap_ci(x, level=0.5), bootstrap_ci(x, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_ci_matches_normal_theory_and_scipy() -> None:
    """Bernoulli(0.3), n=2000: the mean's sd is sqrt(p(1-p)/n) ~= 0.01025, so the 95% interval is
    about mean +- 1.96 * 0.01025 = +-0.0201. The percentile bootstrap must agree within 0.003, and
    with scipy's percentile bootstrap (its own resamples) within 0.003 too."""
    from scipy import stats

    x = (np.random.default_rng(0).random(2000) < 0.3).astype(float)
    low, high = bootstrap_ci(x, n_boot=4000, seed=0)
    half = 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / x.size)
    assert low == pytest.approx(x.mean() - half, abs=0.003)
    assert high == pytest.approx(x.mean() + half, abs=0.003)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(1)
    ).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=0.003)


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, float("nan")], [float("inf")]])
def test_bootstrap_ci_rejects_bad_values(bad) -> None:
    with pytest.raises(ValueError, match="bootstrap_ci"):
        bootstrap_ci(bad)


class FixedJudge:
    """A fake judge that returns preset probabilities and records what it was asked."""

    def __init__(self, probs) -> None:
        self.probs, self.calls = probs, []

    def prefer(self, prompts, responses_a, responses_b) -> np.ndarray:
        self.calls.append((list(prompts), list(responses_a), list(responses_b)))
        return np.asarray(self.probs, dtype=float)


class LongerIsBetter:
    """P(a better) = 1, 0.5 or 0 as a is longer, as long as, or shorter than b."""

    def prefer(self, prompts, responses_a, responses_b) -> np.ndarray:
        return np.array([0.5 + 0.5 * np.sign(len(a) - len(b)) for a, b in zip(responses_a, responses_b, strict=True)])


def test_win_rate_counts_wins_half_ties_and_skips() -> None:
    """Outcomes for P = .9, .5, .2, .7, NaN, .5+1e-12 are 1, .5, 0, 1, (skipped), .5 (a tie
    within tie_tol): win rate = 3 / 5 = 0.6, wins 2, ties 2, losses 1, skipped 1."""
    judge = FixedJudge([0.9, 0.5, 0.2, 0.7, np.nan, 0.5 + 1e-12])
    prompts, a, b = list("pqrstu"), list("abcdef"), list("ghijkl")
    result = win_rate(prompts, a, b, judge)
    assert judge.calls == [(prompts, a, b)]
    assert {k: result[k] for k in ("win_rate", "n", "wins", "ties", "losses", "skipped")} == {
        "win_rate": 0.6,
        "n": 5,
        "wins": 2,
        "ties": 2,
        "losses": 1,
        "skipped": 1,
    }
    assert 0.0 <= result["ci_low"] <= 0.6 <= result["ci_high"] <= 1.0
    assert (result["ci_low"], result["ci_high"]) == bootstrap_ci([1, 0.5, 0, 1, 0.5])


def test_win_rate_with_rule_judge() -> None:
    a = ["long answer", "xx", "same"]
    b = ["short", "xxxxxx", "also"]
    result = win_rate(["p"] * 3, a, b, LongerIsBetter())
    assert result["win_rate"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert (result["wins"], result["ties"], result["losses"]) == (1, 1, 1)
    swapped = win_rate(["p"] * 3, b, a, LongerIsBetter())
    assert swapped["win_rate"] == pytest.approx(1 - result["win_rate"])
    sweep = win_rate(["p"] * 4, ["aaaa"] * 4, ["a"] * 4, LongerIsBetter())
    assert (sweep["win_rate"], sweep["ci_low"], sweep["ci_high"]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "probs, message",
    [
        ([0.5, 0.5], r"shape \(2,\), expected \(3,\)"),
        ([0.5, 1.2, 0.1], r"in \[0, 1\]"),
        ([np.nan] * 3, "decided none of the 3"),
    ],
)
def test_win_rate_rejects_bad_judge_output(probs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        win_rate(["p"] * 3, ["a"] * 3, ["b"] * 3, FixedJudge(probs))


def test_win_rate_input_errors() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        win_rate(["p"], ["a", "b"], ["c"], FixedJudge([0.5]))
