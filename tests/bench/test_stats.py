"""laser.bench.compare.stats against hand-computed values (its t and Wilcoxon tests are scipy's)."""

import math

import numpy as np
import pytest

from laser.bench.compare.stats import paired_bootstrap, summarize, wilcoxon_signed_rank


def test_wilcoxon_exact_all_positive():
    """d = 1..5, all positive: W+ = 15 is the largest possible rank sum; only 1 of the 2^5 = 32
    equally likely sign patterns reaches it, so one-sided p = 1/32 and two-sided p = 2/32 = 0.0625.
    The two-sided statistic is min(W+, W-) = 0."""
    r = wilcoxon_signed_rank([1, 2, 3, 4, 5])
    assert r["method"] == "exact" and r["n"] == 5 and r["statistic"] == 0.0
    assert r["p_value"] == pytest.approx(0.0625, abs=1e-12)
    assert wilcoxon_signed_rank([1, 2, 3, 4, 5], "greater")["p_value"] == pytest.approx(1 / 32)


def test_wilcoxon_exact_one_negative_and_zero_dropped():
    """d = (1, 2, -3, 4, 5, 0): the zero is dropped (n = 5). W- = 3, W+ = 12. P(W+ >= 12) =
    P(W- <= 3) = #{subsets of {1..5} with sum <= 3} / 32 = |{}, {1}, {2}, {3}, {1,2}| / 32 = 5/32,
    so two-sided p = 10/32 = 0.3125 and the statistic is 3."""
    r = wilcoxon_signed_rank([1, 2, -3, 4, 5, 0])
    assert r["n"] == 5 and r["statistic"] == 3.0
    assert r["p_value"] == pytest.approx(10 / 32, abs=1e-12)


