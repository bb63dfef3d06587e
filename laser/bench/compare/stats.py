"""Statistics of `laser compare`: bootstrap summaries, paired tests, and the two-level bootstrap.

Training randomness lives in seeds, so a comparison of trained methods has two sources of
variation: which test items were drawn and which training seeds were run. The per-item tests
(:func:`paired_bootstrap`, :func:`wilcoxon_signed_rank` on pooled items) see only the first;
:func:`hierarchical_bootstrap` resamples both (the primary test of ``laser compare``), and
:func:`min_attainable_p` says when a test over n units cannot reach a significance level at all.

Two-level outcomes are ``(n_seeds, n_items)`` matrices (e.g. 0/1 correctness of each test item
under each training seed). Two designs: ``crossed``, the same N test items under every seed (a
user's test set), and ``nested``, each seed with its own N items (the embedded benchmark draws its
test set per seed). The two-level bootstrap is ours and is calibrated in two ways, both checked by
simulation in ``tests/bench/test_stats.py``: its variance is matched to the random-effects estimate
(:func:`components_scaled`), and its tails to a Student t with Satterthwaite's degrees of freedom
(:func:`t_widen`), because with 5 seeds the seed-to-seed part of the variance rests on 4 degrees
of freedom. Student's t and the Wilcoxon signed-rank test are scipy's (the ``stats`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

try:
    from scipy import stats as _sps
except ImportError as exc:  # pragma: no cover - exercised by tests/bench/test_compare.py with scipy hidden
    raise ImportError("laser compare's statistics need scipy: pip install 'laser-rm[stats]'") from exc

from laser.tasks.metrics import bootstrap_ci

__all__ = [
    "DESIGNS",
    "HIERARCHICAL_TEST",
    "MIN_SEEDS",
    "bootstrap_ci",
    "components_scaled",
    "headroom_share",
    "hierarchical_bootstrap",
    "hierarchical_summary",
    "min_attainable_p",
    "paired_bootstrap",
    "resampled_means",
    "summarize",
    "t_calibrated_p",
    "t_widen",
    "variance_components",
    "wilcoxon_signed_rank",
]

DESIGNS = ("crossed", "nested")
#: what the p-value of :func:`hierarchical_bootstrap` is called in reports
HIERARCHICAL_TEST = "hierarchical bootstrap over seeds and items"
#: fewest seeds whose resampling estimates seed-to-seed variance at all (see :func:`min_attainable_p`)
MIN_SEEDS = 3


def _finite_1d(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what}: need a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: values must be finite (drop NaN items first)")
    return x


def summarize(values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean, population standard deviation and percentile-bootstrap interval of the mean.

    Returns:
        ``{"mean", "std", "ci_low", "ci_high", "n"}``.
    """
    x = _finite_1d(values, "summarize")
    low, high = bootstrap_ci(x, n_boot=n_boot, seed=seed, level=level)
    return {"mean": float(x.mean()), "std": float(x.std()), "ci_low": low, "ci_high": high, "n": int(x.size)}


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> dict:
    """Paired bootstrap of the mean difference ``mean(a - b)``, with a two-sided p-value.

    The pairs ``d_i = a_i - b_i`` are resampled with replacement ``n_boot`` times. The interval
    is the percentile interval of the resampled means. The p-value tests mean(d) = 0 by
    resampling the null-centred differences ``d_i - mean(d)``:

        p = (1 + #{ |mean(d*_centred)| >= |mean(d)| }) / (n_boot + 1)

    (the +1 counts the observed sample, so p is never 0: its floor is 1/(n_boot+1)).

    Args:
        a: per-item outcomes of system a (e.g. 0/1 correctness).
        b: the same items' outcomes of system b, same order.
        n_boot: resamples; seed: resampling seed; level: interval coverage.

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "p_value", "n"}``.
    """
    x, y = _finite_1d(a, "paired_bootstrap a"), _finite_1d(b, "paired_bootstrap b")
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap: a and b differ in length ({x.size} vs {y.size})")
    d = x - y
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    centred = means - observed  # the same resamples of d - mean(d)
    extreme = int((np.abs(centred) >= abs(observed) - 1e-12).sum())
    return {
        "mean_diff": observed,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": (1 + extreme) / (n_boot + 1),
        "n": int(d.size),
    }


