"""Comparisons over seeds x test items: a two-level (seeds, then items) bootstrap.

Outcomes are ``(n_seeds, n_items)`` matrices (e.g. 0/1 correctness of each test item under each
training seed). Two designs: ``crossed``, the same N test items under every seed (a user's test
set), and ``nested``, each seed with its own N items (the embedded benchmark draws its test set
per seed). Re-exported by :mod:`laser.stats`.

The bootstrap is calibrated in two ways, both checked by simulation in ``tests/test_stats.py``:
its variance is matched to the random-effects estimate (:func:`components_scaled`), and its tails
to a Student t with Satterthwaite's degrees of freedom (:func:`t_widen`), because with 5 seeds
the seed-to-seed part of the variance rests on 4 degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

DESIGNS = ("crossed", "nested")
#: what the p-value of :func:`hierarchical_bootstrap` is called in reports
HIERARCHICAL_TEST = "hierarchical bootstrap over seeds and items"
#: fewest seeds whose resampling estimates seed-to-seed variance at all (see laser.stats.min_attainable_p)
MIN_SEEDS = 3


def _grids(mats: Sequence, what: str) -> np.ndarray:
    """Validate same-shape finite ``(n_seeds, n_items)`` matrices; returns them stacked ``(M, S, N)``."""
    out = [np.asarray(m, dtype=np.float64) for m in mats]
    for m in out:
        if m.ndim != 2 or 0 in m.shape:
            raise ValueError(f"{what}: need a non-empty (n_seeds, n_items) array, got shape {m.shape}")
        if m.shape != out[0].shape:
            raise ValueError(f"{what}: arrays differ in shape ({out[0].shape} vs {m.shape}); the same seeds "
                             "and items are needed for every method")
        if not np.isfinite(m).all():
            raise ValueError(f"{what}: values must be finite (drop NaN items first)")
    return np.stack(out)


def _check_design(design: str) -> None:
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")


def _counts(idx: np.ndarray, k: int) -> np.ndarray:
    """Row-wise occurrence counts of ``(c, m)`` indices in ``[0, k)``: ``(c, k)`` float64."""
    c = idx.shape[0]
    return np.bincount((idx + k * np.arange(c)[:, None]).ravel(), minlength=c * k).reshape(c, k).astype(np.float64)


def resampled_means(mats: Sequence, n_boot: int, seed: int = 0, design: str = "crossed",
                    chunk: int = 1 << 21) -> np.ndarray:
    """Grand means of each ``(S, N)`` matrix over ``n_boot`` two-level resamples shared by all.

    One resample draws S seeds with replacement, then items with replacement:

    * ``crossed``: one draw of N items, applied to every resampled seed; the statistic is the
      mean over the S x N resampled grid, ``w^T M u / (S N)`` (w seed counts, u item counts).
    * ``nested``: each resampled seed gets its own draw of N of its items.

    Item indices come from ``default_rng(seed)`` (shape ``(n_boot, N)`` crossed, ``(n_boot, S, N)``
    nested: with one seed both are :func:`laser.stats.paired_bootstrap`'s draws), seed indices
    ``(n_boot, S)`` from ``default_rng([seed, 1])``. Replicates are drawn ``chunk // (S N)`` at a
    time, which leaves both streams unchanged.

    Returns:
        ``(n_boot, M)``: column j holds the resampled means of ``mats[j]``.
    """
    _check_design(design)
    stack = _grids(mats, "resampled_means")
    M, S, N = stack.shape
    item_rng, seed_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    out = np.empty((n_boot, M))
    step = max(1, chunk // (S * N))
    for lo in range(0, n_boot, step):
        c = min(step, n_boot - lo)
        if design == "crossed":
            u = _counts(item_rng.integers(0, N, size=(c, N)), N)
            w = _counts(seed_rng.integers(0, S, size=(c, S)), S)
            out[lo:lo + c] = ((w[None] @ stack) * u[None]).sum(-1).T / (S * N)
        else:
            items = item_rng.integers(0, N, size=(c, S, N))
            flat = seed_rng.integers(0, S, size=(c, S))[:, :, None] * N + items
            out[lo:lo + c] = stack.reshape(M, -1)[:, flat].mean(axis=(2, 3)).T
    return out


def variance_components(d: np.ndarray, design: str) -> dict:
    """Parts of ``d = m + alpha_s + beta_i + e_si`` and the grand mean's variance estimate.

    ``alpha`` seed effects (row means - m), ``beta`` item effects (column means - m; zero when
    nested), ``e`` the rest; ``v_x`` is the mean square of part x. Estimates, with the seed level
    corrected by S / (S - 1) and the item level in the plain bootstrap's convention (as
    :func:`laser.stats.paired_bootstrap`, so one seed gives the item bootstrap unchanged):

        crossed:  s_e = S v_e / (S - 1),  s_seed = S v_alpha / (S - 1) - s_e / N,  s_item = v_beta - s_e / S
                  var(mean) = s_seed / S + s_item / N + s_e / (S N)
        nested:   s_e = v_e,              s_seed = S v_alpha / (S - 1) - v_e / N
                  var(mean) = s_seed / S + s_e / (S N)

    negative estimates clipped at 0. Each term gets its degrees of freedom (S - 1 seed,
    N - 1 item, (S - 1)(N - 1) crossed residual, S (N - 1) nested residual) and Satterthwaite's
    ``df = var^2 / sum(term^2 / df_term)``. One seed: no seed level (df from the items alone).

    Returns:
        ``{"m", "alpha", "beta", "e", "v_alpha", "v_beta", "v_e", "s_seed", "s_item", "s_e",
        "var", "df"}``.
    """
    S, N = d.shape
    m = float(d.mean())
    alpha = d.mean(axis=1, keepdims=True) - m
    beta = d.mean(axis=0, keepdims=True) - m if design == "crossed" or S == 1 else np.zeros((1, N))
    e = d - m - alpha - beta
    v_a, v_b, v_e = float((alpha ** 2).mean()), float((beta ** 2).mean()), float((e ** 2).mean())
    if S == 1:  # the item bootstrap: var(mean) = v_beta / N
        return {"m": m, "alpha": alpha, "beta": beta, "e": e, "v_alpha": 0.0, "v_beta": v_b, "v_e": 0.0,
                "s_seed": 0.0, "s_item": v_b, "s_e": 0.0, "var": v_b / N, "df": float(max(N - 1, 1))}
    crossed = design == "crossed"
    s_e = S * v_e / (S - 1) if crossed else v_e
    s_seed = max(S * v_a / (S - 1) - s_e / N, 0.0)
    s_item = max(v_b - s_e / S, 0.0) if crossed else 0.0
    terms = [(s_seed / S, S - 1), (s_item / N, N - 1), (s_e / (S * N), (S - 1) * (N - 1) if crossed else S * (N - 1))]
    var = sum(t for t, _ in terms)
    den = sum(t * t / max(f, 1) for t, f in terms)
    df = var * var / den if den > 0 else math.inf
    return {"m": m, "alpha": alpha, "beta": beta, "e": e, "v_alpha": v_a, "v_beta": v_b, "v_e": v_e,
            "s_seed": s_seed, "s_item": s_item, "s_e": s_e, "var": var, "df": df}


def components_scaled(d: Sequence, design: str = "crossed") -> np.ndarray:
    """``d`` with its parts rescaled so that the two-level bootstrap's variance of the grand mean
    is the estimate of :func:`variance_components`.

    Resampling seeds and then items counts the item noise twice (a seed's mean carries its items'
    noise, the item stage adds it again: 2x the variance of pure noise nested, 3x crossed), and
    resampling S seeds shrinks their spread by (S - 1) / S. One resample of :func:`resampled_means`
    of ``m + a alpha + b beta + r e`` has variance exactly ``a^2 v_alpha / S + b^2 v_beta / N +
    r^2 v_e / (S N)`` (the three parts are uncorrelated under the multinomial weights). So
    ``a^2 = s_seed / v_alpha``, ``b^2 = s_item / v_beta``, ``r^2 = s_e / v_e``. One seed: ``d``
    itself (the plain item bootstrap); every item of a seed equal: the seed means spread by
    sqrt(S / (S - 1)).
    """
    x = np.asarray(d, dtype=np.float64)
    _check_design(design)
    if x.shape[0] == 1:
        return x
    c = variance_components(x, design)

    def scale(s: float, v: float) -> float:
        return math.sqrt(s / v) if v > 0 else 1.0

    return (c["m"] + scale(c["s_seed"], c["v_alpha"]) * c["alpha"] + scale(c["s_item"], c["v_beta"]) * c["beta"]
            + scale(c["s_e"], c["v_e"]) * c["e"])


# ----------------------------------------------------------------------------- Student t tails
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (inf: the normal).

    ``P(|T| > t) = I_{df / (df + t^2)}(df / 2, 1 / 2)``, the regularised incomplete beta
    function, by its continued fraction (Numerical Recipes' ``betai``).
    """
    if not math.isfinite(df) or df > 1e7:
        return 1.0 - NormalDist().cdf(t)
    x, a, b = df / (df + t * t), df / 2.0, 0.5
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    two_sided = front * _betacf(a, b, x) / a if x < (a + 1) / (a + b + 2) else 1.0 - front * _betacf(b, a, 1 - x) / b
    return 0.5 * two_sided if t >= 0 else 1.0 - 0.5 * two_sided


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile (q in [0.5, 1)) of Student's t, by bisection on :func:`t_sf`."""
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - q:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_sf(mid, df) > 1.0 - q else (lo, mid)
    return 0.5 * (lo + hi)


