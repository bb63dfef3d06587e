"""Numbers of the compare report, computed from finished jobs (pure functions over JSON-able data).

A *job result* is what :func:`laser.bench.compare.runner.run_job` returns: per-prompt test correctness
(``ids``, ``domains``, ``correct``), accuracy per iteration, per-step arms, RM calls, wall time.
"""

from __future__ import annotations

import numpy as np

from laser.bench.compare.stats import (
    headroom_share,
    hierarchical_bootstrap,
    hierarchical_summary,
    min_attainable_p,
    paired_bootstrap,
    summarize,
    wilcoxon_signed_rank,
)


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


def seed_item_matrices(
    runs_by_method: list[list[dict]], domain: str | None = None
) -> tuple[list[np.ndarray], str] | None:
    """Correctness of several methods as ``(n_seeds, n_items)`` matrices on shared items.

    Items are the (seed, test id) pairs every method has (of ``domain`` only, when given), in the
    first method's order. The design is ``crossed`` when every seed has the same test ids (a user's
    test set), else ``nested`` (the embedded benchmark draws its test set per seed).

    Returns:
        ``([matrix per method], design)``, or None when seeds end up with different numbers of
        items (no rectangular grid; callers fall back to per-item statistics).
    """
    maps = [
        {(r["seed"], i): (c, dom) for r in runs for i, c, dom in zip(r["ids"], r["correct"], r["domains"], strict=True)}
        for runs in runs_by_method
    ]
    ids: dict = {}
    for r in sorted(runs_by_method[0], key=lambda r: r["seed"]):
        ids[r["seed"]] = [
            i
            for i, dom in zip(r["ids"], r["domains"], strict=True)
            if (domain is None or dom == domain) and all((r["seed"], i) in m for m in maps[1:])
        ]
    if not ids or len({len(v) for v in ids.values()}) != 1 or not next(iter(ids.values())):
        return None
    mats = [np.array([[m[(s, i)][0] for i in v] for s, v in ids.items()], dtype=float) for m in maps]
    design = "crossed" if len({tuple(v) for v in ids.values()}) == 1 else "nested"
    return mats, design


def method_summary(runs: list[dict], domains: list[str], n_boot: int = 2000) -> dict:
    """Per domain and on average: mean over seeds x prompts, std of the per-seed accuracies, and a
    95% interval of the mean from the two-level bootstrap over seeds and items
    (:func:`laser.bench.compare.stats.hierarchical_summary`); a pooled item bootstrap where seeds have different
    numbers of items.

    The average is over all test prompts; every domain has the same number, so it equals the
    macro average of the domain accuracies.
    """
    out = {}
    for d in [*domains, "average"]:
        grid = seed_item_matrices([runs], None if d == "average" else d)
        if grid is not None:
            s = hierarchical_summary(grid[0][0], n_boot=n_boot, seed=0, design=grid[1])
            out[d] = {k: s[k] for k in ("mean", "std_seeds", "ci_low", "ci_high", "n")}
            continue
        pooled, per_seed = [], []
        for r in runs:
            mine = [c for c, dom in zip(r["correct"], r["domains"], strict=True) if d == "average" or dom == d]
            pooled += mine
            per_seed.append(float(np.mean(mine)))
        s = summarize(pooled, n_boot=n_boot, seed=0)
        out[d] = {
            "mean": s["mean"],
            "std_seeds": float(np.std(per_seed)),
            "ci_low": s["ci_low"],
            "ci_high": s["ci_high"],
            "n": s["n"],
        }
    return out