def test_wilcoxon_normal_approximation_with_ties():
    """Eight +1 and two -1 (all |d| tied, as in 0/1 correctness differences): every rank is 5.5,
    W+ = 8 * 5.5 = 44, mean n(n+1)/4 = 27.5, variance 10*11*21/24 - (10^3 - 10)/48 = 96.25 - 20.625
    = 75.625, z = 16.5 / sqrt(75.625) = 1.8974 (the sign test's (8 - 5) / sqrt(10/4)), two-sided
    p = erfc(z / sqrt 2) = 0.05778."""
    r = wilcoxon_signed_rank([1] * 8 + [-1] * 2)
    z = 16.5 / math.sqrt(75.625)
    assert r["method"] == "approx"
    assert z == pytest.approx(3 / math.sqrt(2.5))
    assert r["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert r["p_value"] == pytest.approx(0.05778, abs=1e-5)


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


# ----------------------------------------------------------------------------- seeds x items
from laser.bench.compare.stats import (  # noqa: E402
    components_scaled,
    headroom_share,
    hierarchical_bootstrap,
    hierarchical_summary,
    min_attainable_p,
    resampled_means,
    t_calibrated_p,
    t_widen,
    variance_components,
)


def _binary(rng, p, shape):
    return (rng.uniform(size=shape) < p).astype(float)


@pytest.mark.parametrize("design", ["crossed", "nested"])
def test_hierarchical_one_seed_is_the_paired_item_bootstrap(design):
    """With one seed there is nothing to resample at the seed level, and the item indices are
    drawn from default_rng(seed) in paired_bootstrap's shape and order: same draws, same result
    (before the t calibration, which only widens; checked in the next tests)."""
    rng = np.random.default_rng(0)
    a, b = _binary(rng, 0.5, (1, 150)), _binary(rng, 0.4, (1, 150))
    h = hierarchical_bootstrap(a, b, n_boot=3000, seed=4, design=design, t_tails=False)
    ref = paired_bootstrap(a[0], b[0], n_boot=3000, seed=4)
    assert h["mean_diff"] == pytest.approx(ref["mean_diff"], abs=1e-15)
    assert h["ci_low"] == pytest.approx(ref["ci_low"], abs=1e-12)
    assert h["ci_high"] == pytest.approx(ref["ci_high"], abs=1e-12)
    assert h["p_value"] == ref["p_value"]
    assert (h["n_seeds"], h["n_items"], h["design"]) == (1, 150, design)


@pytest.mark.parametrize("design", ["crossed", "nested"])
def test_hierarchical_with_items_fixed_is_a_seed_bootstrap(design):
    """Every item of a seed has the same difference c_s: item resampling changes nothing, and
    there is no item or residual part, so components_scaled spreads the seed means by
    sqrt(S/(S-1)) about their mean (the small-sample correction). The result is paired_bootstrap
    of those spread means with the seed stream default_rng([seed, 1]) (independent computation:
    the spread is written out here, the resampling is paired_bootstrap's)."""
    S, N = 6, 40
    c = np.array([0.10, -0.05, 0.20, 0.00, 0.15, 0.05])
    a, b = np.repeat(c[:, None], N, axis=1) + 0.5, np.full((S, N), 0.5)
    h = hierarchical_bootstrap(a, b, n_boot=4000, seed=7, design=design, t_tails=False)
    spread = c.mean() + np.sqrt(S / (S - 1)) * (c - c.mean())
    ref = paired_bootstrap(spread, np.zeros(S), n_boot=4000, seed=[7, 1])
    assert h["mean_diff"] == pytest.approx(c.mean(), abs=1e-12)
    assert h["ci_low"] == pytest.approx(ref["ci_low"], abs=1e-12)
    assert h["ci_high"] == pytest.approx(ref["ci_high"], abs=1e-12)
    assert h["p_value"] == ref["p_value"]
    # all the variance is between seeds: Satterthwaite's df is S - 1
    assert variance_components(a - b, design)["df"] == pytest.approx(S - 1)


def test_t_calibration_widens_the_interval_and_refers_p_to_student_t():
    """t_tails moves each percentile bound away from the estimate by t_{df}(0.975) / z(0.975) and
    reads the bootstrap p as a normal z referred to t(df). Items fixed within 5 seeds: df = 4,
    t_4(0.975) = 2.7764 (tables), z = 1.95996, so the half-widths grow by 1.41657."""
    c = np.array([0.10, -0.05, 0.20, 0.00, 0.15])
    a = np.repeat(c[:, None], 20, axis=1)
    raw = hierarchical_bootstrap(a, np.zeros_like(a), n_boot=2000, seed=1, t_tails=False)
    cal = hierarchical_bootstrap(a, np.zeros_like(a), n_boot=2000, seed=1)
    k = 2.7764451051977934 / 1.959963984540054
    assert cal["df"] == pytest.approx(4) and t_widen(4, 0.95) == pytest.approx(k, rel=1e-9)
    m = c.mean()
    assert cal["ci_low"] == pytest.approx(m - k * (m - raw["ci_low"]), abs=1e-12)
    assert cal["ci_high"] == pytest.approx(m + k * (raw["ci_high"] - m), abs=1e-12)
    assert cal["p_boot"] == raw["p_value"]
    assert cal["p_value"] == pytest.approx(t_calibrated_p(raw["p_value"], 4)) and cal["p_value"] > raw["p_value"]


def test_t_calibrated_p_against_closed_form_student_t_tails():
    """The bootstrap p is read as z = Phi^-1(1 - p/2) and referred to t(df): p_t = 2 P(T_df > z).
    Closed forms of the t tail (independent of scipy's): df = 1 is the Cauchy, P(T > z) = 1/2 -
    atan(z)/pi; df = 2: P(T > z) = (1 - z / sqrt(2 + z^2)) / 2. df = inf is the normal, so p comes
    back unchanged. p = 0.05 (z = 1.959964): df 1 gives 1 - 2 atan(1.959964)/pi = 0.30035, df 2
    gives 1 - 1.959964/sqrt(5.841459) = 0.18906; and t_widen(1, 0.95) = 12.7062 / 1.959964
    (tables: t_1(0.975) = tan(0.475 pi) = 12.7062)."""
    from statistics import NormalDist

    for p in (0.001, 0.05, 0.3):
        z = NormalDist().inv_cdf(1 - p / 2)
        assert t_calibrated_p(p, 1) == pytest.approx(1 - 2 * math.atan(z) / math.pi, rel=1e-9)
        assert t_calibrated_p(p, 2) == pytest.approx(1 - z / math.sqrt(2 + z * z), rel=1e-9)
        assert t_calibrated_p(p, math.inf) == pytest.approx(p, rel=1e-9)
    assert t_calibrated_p(0.05, 1) == pytest.approx(0.30035, abs=1e-5)
    assert t_calibrated_p(0.05, 2) == pytest.approx(0.18906, abs=1e-5)
    assert t_calibrated_p(1.0, 4) == 1.0
    assert t_widen(1, 0.95) == pytest.approx(math.tan(0.475 * math.pi) / 1.959963984540054, rel=1e-9)


@pytest.mark.parametrize("design", ["crossed", "nested"])
def test_components_scaled_bootstrap_variance_equals_the_variance_component_estimate(design):
    """Seed, item and residual parts are rescaled so that the resampled grand mean's variance is
    the random-effects estimate (formulas in components_scaled's docstring). Crossed:
    s_e = S v_e/(S-1), target = (S v_a/(S-1) - s_e/N)/S + (v_b - s_e/S)/N + s_e/(S N); nested:
    target = v_a/(S-1) (the per-seed means are i.i.d.). Checked on 40,000 resamples (relative
    Monte Carlo error about 1%), against the unscaled two-stage bootstrap, which overstates it."""
    rng = np.random.default_rng(1)
    S, N = 5, 60
    d = rng.normal(size=(S, 1)) * 0.3 + rng.normal(size=(1, N)) * 0.5 + rng.normal(size=(S, N))
    m = d.mean()
    al = d.mean(1, keepdims=True) - m
    be = d.mean(0, keepdims=True) - m if design == "crossed" else np.zeros((1, N))
    e = d - m - al - be
    va, vb, ve = (al**2).mean(), (be**2).mean(), (e**2).mean()
    if design == "crossed":
        se = S * ve / (S - 1)
        target = (S * va / (S - 1) - se / N) / S + (vb - se / S) / N + se / (S * N)
    else:
        target = va / (S - 1)
    draws = resampled_means([components_scaled(d, design)], 40000, 0, design)[:, 0]
    assert draws.var() == pytest.approx(target, rel=0.04)
    assert draws.mean() == pytest.approx(m, abs=0.01)


def test_resampled_means_chunking_does_not_change_the_draws():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 30))
    for design in ("crossed", "nested"):
        whole = resampled_means([x], 500, 3, design)
        chunked = resampled_means([x], 500, 3, design, chunk=4 * 30 * 7)  # 7 replicates a chunk
        np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-14)


