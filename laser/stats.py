"""Statistics for comparing methods: summaries with bootstrap intervals and paired tests.

Everything here is numpy; :func:`wilcoxon_signed_rank` uses ``scipy.stats.wilcoxon`` when scipy
is installed and an equivalent pure implementation otherwise (the result says which). The two
agree to floating-point precision (tested), so scipy is optional.

Training randomness lives in seeds, so a comparison of trained methods has two sources of
variation: which test items were drawn and which training seeds were run. The per-item tests
(:func:`paired_bootstrap`, :func:`wilcoxon_signed_rank` on pooled items) see only the first;
:func:`hierarchical_bootstrap` (:mod:`laser.stats_hier`) resamples both (the primary test of
``laser compare``), and
:func:`min_attainable_p` says when a test over n units cannot reach a significance level at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from laser.tasks.metrics import bootstrap_ci

__all__ = ["bootstrap_ci", "headroom_share", "hierarchical_bootstrap", "hierarchical_summary", "min_attainable_p",
           "paired_bootstrap", "summarize", "wilcoxon_signed_rank"]


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


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0,
                     level: float = 0.95) -> dict:
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
    return {"mean_diff": observed, "ci_low": float(low), "ci_high": float(high),
            "p_value": (1 + extreme) / (n_boot + 1), "n": int(d.size)}


def _rank_abs(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of |d| and the sizes of the tie groups."""
    a = np.abs(d)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size)
    _, start, counts = np.unique(a[order], return_index=True, return_counts=True)
    for s, c in zip(start, counts):
        ranks[order[s:s + c]] = s + (c + 1) / 2.0
    return ranks, counts


def _exact_counts(n: int) -> np.ndarray:
    """Number of sign assignments giving each W+ in 0..n(n+1)/2 (out of 2^n), by dynamic programming."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


def _wilcoxon_pure(d: np.ndarray, alternative: str) -> tuple[float, float, str]:
    ranks, ties = _rank_abs(d)
    n = d.size
    w_plus, w_minus = float(ranks[d > 0].sum()), float(ranks[d < 0].sum())
    stat = min(w_plus, w_minus) if alternative == "two-sided" else w_plus
    if n <= 50 and (ties == 1).all():
        counts = _exact_counts(n) / 2.0**n
        k = round(w_plus)
        cdf, sf = counts[:k + 1].sum(), counts[k:].sum()  # P(W+ <= w+), P(W+ >= w+)
        p = {"two-sided": min(1.0, 2 * min(cdf, sf)), "greater": sf, "less": cdf}[alternative]
        return stat, float(p), "exact"
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((ties**3 - ties).sum()) / 48.0
    z = (w_plus - mean) / math.sqrt(var) if var > 0 else 0.0

    def sf_normal(v: float) -> float:
        return 0.5 * math.erfc(v / math.sqrt(2.0))

    p = {"two-sided": min(1.0, 2 * sf_normal(abs(z))), "greater": sf_normal(z), "less": sf_normal(-z)}[alternative]
    return stat, float(p), "approx"


def wilcoxon_signed_rank(differences: Sequence[float], alternative: str = "two-sided",
                         use_scipy: bool = True) -> dict:
    """Wilcoxon signed-rank test of paired differences (zeros dropped: Wilcox's method).

    With the n non-zero differences ranked by |d| (average ranks for ties), ``W+`` is the
    rank sum of the positive ones. Without ties and with n <= 50 the p-value is exact: under
    the null each of the 2^n sign patterns is equally likely. Otherwise the normal
    approximation is used, ``z = (W+ - n(n+1)/4) / sqrt(n(n+1)(2n+1)/24 - sum(t^3 - t)/48)``
    over tie groups of size t, without continuity correction. This is scipy's
    ``wilcoxon(d, zero_method="wilcox", correction=False, method="auto")`` behaviour.

    Args:
        differences: paired differences a_i - b_i.
        alternative: "two-sided", "greater" (a > b) or "less".
        use_scipy: use ``scipy.stats.wilcoxon`` when it can be imported.

    Returns:
        ``{"statistic", "p_value", "n" (non-zero differences), "method" ("exact"|"approx"),
        "backend" ("scipy"|"numpy")}``. With no non-zero difference: statistic 0, p-value 1.

    Raises:
        ValueError: non-finite or empty input, or an unknown ``alternative``.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    d = _finite_1d(differences, "wilcoxon_signed_rank")
    d = d[d != 0]
    if d.size == 0:
        return {"statistic": 0.0, "p_value": 1.0, "n": 0, "method": "none", "backend": "numpy"}
    _, ties = _rank_abs(d)
    method = "exact" if d.size <= 50 and (ties == 1).all() else "approx"
    if use_scipy:
        try:
            from scipy.stats import wilcoxon
        except ImportError:
            pass
        else:
            res = wilcoxon(d, zero_method="wilcox", correction=False, alternative=alternative, method=method)
            return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "n": int(d.size),
                    "method": method, "backend": "scipy"}
    stat, p, method = _wilcoxon_pure(d, alternative)
    return {"statistic": stat, "p_value": p, "n": int(d.size), "method": method, "backend": "numpy"}


from laser.stats_hier import (HIERARCHICAL_TEST, MIN_SEEDS, components_scaled, headroom_share,  # noqa: E402,F401
                              hierarchical_bootstrap, hierarchical_summary, resampled_means, t_sf,
                              variance_components)


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
        min_p = min(1.0, 2.0 * 0.5 ** n)
    elif test == "bootstrap":
        min_p = 1.0 / (n_boot + 1) if n >= 1 else 1.0
    elif test == "hierarchical_bootstrap":
        min_p = 1.0 / (n_boot + 1) if n >= MIN_SEEDS else 1.0
    else:
        raise ValueError(f"min_attainable_p: unknown test {test!r} (valid: wilcoxon, sign, bootstrap, "
                         "hierarchical_bootstrap)")
    unit = "items" if test == "bootstrap" else "seeds"
    if test == "hierarchical_bootstrap" and n < MIN_SEEDS:
        note = f"n/a ({n} seed{'s' if n != 1 else ''}: < {MIN_SEEDS}, seed variance not estimated)"
    else:
        note = f"n/a ({n} {unit}: min p {min_p:.3g})"
    return {"test": test, "n": int(n), "min_p": min_p, "can_reach": bool(min_p <= alpha), "note": note}
