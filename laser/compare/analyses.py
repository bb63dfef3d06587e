"""Numbers of the compare report, computed from finished jobs (pure functions over JSON-able data).

A *job result* is what :func:`laser.compare.runner.run_job` returns: per-prompt test correctness
(``ids``, ``domains``, ``correct``), accuracy per iteration, per-step arms, RM calls, wall time.
"""

from __future__ import annotations

import numpy as np

from laser.stats import paired_bootstrap, summarize, wilcoxon_signed_rank


def agreement_counts(scores: np.ndarray, correct: np.ndarray) -> dict:
    """How often two RMs order the same sampled response pair the same way.

    Args:
        scores: ``(K, P, n)`` scores of n sampled responses for each of P prompts by K RMs.
        correct: ``(P, n)`` 1.0 / 0.0 correctness of each response (the "correct" row/column:
            it orders only pairs of one right and one wrong response).

    Returns:
        ``{"agree": (K+1, K+1) counts, "total": (K+1, K+1) counts}`` as nested lists: over all
        within-prompt pairs i < j, ``total[a][b]`` counts pairs both orderers order strictly,
        ``agree[a][b]`` those they order the same way. Equal scores (a tie) order nothing.
    """
    K, _, n = scores.shape
    order = np.concatenate([scores, correct[None]], axis=0)  # (K+1, P, n)
    i, j = np.triu_indices(n, k=1)
    sign = np.sign(order[:, :, i] - order[:, :, j]).reshape(K + 1, -1)  # (K+1, P * pairs)
    sign = np.where(np.isfinite(sign), sign, 0.0)
    both = (sign[:, None, :] != 0) & (sign[None, :, :] != 0)
    same = both & (sign[:, None, :] == sign[None, :, :])
    return {"agree": same.sum(-1).tolist(), "total": both.sum(-1).tolist()}


def agreement_matrix(counts: list[dict]) -> dict:
    """Pooled agreement fractions over seeds: ``{"matrix": (K+1, K+1), "n_pairs": (K+1, K+1)}``."""
    agree = sum(np.asarray(c["agree"], dtype=float) for c in counts)
    total = sum(np.asarray(c["total"], dtype=float) for c in counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, agree / np.maximum(total, 1), np.nan)
    return {"matrix": frac.tolist(), "n_pairs": total.astype(int).tolist()}


def method_summary(runs: list[dict], domains: list[str], n_boot: int = 2000) -> dict:
    """Per domain and on average: mean over seeds x prompts, std of the per-seed accuracies, and a
    95% percentile-bootstrap interval of the mean over the pooled (seed, prompt) items.

    The average is over all test prompts; every domain has the same number, so it equals the
    macro average of the domain accuracies.
    """
    out = {}
    for d in [*domains, "average"]:
        pooled, per_seed = [], []
        for r in runs:
            mine = [c for c, dom in zip(r["correct"], r["domains"]) if d == "average" or dom == d]
            pooled += mine
            per_seed.append(float(np.mean(mine)))
        s = summarize(pooled, n_boot=n_boot, seed=0)
        out[d] = {"mean": s["mean"], "std_seeds": float(np.std(per_seed)), "ci_low": s["ci_low"],
                  "ci_high": s["ci_high"], "n": s["n"]}
    return out


def paired_items(a_runs: list[dict], b_runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two methods on the same (seed, prompt) items, aligned."""
    b_of = {(r["seed"], i): c for r in b_runs for i, c in zip(r["ids"], r["correct"])}
    a, b = [], []
    for r in a_runs:
        for i, c in zip(r["ids"], r["correct"]):
            if (r["seed"], i) in b_of:
                a.append(c)
                b.append(b_of[(r["seed"], i)])
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


def paired_test(a_runs: list[dict], b_runs: list[dict], n_boot: int = 10000) -> dict:
    """Method a against method b on shared (seed, prompt) items: Wilcoxon signed-rank on the
    per-item differences and a paired bootstrap interval of the mean difference."""
    a, b = paired_items(a_runs, b_runs)
    if a.size == 0:
        return {"n": 0}
    w = wilcoxon_signed_rank(a - b)
    pb = paired_bootstrap(a, b, n_boot=n_boot, seed=0)
    return {"n": int(a.size), "diff": pb["mean_diff"], "ci_low": pb["ci_low"], "ci_high": pb["ci_high"],
            "p_bootstrap": pb["p_value"], "p_wilcoxon": w["p_value"], "n_nonzero": w["n"],
            "wins": int((a > b).sum()), "losses": int((a < b).sum()), "wilcoxon_backend": w["backend"]}


def selection_shares(runs: list[dict], rm_names: list[str], split_step: int | None = None) -> dict:
    """Share of prompts scored by each RM: per iteration, per domain, and before/after a step.

    Returns:
        ``{"by_iteration": [[share per RM] per iteration], "by_domain": {domain: {rm: share}},
        "before": {rm: share}, "after": {rm: share}}`` pooled over seeds (before/after only
        with ``split_step``: steps < split_step vs >= split_step).
    """
    K = len(rm_names)
    n_it = 1 + max(s["iteration"] for r in runs for s in r["steps"])
    it_counts, dom_counts = np.zeros((n_it, K)), {}
    halves = np.zeros((2, K))
    for r in runs:
        for s in r["steps"]:
            for arm, dom in zip(s["arms"], s["domains"]):
                if arm < 0:
                    continue
                it_counts[s["iteration"], arm] += 1
                dom_counts.setdefault(dom, np.zeros(K))[arm] += 1
                if split_step is not None:
                    halves[int(s["global_step"] >= split_step), arm] += 1

    def share(c):
        return (c / c.sum()).tolist() if c.sum() else [0.0] * K

    out = {"by_iteration": [share(c) for c in it_counts],
           "by_domain": {d: dict(zip(rm_names, share(c))) for d, c in sorted(dom_counts.items())}}
    if split_step is not None:
        out["before"], out["after"] = (dict(zip(rm_names, share(h))) for h in halves)
    return out


def accuracy_curve(runs: list[dict]) -> dict:
    """Average accuracy per iteration (0 = the SFT start): mean and std over seeds."""
    per = np.array([[a["average"] for a in r["accuracy_by_iteration"]] for r in runs])
    return {"mean": per.mean(axis=0).tolist(), "std": per.std(axis=0).tolist()}


def win_rate_pooled(a_runs: list[dict], b_runs: list[dict], test_prompts: dict, judge, n_boot: int = 2000) -> dict:
    """Head-to-head win rate of a over b under ``judge`` on the same (seed, prompt) items, pooled
    over seeds (:func:`laser.tasks.metrics.win_rate`, both presentation orders)."""
    from laser.tasks.metrics import win_rate

    b_of = {(r["seed"], i): t for r in b_runs for i, t in zip(r["ids"], r["texts"])}
    prompts, ra, rb = [], [], []
    for r in a_runs:
        for i, t in zip(r["ids"], r["texts"]):
            if (r["seed"], i) in b_of:
                prompts.append(test_prompts[(r["seed"], i)])
                ra.append(t)
                rb.append(b_of[(r["seed"], i)])
    return win_rate(prompts, ra, rb, judge, n_boot=n_boot, seed=0)