def t_widen(df: float, level: float) -> float:
    """``t_{df}(q) / z(q)``, q = (1 + level) / 2: how much farther a t bound lies than a normal one."""
    q = (1.0 + level) / 2.0
    return t_ppf(q, df) / NormalDist().inv_cdf(q)


def t_calibrated_p(p_boot: float, df: float) -> float:
    """A two-sided bootstrap p-value read as a normal z, then referred to Student's t(df).

    For a normal bootstrap distribution of variance V this is the t-test of mean / sqrt(V) with
    ``df`` degrees of freedom; the bootstrap's own shape is kept otherwise.
    """
    if p_boot >= 1.0:
        return 1.0
    z = NormalDist().inv_cdf(1.0 - p_boot / 2.0)
    return min(1.0, 2.0 * t_sf(z, df))


# ----------------------------------------------------------------------------- tests and summaries
def _interval(draws: np.ndarray, centre: float, level: float, widen: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(centre - widen * (centre - low)), float(centre + widen * (high - centre))


def hierarchical_bootstrap(a: Sequence, b: Sequence, n_boot: int = 10000, seed: int = 0, level: float = 0.95,
                           design: str = "crossed", t_tails: bool = True) -> dict:
    """Paired two-level bootstrap of ``mean(a - b)`` over seeds and items, with a two-sided p-value.

    ``a`` and ``b`` are ``(n_seeds, n_items)`` outcomes of two methods on the same seeds and items.
    The differences ``d = a - b``, scaled by :func:`components_scaled`, are resampled by
    :func:`resampled_means`. The raw p-value, as in :func:`laser.stats.paired_bootstrap`:

        p_boot = (1 + #{ |mean(d*) - mean(d)| >= |mean(d)| }) / (n_boot + 1)

    and the percentile interval. With ``t_tails`` (default) both are referred to Student's t with
    Satterthwaite's df (:func:`variance_components`): p = :func:`t_calibrated_p`, and the interval's
    half-widths grow by :func:`t_widen` (about 1.42 at 4 df, 1.0 with many). Without it, one seed
    gives :func:`laser.stats.paired_bootstrap` exactly (same draws).

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "p_value", "p_boot" (before the t calibration),
        "df", "n_seeds", "n_items", "design", "test"}``.
    """
    x = _grids([a, b], "hierarchical_bootstrap")
    _check_design(design)
    d = x[0] - x[1]
    observed = float(d.mean())
    means = resampled_means([components_scaled(d, design)], n_boot, seed, design)[:, 0]
    p_boot = (1 + int((np.abs(means - observed) >= abs(observed) - 1e-12).sum())) / (n_boot + 1)
    df = variance_components(d, design)["df"]
    widen = t_widen(df, level) if t_tails else 1.0
    low, high = _interval(means, observed, level, widen)
    return {"mean_diff": observed, "ci_low": low, "ci_high": high,
            "p_value": t_calibrated_p(p_boot, df) if t_tails else p_boot, "p_boot": p_boot, "df": df,
            "n_seeds": int(d.shape[0]), "n_items": int(d.shape[1]), "design": design, "test": HIERARCHICAL_TEST}


def hierarchical_summary(x: Sequence, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                         design: str = "crossed") -> dict:
    """Mean of an ``(n_seeds, n_items)`` outcome matrix with its two-level bootstrap interval
    (variance and tails calibrated as in :func:`hierarchical_bootstrap`).

    Returns:
        ``{"mean", "std_seeds" (population std of the per-seed means), "ci_low", "ci_high",
        "n" (seeds x items), "n_seeds"}``.
    """
    m = _grids([x], "hierarchical_summary")[0]
    _check_design(design)
    draws = resampled_means([components_scaled(m, design)], n_boot, seed, design)[:, 0]
    low, high = _interval(draws, float(m.mean()), level, t_widen(variance_components(m, design)["df"], level))
    return {"mean": float(m.mean()), "std_seeds": float(m.mean(axis=1).std()), "ci_low": low, "ci_high": high,
            "n": int(m.size), "n_seeds": int(m.shape[0])}


def _quantile_inf(x: np.ndarray, q: float) -> float:
    """numpy's default (linear) quantile, for arrays that may hold -inf / +inf (then returned)."""
    s = np.sort(x)
    h = (len(s) - 1) * q
    lo, hi = int(np.floor(h)), int(np.ceil(h))
    if not np.isfinite(s[lo]):
        return float(s[lo])
    if not np.isfinite(s[hi]):
        return float(s[hi])
    return float(s[lo] + (h - lo) * (s[hi] - s[lo]))


def headroom_share(m: Sequence, random: Sequence, oracle: Sequence, n_boot: int = 10000, seed: int = 0,
                   level: float = 0.95, design: str = "crossed") -> dict:
    """Share of the oracle's headroom a method captures, ``(m - random) / (oracle - random)``.

    The two differences ``m - random`` and ``oracle - random``, each scaled by
    :func:`components_scaled`, are resampled with the same draws (:func:`resampled_means`), and
    the ratio is taken per draw; the percentile bounds then move away from the observed share by
    :func:`t_widen` at the smaller of the two differences' Satterthwaite df.

    Draws where ``oracle - random <= 0`` have no share (no headroom to capture). Each such draw
    counts as the most extreme value against both bounds: -inf for the lower quantile, +inf for
    the upper one. So a bound is infinite exactly when more than about ``(1 - level) / 2`` of the
    draws have no headroom, i.e. when the headroom's own interval reaches 0 (the bootstrap
    analogue of Fieller's unbounded ratio interval). Infinite bounds are returned as None.

    Returns:
        ``{"share" (None when the observed headroom is <= 0), "ci_low", "ci_high" (None:
        unbounded), "headroom" (observed oracle - random), "no_headroom_draws" (fraction of
        draws with oracle - random <= 0), "n_seeds", "n_items"}``.
    """
    stack = _grids([m, random, oracle], "headroom_share")
    _check_design(design)
    obs = stack.mean(axis=(1, 2))
    num_d, den_d = stack[0] - stack[1], stack[2] - stack[1]
    num, den = resampled_means([components_scaled(num_d, design), components_scaled(den_d, design)],
                               n_boot, seed, design).T
    none = den <= 0
    ratio = np.divide(num, den, out=np.zeros_like(num), where=~none)
    alpha = (1.0 - level) / 2.0
    low = _quantile_inf(np.where(none, -np.inf, ratio), alpha)
    high = _quantile_inf(np.where(none, np.inf, ratio), 1.0 - alpha)
    head = float(obs[2] - obs[1])
    share = float((obs[0] - obs[1]) / head) if head > 0 else None
    if share is not None:
        widen = t_widen(min(variance_components(x, design)["df"] for x in (num_d, den_d)), level)
        low, high = share - widen * (share - low), share + widen * (high - share)
    return {"share": share, "ci_low": low if np.isfinite(low) else None,
            "ci_high": high if np.isfinite(high) else None, "headroom": head,
            "no_headroom_draws": float(none.mean()), "n_seeds": int(stack.shape[1]), "n_items": int(stack.shape[2])}