def _null_rejection_rates(design, reps=300, S=5, N=100, tau=0.1, seed=123):
    """Rejection rates at 5% of the hierarchical and the per-item bootstrap when both methods have
    the same expected accuracy but each (method, seed) pair draws its own training effect
    N(0, tau^2) (10 points): the true difference is 0, the seeds make it noisy."""
    rng = np.random.default_rng(seed)
    rej = np.zeros(2)
    for r in range(reps):
        q = rng.uniform(0.2, 0.8, size=(1, N) if design == "crossed" else (S, N))
        pa = np.clip(q + rng.normal(0, tau, (S, 1)), 0, 1)
        pb = np.clip(q + rng.normal(0, tau, (S, 1)), 0, 1)
        a, b = _binary(rng, pa, (S, N)), _binary(rng, pb, (S, N))
        rej += [
            hierarchical_bootstrap(a, b, n_boot=500, seed=r, design=design)["p_value"] < 0.05,
            paired_bootstrap(a.ravel(), b.ravel(), n_boot=500, seed=r)["p_value"] < 0.05,
        ]
    return rej / reps


@pytest.mark.parametrize("design", ["crossed", "nested"])
def test_hierarchical_holds_its_level_where_the_item_bootstrap_over_rejects(design):
    """True difference 0, seed effect 10 points, 5 seeds x 100 items, 300 simulated comparisons.
    Pooling items ignores the seed effect: when this was written the per-item bootstrap rejected
    in 35-44% of runs (4 simulation seeds), the hierarchical one in 5-12% (nominal 5%; the excess
    is what remains of 5 seeds' thin tails after the t calibration). The bounds are generous: at
    300 runs the binomial sd of a 10% rate is 1.7 points."""
    hier, item = _null_rejection_rates(design)
    assert hier <= 0.16
    assert item >= 0.25
    assert item > hier + 0.15


def test_hierarchical_summary():
    """Per-seed means 0.25, 0.5, 0.75 (items all equal within a seed): mean 0.5, population std of
    the seed means sqrt(1/24) = 0.2041. All variance is between the 3 seeds (df 2), so the
    interval is the seed bootstrap of means spread by sqrt(3/2) (extremes 0.5 -+ 0.306), its
    half-widths times t_2(0.975) / z(0.975) = 4.3027 / 1.96 = 2.195."""
    x = np.repeat(np.array([[0.25], [0.5], [0.75]]), 8, axis=1)
    s = hierarchical_summary(x, n_boot=2000, seed=0)
    assert s["mean"] == pytest.approx(0.5) and s["std_seeds"] == pytest.approx(np.sqrt(1 / 24))
    assert s["n"] == 24 and s["n_seeds"] == 3
    k = t_widen(2, 0.95)
    assert k == pytest.approx(4.302652729749464 / 1.959963984540054)
    assert 0.5 - k * 0.307 < s["ci_low"] < 0.5 < s["ci_high"] < 0.5 + k * 0.307
    const = hierarchical_summary(np.full((3, 5), 0.4))
    assert const["ci_low"] == pytest.approx(0.4) and const["ci_high"] == pytest.approx(0.4)