def wilcoxon_signed_rank(differences: Sequence[float], alternative: str = "two-sided") -> dict:
    """Wilcoxon signed-rank test of paired differences (zeros dropped: Wilcox's method), by scipy.

    With the n non-zero differences ranked by |d| (average ranks for ties), ``W+`` is the
    rank sum of the positive ones. Without ties and with n <= 50 the p-value is exact: under
    the null each of the 2^n sign patterns is equally likely. Otherwise the normal
    approximation is used, ``z = (W+ - n(n+1)/4) / sqrt(n(n+1)(2n+1)/24 - sum(t^3 - t)/48)``
    over tie groups of size t, without continuity correction: ``scipy.stats.wilcoxon(d,
    zero_method="wilcox", correction=False, method=...)`` with the method chosen here, so the
    choice does not move with scipy's ``"auto"`` rule across versions.

    Args:
        differences: paired differences a_i - b_i.
        alternative: "two-sided", "greater" (a > b) or "less".

    Returns:
        ``{"statistic", "p_value", "n" (non-zero differences), "method" ("exact"|"approx")}``;
        the statistic is min(W+, W-) two-sided, W+ one-sided. With no non-zero difference:
        statistic 0, p-value 1, method "none".

    Raises:
        ValueError: non-finite or empty input, or an unknown ``alternative``.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    d = _finite_1d(differences, "wilcoxon_signed_rank")
    d = d[d != 0]
    if d.size == 0:
        return {"statistic": 0.0, "p_value": 1.0, "n": 0, "method": "none"}
    ties = np.unique(np.abs(d)).size < d.size
    method = "exact" if d.size <= 50 and not ties else "approx"
    res = _sps.wilcoxon(d, zero_method="wilcox", correction=False, alternative=alternative, method=method)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "n": int(d.size), "method": method}


def min_attainable_p(test: str, n: int, alpha: float = 0.05, n_boot: int = 10000) -> dict:
    """The smallest p-value ``test`` can give over ``n`` units, and whether it can reach ``alpha``.

    * ``"wilcoxon"`` / ``"sign"`` (exact, two-sided, n non-zero differences): all n differences
      of one sign is the most extreme outcome, 2 of the 2^n equally likely sign patterns, so
      ``min p = 2 / 2^n``: 0.0625 for 5 seeds, 0.03125 for 6. Normal-approximation p-values
      can go lower but are not trustworthy there, so the exact floor is the one that counts.
    * ``"bootstrap"`` (n items): ``1 / (n_boot + 1)``.
    * ``"hierarchical_bootstrap"`` (n seeds): ``1 / (n_boot + 1)`` from :data:`MIN_SEEDS` seeds
      on; with fewer, the seed-to-seed variance is not estimated (one seed: none at all; two:
      3 distinct seed resamples), so the p-value is refused (min p reported as 1).

    Returns:
        ``{"test", "n", "min_p", "can_reach" (min_p <= alpha), "note"}``; ``note`` is what a
        report prints in place of a p-value that cannot be evidence, e.g.
        ``"n/a (5 seeds: min p 0.0625)"``.

    Raises:
        ValueError: unknown test or n < 0.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"min_attainable_p: n must be an integer >= 0, got {n!r}")
    if test in ("wilcoxon", "sign"):
        min_p = min(1.0, 2.0 * 0.5**n)
    elif test == "bootstrap":
        min_p = 1.0 / (n_boot + 1) if n >= 1 else 1.0
    elif test == "hierarchical_bootstrap":
        min_p = 1.0 / (n_boot + 1) if n >= MIN_SEEDS else 1.0
    else:
        raise ValueError(
            f"min_attainable_p: unknown test {test!r} (valid: wilcoxon, sign, bootstrap, hierarchical_bootstrap)"
        )
    unit = "items" if test == "bootstrap" else "seeds"
    if test == "hierarchical_bootstrap" and n < MIN_SEEDS:
        note = f"n/a ({n} seed{'s' if n != 1 else ''}: < {MIN_SEEDS}, seed variance not estimated)"
    else:
        note = f"n/a ({n} {unit}: min p {min_p:.3g})"
    return {"test": test, "n": int(n), "min_p": min_p, "can_reach": bool(min_p <= alpha), "note": note}


