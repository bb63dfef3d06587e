"""laser.stats against hand-computed values, and the pure Wilcoxon against scipy."""

import math

import numpy as np
import pytest

from laser.stats import paired_bootstrap, summarize, wilcoxon_signed_rank


@pytest.mark.parametrize("use_scipy", [False, True])
def test_wilcoxon_exact_all_positive(use_scipy):
    """d = 1..5, all positive: W+ = 15 is the largest possible rank sum; only 1 of the 2^5 = 32
    equally likely sign patterns reaches it, so one-sided p = 1/32 and two-sided p = 2/32 = 0.0625.
    The two-sided statistic is min(W+, W-) = 0."""
    if use_scipy:
        pytest.importorskip("scipy")
    r = wilcoxon_signed_rank([1, 2, 3, 4, 5], use_scipy=use_scipy)
    assert r["method"] == "exact" and r["n"] == 5 and r["statistic"] == 0.0
    assert r["p_value"] == pytest.approx(0.0625, abs=1e-12)
    assert wilcoxon_signed_rank([1, 2, 3, 4, 5], "greater", use_scipy=use_scipy)["p_value"] == pytest.approx(1 / 32)


@pytest.mark.parametrize("use_scipy", [False, True])
def test_wilcoxon_exact_one_negative_and_zero_dropped(use_scipy):
    """d = (1, 2, -3, 4, 5, 0): the zero is dropped (n = 5). W- = 3, W+ = 12. P(W+ >= 12) =
    P(W- <= 3) = #{subsets of {1..5} with sum <= 3} / 32 = |{}, {1}, {2}, {3}, {1,2}| / 32 = 5/32,
    so two-sided p = 10/32 = 0.3125 and the statistic is 3."""
    if use_scipy:
        pytest.importorskip("scipy")
    r = wilcoxon_signed_rank([1, 2, -3, 4, 5, 0], use_scipy=use_scipy)
    assert r["n"] == 5 and r["statistic"] == 3.0
    assert r["p_value"] == pytest.approx(10 / 32, abs=1e-12)


@pytest.mark.parametrize("use_scipy", [False, True])
def test_wilcoxon_normal_approximation_with_ties(use_scipy):
    """Eight +1 and two -1 (all |d| tied, as in 0/1 correctness differences): every rank is 5.5,
    W+ = 8 * 5.5 = 44, mean n(n+1)/4 = 27.5, variance 10*11*21/24 - (10^3 - 10)/48 = 96.25 - 20.625
    = 75.625, z = 16.5 / sqrt(75.625) = 1.8974 (the sign test's (8 - 5) / sqrt(10/4)), two-sided
    p = erfc(z / sqrt 2) = 0.05778."""
    if use_scipy:
        pytest.importorskip("scipy")
    r = wilcoxon_signed_rank([1] * 8 + [-1] * 2, use_scipy=use_scipy)
    z = 16.5 / math.sqrt(75.625)
    assert r["method"] == "approx"
    assert z == pytest.approx(3 / math.sqrt(2.5))
    assert r["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert r["p_value"] == pytest.approx(0.05778, abs=1e-5)


def test_wilcoxon_pure_matches_scipy_on_random_samples():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n, tied in [(7, False), (30, False), (60, False), (40, True), (200, True)]:
        d = rng.integers(-2, 3, size=n).astype(float) if tied else rng.normal(0.3, 1, size=n)
        for alt in ("two-sided", "greater", "less"):
            mine = wilcoxon_signed_rank(d, alt, use_scipy=False)
            ref = scipy_stats.wilcoxon(d[d != 0], correction=False, alternative=alt, method=mine["method"])
            assert mine["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-15), (n, tied, alt)


def test_wilcoxon_all_zero_and_errors():
    assert wilcoxon_signed_rank([0, 0, 0])["p_value"] == 1.0
    with pytest.raises(ValueError, match="finite"):
        wilcoxon_signed_rank([1.0, float("nan")])
    with pytest.raises(ValueError, match="alternative"):
        wilcoxon_signed_rank([1.0], alternative="bigger")


def test_paired_bootstrap_constant_difference():
    """Every d_i = 0.5: every resampled mean is 0.5, so the interval is (0.5, 0.5); the centred
    differences are all 0, no resample reaches |0.5|, and p = (1 + 0) / (B + 1)."""
    r = paired_bootstrap([1.0, 1.0, 0.5, 0.5], [0.5, 0.5, 0.0, 0.0], n_boot=999, seed=3)
    assert r["mean_diff"] == 0.5 and r["ci_low"] == r["ci_high"] == 0.5
    assert r["p_value"] == pytest.approx(1 / 1000)


def test_paired_bootstrap_symmetric_sample_has_p_one():
    """d = (1, -1): observed mean 0, so every centred resample has |mean| >= 0 and p = 1; the
    resampled means are -1, 0, 1 with probabilities 1/4, 1/2, 1/4, so with 4000 resamples the
    2.5% and 97.5% quantiles are -1 and 1."""
    r = paired_bootstrap([1, 0], [0, 1], n_boot=4000, seed=0)
    assert r["mean_diff"] == 0.0 and r["p_value"] == 1.0
    assert (r["ci_low"], r["ci_high"]) == (-1.0, 1.0)


def test_paired_bootstrap_checks_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1, 2], [1])


def test_summarize_mean_std_and_interval():
    """Values (0, 0, 1, 1): mean 0.5, population std 0.5; the interval lies in [0, 1] around 0.5."""
    s = summarize([0, 0, 1, 1], n_boot=2000, seed=0)
    assert s["mean"] == 0.5 and s["std"] == 0.5 and s["n"] == 4
    assert 0.0 <= s["ci_low"] < 0.5 < s["ci_high"] <= 1.0
    c = summarize([0.25] * 5)
    assert c["ci_low"] == c["ci_high"] == 0.25