def test_hierarchical_input_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        hierarchical_bootstrap(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(n_seeds, n_items\)"):
        hierarchical_bootstrap(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        hierarchical_bootstrap(np.array([[1.0, np.nan]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="design"):
        hierarchical_bootstrap(np.zeros((2, 3)), np.zeros((2, 3)), design="pooled")


def test_headroom_share_point_and_interval():
    """random 0.2, oracle 0.6, method 0.5 on every item of every seed: share (0.5 - 0.2) /
    (0.6 - 0.2) = 0.75 exactly, in every draw, so the interval is [0.75, 0.75]; headroom 0.4."""
    S, N = 4, 10
    rnd, orc, m = (np.full((S, N), v) for v in (0.2, 0.6, 0.5))
    h = headroom_share(m, rnd, orc, n_boot=500)
    assert h["share"] == pytest.approx(0.75) and h["headroom"] == pytest.approx(0.4)
    assert h["ci_low"] == pytest.approx(0.75) and h["ci_high"] == pytest.approx(0.75)
    assert h["no_headroom_draws"] == 0.0


def test_headroom_share_is_the_ratio_of_the_same_draws():
    """Independent computation: resample the two differences (m - random, oracle - random), each
    scaled by components_scaled, with resampled_means, take the per-draw ratio and its 2.5/97.5%
    quantiles, and widen them about the share by t_widen at the smaller df of the two
    differences. No draw lacks headroom here (oracle is 30 points above random)."""
    rng = np.random.default_rng(5)
    S, N = 5, 80
    rnd, m, orc = (_binary(rng, p, (S, N)) for p in (0.3, 0.45, 0.6))
    h = headroom_share(m, rnd, orc, n_boot=3000, seed=2, design="nested")
    num, den = resampled_means(
        [components_scaled(m - rnd, "nested"), components_scaled(orc - rnd, "nested")], 3000, 2, "nested"
    ).T
    assert (den > 0).all() and h["no_headroom_draws"] == 0.0
    lo, hi = np.quantile(num / den, [0.025, 0.975])
    share = (m.mean() - rnd.mean()) / (orc.mean() - rnd.mean())
    k = t_widen(min(variance_components(m - rnd, "nested")["df"], variance_components(orc - rnd, "nested")["df"]), 0.95)
    assert h["share"] == pytest.approx(share)
    assert h["ci_low"] == pytest.approx(share - k * (share - lo), abs=1e-12)
    assert h["ci_high"] == pytest.approx(share + k * (hi - share), abs=1e-12)


def test_headroom_share_without_headroom_is_unbounded_not_a_number():
    """oracle = random + noise, so oracle - random <= 0 in about half the draws: far more than the
    2.5% a bound can absorb, so both bounds are infinite (None); with oracle below random on
    average the share itself is None."""
    rng = np.random.default_rng(6)
    rnd = _binary(rng, 0.4, (5, 60))
    orc = rnd.copy()
    orc[:, :3] = 1 - orc[:, :3]  # flips a few items both ways
    m = _binary(rng, 0.5, (5, 60))
    h = headroom_share(m, rnd, orc, n_boot=1000)
    assert h["no_headroom_draws"] > 0.2
    assert h["ci_low"] is None and h["ci_high"] is None
    below = headroom_share(m, orc, np.clip(orc - 0.1, 0, 1), n_boot=200)
    assert below["share"] is None and below["headroom"] < 0


def test_min_attainable_p():
    """Exact signed-rank / sign test over n seeds: the most extreme outcome (every difference of
    one sign) has probability 2 / 2^n two-sided: 2/32 = 0.0625 for 5, 2/64 = 0.03125 for 6."""
    five = min_attainable_p("wilcoxon", 5)
    assert five["min_p"] == 0.0625 and not five["can_reach"]
    assert five["note"] == "n/a (5 seeds: min p 0.0625)"
    assert min_attainable_p("sign", 6)["min_p"] == 0.03125 and min_attainable_p("wilcoxon", 6)["can_reach"]
    assert not min_attainable_p("wilcoxon", 6, alpha=0.01)["can_reach"]
    assert min_attainable_p("bootstrap", 300, n_boot=999)["min_p"] == pytest.approx(1e-3)
    two = min_attainable_p("hierarchical_bootstrap", 2)
    assert not two["can_reach"] and "seed variance not estimated" in two["note"]
    assert min_attainable_p("hierarchical_bootstrap", 5)["can_reach"]
    with pytest.raises(ValueError, match="unknown test"):
        min_attainable_p("t", 5)


def test_min_attainable_p_agrees_with_the_exact_wilcoxon():
    """The floor is what wilcoxon_signed_rank returns for all-positive distinct differences."""
    for n in (3, 5, 6, 8):
        p = wilcoxon_signed_rank(np.arange(1.0, n + 1))["p_value"]
        assert p == pytest.approx(min_attainable_p("wilcoxon", n)["min_p"], rel=1e-12)