# ----------------------------------------------------------------------------- seeds x items
def _grids(mats: Sequence, what: str) -> np.ndarray:
    """Validate same-shape finite ``(n_seeds, n_items)`` matrices; returns them stacked ``(M, S, N)``."""
    out = [np.asarray(m, dtype=np.float64) for m in mats]
    for m in out:
        if m.ndim != 2 or 0 in m.shape:
            raise ValueError(f"{what}: need a non-empty (n_seeds, n_items) array, got shape {m.shape}")
        if m.shape != out[0].shape:
            raise ValueError(
                f"{what}: arrays differ in shape ({out[0].shape} vs {m.shape}); the same seeds "
                "and items are needed for every method"
            )
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


def resampled_means(
    mats: Sequence, n_boot: int, seed: int = 0, design: str = "crossed", chunk: int = 1 << 21
) -> np.ndarray:
    """Grand means of each ``(S, N)`` matrix over ``n_boot`` two-level resamples shared by all.

    One resample draws S seeds with replacement, then items with replacement:

    * ``crossed``: one draw of N items, applied to every resampled seed; the statistic is the
      mean over the S x N resampled grid, ``w^T M u / (S N)`` (w seed counts, u item counts).
    * ``nested``: each resampled seed gets its own draw of N of its items.

    Item indices come from ``default_rng(seed)`` (shape ``(n_boot, N)`` crossed, ``(n_boot, S, N)``
    nested: with one seed both are :func:`paired_bootstrap`'s draws), seed indices
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
            out[lo : lo + c] = ((w[None] @ stack) * u[None]).sum(-1).T / (S * N)
        else:
            items = item_rng.integers(0, N, size=(c, S, N))
            flat = seed_rng.integers(0, S, size=(c, S))[:, :, None] * N + items
            out[lo : lo + c] = stack.reshape(M, -1)[:, flat].mean(axis=(2, 3)).T
    return out


def variance_components(d: np.ndarray, design: str) -> dict:
    """Parts of ``d = m + alpha_s + beta_i + e_si`` and the grand mean's variance estimate.

    ``alpha`` seed effects (row means - m), ``beta`` item effects (column means - m; zero when
    nested), ``e`` the rest; ``v_x`` is the mean square of part x. Estimates, with the seed level
    corrected by S / (S - 1) and the item level in the plain bootstrap's convention (as
    :func:`paired_bootstrap`, so one seed gives the item bootstrap unchanged):

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
    v_a, v_b, v_e = float((alpha**2).mean()), float((beta**2).mean()), float((e**2).mean())
    if S == 1:  # the item bootstrap: var(mean) = v_beta / N
        return {
            "m": m,
            "alpha": alpha,
            "beta": beta,
            "e": e,
            "v_alpha": 0.0,
            "v_beta": v_b,
            "v_e": 0.0,
            "s_seed": 0.0,
            "s_item": v_b,
            "s_e": 0.0,
            "var": v_b / N,
            "df": float(max(N - 1, 1)),
        }
    crossed = design == "crossed"
    s_e = S * v_e / (S - 1) if crossed else v_e
    s_seed = max(S * v_a / (S - 1) - s_e / N, 0.0)
    s_item = max(v_b - s_e / S, 0.0) if crossed else 0.0
    terms = [(s_seed / S, S - 1), (s_item / N, N - 1), (s_e / (S * N), (S - 1) * (N - 1) if crossed else S * (N - 1))]
    var = sum(t for t, _ in terms)
    den = sum(t * t / max(f, 1) for t, f in terms)
    df = var * var / den if den > 0 else math.inf
    return {
        "m": m,
        "alpha": alpha,
        "beta": beta,
        "e": e,
        "v_alpha": v_a,
        "v_beta": v_b,
        "v_e": v_e,
        "s_seed": s_seed,
        "s_item": s_item,
        "s_e": s_e,
        "var": var,
        "df": df,
    }


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

    return (
        c["m"]
        + scale(c["s_seed"], c["v_alpha"]) * c["alpha"]
        + scale(c["s_item"], c["v_beta"]) * c["beta"]
        + scale(c["s_e"], c["v_e"]) * c["e"]
    )