def paired_items(a_runs: list[dict], b_runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two methods on the same (seed, prompt) items, aligned."""
    b_of = {(r["seed"], i): c for r in b_runs for i, c in zip(r["ids"], r["correct"], strict=True)}
    a, b = [], []
    for r in a_runs:
        for i, c in zip(r["ids"], r["correct"], strict=True):
            if (r["seed"], i) in b_of:
                a.append(c)
                b.append(b_of[(r["seed"], i)])
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


def paired_test(a_runs: list[dict], b_runs: list[dict], n_boot: int = 10000) -> dict:
    """Method a against method b on shared (seed, prompt) items.

    Primary (``diff``, ``ci_low``, ``ci_high``, ``p_value``, ``test``): the hierarchical bootstrap
    over seeds and items (:func:`laser.bench.compare.stats.hierarchical_bootstrap`); ``p_note`` replaces the
    p-value with fewer than ``MIN_SEEDS`` seeds. Secondary: the Wilcoxon signed-rank test over
    the per-seed accuracy differences (``p_seeds_wilcoxon``; ``seeds_wilcoxon_note`` says "n/a
    (5 seeds: min p 0.0625)" where it cannot reach 0.05), and the per-item tests that treat the
    pooled items as independent (``p_wilcoxon``, ``p_bootstrap``, ``ci_item``).
    """
    a, b = paired_items(a_runs, b_runs)
    if a.size == 0:
        return {"n": 0}
    w = wilcoxon_signed_rank(a - b)
    pb = paired_bootstrap(a, b, n_boot=n_boot, seed=0)
    out = {
        "n": int(a.size),
        "diff": pb["mean_diff"],
        "ci_low": pb["ci_low"],
        "ci_high": pb["ci_high"],
        "p_value": pb["p_value"],
        "test": "paired bootstrap over pooled items",
        "p_bootstrap": pb["p_value"],
        "ci_item": [pb["ci_low"], pb["ci_high"]],
        "p_wilcoxon": w["p_value"],
        "n_nonzero": w["n"],
        "wins": int((a > b).sum()),
        "losses": int((a < b).sum()),
    }
    grid = seed_item_matrices([a_runs, b_runs])
    if grid is None:
        out["p_note"] = "seeds have different numbers of items: per-item bootstrap only"
        return out
    (ma, mb), design = grid
    h = hierarchical_bootstrap(ma, mb, n_boot=n_boot, seed=0, design=design)
    out.update(
        diff=h["mean_diff"],
        ci_low=h["ci_low"],
        ci_high=h["ci_high"],
        p_value=h["p_value"],
        test=h["test"],
        df=h["df"],
        n_seeds=h["n_seeds"],
        design=design,
    )
    if (chk := min_attainable_p("hierarchical_bootstrap", h["n_seeds"])) and not chk["can_reach"]:
        out["p_note"] = chk["note"]
    seed_diff = ma.mean(axis=1) - mb.mean(axis=1)
    sw = wilcoxon_signed_rank(seed_diff)
    out["p_seeds_wilcoxon"] = sw["p_value"]
    chk = min_attainable_p("wilcoxon", sw["n"])
    if not chk["can_reach"]:
        out["seeds_wilcoxon_note"] = chk["note"]
    return out


def headroom(
    main: dict[str, list[dict]], extra: dict[str, list[dict]] | None = None, n_boot: int = 10000
) -> dict | None:
    """Where each method lies between ``random`` and ``oracle``: share of the headroom captured,
    ``(m - random) / (oracle - random)``, with its interval (:func:`laser.bench.compare.stats.headroom_share`).

    Args:
        main: method name -> runs (one per seed); needs ``random`` and ``oracle``.
        extra: more rows (e.g. ``{"sft": runs}``) placed on the same scale.

    Returns:
        None without both ``random`` and ``oracle`` runs; else ``{"methods": {name: share dict},
        "oracle_vs_random": paired_test(oracle, random)}``.
    """
    if "random" not in main or "oracle" not in main:
        return None
    out = {"methods": {}, "oracle_vs_random": paired_test(main["oracle"], main["random"], n_boot)}
    for name, runs in {**main, **(extra or {})}.items():
        grid = seed_item_matrices([runs, main["random"], main["oracle"]])
        if grid is not None:
            (m, rnd, orc), design = grid
            out["methods"][name] = headroom_share(m, rnd, orc, n_boot=n_boot, seed=0, design=design)
    return out


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
            for arm, dom in zip(s["arms"], s["domains"], strict=True):
                if arm < 0:
                    continue
                it_counts[s["iteration"], arm] += 1
                dom_counts.setdefault(dom, np.zeros(K))[arm] += 1
                if split_step is not None:
                    halves[int(s["global_step"] >= split_step), arm] += 1

    def share(c):
        return (c / c.sum()).tolist() if c.sum() else [0.0] * K

    out = {
        "by_iteration": [share(c) for c in it_counts],
        "by_domain": {d: dict(zip(rm_names, share(c), strict=True)) for d, c in sorted(dom_counts.items())},
    }
    if split_step is not None:
        out["before"], out["after"] = (dict(zip(rm_names, share(h), strict=True)) for h in halves)
    return out


def mechanism(runs: list[dict], best_rm: dict[str, int], n_responses: int) -> dict:
    """Why a method trains well or not, pooled over seeds (all iterations).

    Returns:
        ``{"best_rm_share"}``: share of prompts scored by their domain's best RM (``best_rm``:
        domain -> arm; the ensembles, which score with every RM, get None); ``"pair_gold"``: mean
        over steps of the trained pairs' gold ``pair_accuracy`` (correct(chosen) - correct(rejected),
        in [-1, 1]; None when not logged); ``"calls_per_response"``: RM scorings per response (the ``responses_scored``
        counter, summed over RMs, over the responses generated);
        ``"label_model_ms"``: median label-model time per step (the reliability router only).
    """
    hit = total = 0
    for r in runs:
        for s in r["steps"]:
            for arm, dom in zip(s["arms"], s["domains"], strict=True):
                if arm >= 0 and dom in best_rm:
                    hit, total = hit + int(arm == best_rm[dom]), total + 1
    gold = [r["pair_gold"] for r in runs if r.get("pair_gold") is not None]
    times = [t for r in runs for t in r.get("label_model_s") or []]
    return {
        "best_rm_share": hit / total if total else None,
        "pair_gold": float(np.mean(gold)) if gold else None,
        "calls_per_response": float(np.mean([r["responses_scored"] for r in runs])) / n_responses,
        "label_model_ms": 1000 * float(np.median(times)) if times else None,
    }


def accuracy_curve(runs: list[dict]) -> dict:
    """Average accuracy per iteration (0 = the SFT start): mean and std over seeds."""
    per = np.array([[a["average"] for a in r["accuracy_by_iteration"]] for r in runs])
    return {"mean": per.mean(axis=0).tolist(), "std": per.std(axis=0).tolist()}


def win_rate_pooled(a_runs: list[dict], b_runs: list[dict], test_prompts: dict, judge, n_boot: int = 2000) -> dict:
    """Head-to-head win rate of a over b under ``judge`` on the same (seed, prompt) items, pooled
    over seeds (:func:`laser.tasks.metrics.win_rate`, both presentation orders)."""
    from laser.tasks.metrics import win_rate

    b_of = {(r["seed"], i): t for r in b_runs for i, t in zip(r["ids"], r["texts"], strict=True)}
    prompts, ra, rb = [], [], []
    for r in a_runs:
        for i, t in zip(r["ids"], r["texts"], strict=True):
            if (r["seed"], i) in b_of:
                prompts.append(test_prompts[(r["seed"], i)])
                ra.append(t)
                rb.append(b_of[(r["seed"], i)])
    return win_rate(prompts, ra, rb, judge, n_boot=n_boot, seed=0)