# ----------------------------------------------------------------------------- Student t tails
def t_widen(df: float, level: float) -> float:
    """``t_{df}(q) / z(q)``, q = (1 + level) / 2: how much farther a t bound lies than a normal one."""
    q = (1.0 + level) / 2.0
    return float(_sps.t.ppf(q, df) / _sps.norm.ppf(q))


def t_calibrated_p(p_boot: float, df: float) -> float:
    """A two-sided bootstrap p-value read as a normal z, then referred to Student's t(df).

    For a normal bootstrap distribution of variance V this is the t-test of mean / sqrt(V) with
    ``df`` degrees of freedom; the bootstrap's own shape is kept otherwise.
    """
    if p_boot >= 1.0:
        return 1.0
    z = _sps.norm.isf(p_boot / 2.0)
    return min(1.0, 2.0 * float(_sps.t.sf(z, df)))


# ----------------------------------------------------------------------------- tests and summaries
def _interval(draws: np.ndarray, centre: float, level: float, widen: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(centre - widen * (centre - low)), float(centre + widen * (high - centre))


def hierarchical_bootstrap(
    a: Sequence,
    b: Sequence,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    design: str = "crossed",
    t_tails: bool = True,
) -> dict:
    """Paired two-level bootstrap of ``mean(a - b)`` over seeds and items, with a two-sided p-value.

    ``a`` and ``b`` are ``(n_seeds, n_items)`` outcomes of two methods on the same seeds and items.
    The differences ``d = a - b``, scaled by :func:`components_scaled`, are resampled by
    :func:`resampled_means`. The raw p-value, as in :func:`paired_bootstrap`:

        p_boot = (1 + #{ |mean(d*) - mean(d)| >= |mean(d)| }) / (n_boot + 1)

    and the percentile interval. With ``t_tails`` (default) both are referred to Student's t with
    Satterthwaite's df (:func:`variance_components`): p = :func:`t_calibrated_p`, and the interval's
    half-widths grow by :func:`t_widen` (about 1.42 at 4 df, 1.0 with many). Without it, one seed
    gives :func:`paired_bootstrap` exactly (same draws).

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
    return {
        "mean_diff": observed,
        "ci_low": low,
        "ci_high": high,
        "p_value": t_calibrated_p(p_boot, df) if t_tails else p_boot,
        "p_boot": p_boot,
        "df": df,
        "n_seeds": int(d.shape[0]),
        "n_items": int(d.shape[1]),
        "design": design,
        "test": HIERARCHICAL_TEST,
    }


def hierarchical_summary(
    x: Sequence, n_boot: int = 2000, seed: int = 0, level: float = 0.95, design: str = "crossed"
) -> dict:
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
    return {
        "mean": float(m.mean()),
        "std_seeds": float(m.mean(axis=1).std()),
        "ci_low": low,
        "ci_high": high,
        "n": int(m.size),
        "n_seeds": int(m.shape[0]),
    }


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


def headroom_share(
    m: Sequence,
    random: Sequence,
    oracle: Sequence,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    design: str = "crossed",
) -> dict:
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
    num, den = resampled_means(
        [components_scaled(num_d, design), components_scaled(den_d, design)], n_boot, seed, design
    ).T
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
    return {
        "share": share,
        "ci_low": low if np.isfinite(low) else None,
        "ci_high": high if np.isfinite(high) else None,
        "headroom": head,
        "no_headroom_draws": float(none.mean()),
        "n_seeds": int(stack.shape[1]),
        "n_items": int(stack.shape[2]),
    }
