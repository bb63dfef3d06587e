"""The compare report: results.json, report.md with embedded PNGs, and the terminal table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from laser.bench.compare import analyses as A
from laser.bench.compare.methods import selects_arms
from laser.bench.runs import LASER

TESTS = (
    "Paired comparison of `laser` against each baseline on the same (seed, test prompt) items. Primary "
    "(the interval and `p`): a **hierarchical bootstrap over seeds and items** (10,000 resamples): each "
    "resample draws seeds with replacement, then test items with replacement (one item draw for all seeds "
    "when every seed has the same test set, else one per seed); the seed, item and residual parts of the "
    "per-item differences are rescaled so that the resampled mean's variance is the random-effects estimate, "
    "and the interval and p-value are referred to Student's t with Satterthwaite's degrees of freedom, since "
    "few seeds carry the seed-to-seed variance. Secondary: the Wilcoxon signed-rank test over the per-seed "
    "accuracy differences (shown as n/a where the seed count cannot reach p < 0.05: 5 seeds give at least "
    "2/32 = 0.0625), and per-item tests (Wilcoxon signed-rank and paired bootstrap over the pooled items) that "
    "treat items as independent and so ignore seed-to-seed variance. Accuracy intervals: the same two-level "
    "bootstrap (2,000 resamples) of the mean; `std` is the standard deviation of the per-seed accuracies. "
    "Headroom share: (m - random) / (oracle - random) per bootstrap draw, same resampling; unbounded where "
    "oracle - random <= 0 in more than 2.5% of the draws. No correction for multiple comparisons."
)


def _p_cell(v: dict, key: str = "p_value", note: str = "p_note") -> str:
    """A p-value as printed, or "n/a (...)" where the test cannot be evidence."""
    if v.get(note):
        return v[note] if v[note].startswith("n/a") else f"n/a ({v[note]})"
    return f"{v[key]:.3g}" if v.get(key) is not None else ""


def _share_cell(h: dict | None) -> str:
    """A headroom share with its interval, in %: "62 [35, 88]"; "n/a" without headroom."""
    if not h or h.get("share") is None:
        return "n/a"
    low = "-inf" if h["ci_low"] is None else f"{100 * h['ci_low']:.0f}"
    high = "+inf" if h["ci_high"] is None else f"{100 * h['ci_high']:.0f}"
    return f"{100 * h['share']:.0f} [{low}, {high}]"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def load_step_cost(path: str | None) -> dict | None:
    """A ``benchmarks/step_cost.py --json`` result, or None.

    Raises:
        ValueError: the file is missing or not a step_cost result (named).
    """
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"step_cost: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or "linucb" not in data.get("methods", {}):
        raise ValueError(f"step_cost: {path} is not a benchmarks/step_cost.py --json result (no methods.linucb)")
    return data


def _best_rm(cfg, rm_names: list[str]) -> dict[str, int]:
    """The benchmark's design: domain -> the arm of its expert RM (the oracle's map)."""
    from laser.bench.runs import demo_rms, oracle_map

    return {d: rm_names.index(n) for d, n in oracle_map(demo_rms(cfg.settings, 0)).items() if n in rm_names}


def build_results(cfg, jobs: dict, data: dict, rm_names: list[str], wall_time_s: float) -> dict:
    """Every number of the report, JSON-able."""
    from laser.bench.compare.judged import QualityJudge

    main = jobs["main"]
    domains = sorted({d for r in next(iter(main.values())) for d in r["domains"]})
    sft_runs = [{**d.sft, "seed": s} for s, d in data.items()]
    res = {
        "settings": dataclasses.asdict(cfg.settings),
        "seeds": sorted(data),
        "rms": rm_names,
        "domains": domains,
        "wall_time_s": wall_time_s,
        "tests": TESTS,
        "sft": {"accuracy": A.method_summary(sft_runs, domains, cfg.n_boot)},
        "methods": {},
        "selection": {},
        "step_cost": load_step_cost(getattr(cfg, "step_cost", None)),
    }
    best_rm = _best_rm(cfg, rm_names)
    s = cfg.settings
    n_responses = s.iterations * s.n_train_per_domain * len(domains) * s.n_samples
    # the paired tests' reference: `laser`, else its embedded-benchmark name when listed as such
    ref = next((m for m in ("laser", LASER) if m in main), None)
    for m, runs in main.items():
        entry = {
            "accuracy": A.method_summary(runs, domains, cfg.n_boot),
            "accuracy_curve": A.accuracy_curve(runs),
            "responses_scored": float(np.mean([r["responses_scored"] for r in runs])),
            "wall_time_s": float(np.mean([r["wall_time_s"] for r in runs])),
            "wall_time_std": float(np.std([r["wall_time_s"] for r in runs])),
            "feedback": runs[0].get("feedback"),
        }
        entry["mechanism"] = A.mechanism(runs, best_rm, n_responses)
        if ref is not None and m != ref:
            entry["vs_laser"] = A.paired_test(main[ref], runs)
        res["methods"][m] = entry
        if selects_arms(m):
            res["selection"][m] = A.selection_shares(runs, rm_names)
    hr = A.headroom(main, {"sft": sft_runs})
    if hr is not None:
        res["oracle_vs_random"] = hr["oracle_vs_random"]
        for name, h in hr["methods"].items():
            (res["sft"] if name == "sft" else res["methods"][name])["headroom"] = h
    if "classifier" in main:
        shares = [r["label_share"] for r in main["classifier"] if r.get("label_share")]
        res["classifier_labels"] = (
            {d: {n: float(np.mean([s[d][n] for s in shares])) for n in rm_names} for d in shares[0]} if shares else {}
        )
    if "online_ensemble" in main:
        res["online_ensemble_weights"] = dict(
            zip(
                rm_names,
                np.mean([r["steps"][-1]["weights"] for r in main["online_ensemble"]], axis=0).tolist(),
                strict=True,
            )
        )
    res["agreement"] = {"labels": [*rm_names, "correct"], **A.agreement_matrix([d.agreement for d in data.values()])}
    noise_tags = sorted((t for t in jobs if t.startswith("noise=")), key=lambda t: float(t.split("=")[1]))
    if noise_tags:
        res["noise"] = {
            "rm": cfg.noise_rm,
            "sigmas": [0.0] + [float(t.split("=")[1]) for t in noise_tags],
            "methods": {},
        }
        for m in cfg.analysis_methods:
            if m not in main:
                continue
            row = {"0": {"accuracy": res["methods"][m]["accuracy"]["average"]["mean"]}}
            for t in noise_tags:
                d = A.paired_test(jobs[t][m], main[m])
                acc = A.method_summary(jobs[t][m], domains, cfg.n_boot)["average"]["mean"]
                row[t.split("=")[1]] = {
                    "accuracy": acc,
                    "drop": -d["diff"],
                    "drop_ci": [-d["ci_high"], -d["ci_low"]],
                    "p_value": d["p_value"],
                    "p_note": d.get("p_note"),
                    "p_wilcoxon": d["p_wilcoxon"],
                }
            res["noise"]["methods"][m] = row
    add_tag = next((t for t in jobs if t.startswith("add=")), None)
    if add_tag:
        rm, step = cfg.add_rm, cfg.add_at
        res["add_rm"] = {"rm": rm, "step": step, "methods": {}}
        for m, runs in jobs[add_tag].items():
            d = A.paired_test(runs, main[m]) if m in main else {"diff": float("nan")}
            e = {
                "accuracy": A.method_summary(runs, domains, cfg.n_boot)["average"]["mean"],
                "accuracy_without_late_rm": res["methods"]
                .get(m, {})
                .get("accuracy", {})
                .get("average", {})
                .get("mean"),
                "diff": d.get("diff"),
                "p_value": d.get("p_value"),
                "p_note": d.get("p_note"),
                "p_wilcoxon": d.get("p_wilcoxon"),
            }
            if selects_arms(m):
                sel = A.selection_shares(runs, rm_names, split_step=step)
                e["share_before"], e["share_after"] = sel["before"], sel["after"]
            res["add_rm"]["methods"][m] = e
    if "judged" in jobs:
        j = jobs["judged"]
        base = cfg.judged_baseline
        prompts = {(s, ex.id): ex.prompt for s, d in data.items() for ex in d.test}
        res["judged"] = {
            "a": "laser",
            "b": base,
            "judge": "QualityJudge (solves the prompt; no gold; position bias 1.0 cancelled by both orders)",
            **A.win_rate_pooled(j["laser"], j[base], prompts, QualityJudge(), cfg.n_boot),
        }
    return res


def format_table(res: dict) -> str:
    """The terminal table: accuracy per domain (mean +- std over seeds), average with its 95% CI,
    the paired difference to LASeR with its p-value (the test is named below the table), the
    headroom share when ``random`` and ``oracle`` ran, responses scored and wall time."""
    doms = res["domains"]
    rows = [("sft", res["sft"]), *res["methods"].items()]
    with_head = any("headroom" in e for _, e in rows)
    head = (
        f"{'method':<24}"
        + "".join(f"{d:>13}" for d in doms)
        + f"{'average [95% CI]':>24}"
        + f"{'laser - m [95% CI]':>24}{'p':>9}"
        + (f"{'headroom % [CI]':>18}" if with_head else "")
        + f"{'responses':>10}{'time s':>8}"
    )
    lines = [f"seeds: {res['seeds']}  (accuracy %, mean +- std over seeds)", head, "-" * len(head)]
    notes: list[str] = []

    def row(name, e):
        acc = e["accuracy"]
        cells = "".join(f"{_pct(acc[d]['mean']) + ' +-' + _pct(acc[d]['std_seeds']):>13}" for d in doms)
        a = acc["average"]
        avg = f"{_pct(a['mean'])} [{_pct(a['ci_low'])}, {_pct(a['ci_high'])}]"
        v = e.get("vs_laser")
        vs = f"{100 * v['diff']:+.1f} [{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}]" if v and v.get("n") else ""
        p = ""
        if v and v.get("n"):
            p = _p_cell(v)
            if v.get("p_note"):
                p = "n/a*"
                if f"* {v['p_note']}" not in notes:
                    notes.append(f"* {v['p_note']}")
        hr = f"{_share_cell(e.get('headroom')):>18}" if with_head else ""
        calls = f"{e['responses_scored']:.0f}" if "responses_scored" in e else ""
        t = f"{e['wall_time_s']:.1f}" if "wall_time_s" in e else ""
        return f"{name:<24}{cells}{avg:>24}{vs:>24}{p:>9}{hr}{calls:>10}{t:>8}"

    lines += [row(n, e) for n, e in rows]
    tests = {v.get("test") for _, e in rows if (v := e.get("vs_laser")) and v.get("n")}
    if tests:
        lines += [
            "",
            "p: " + "; ".join(sorted(t for t in tests if t)) + " (two-sided; per-item and per-seed "
            "Wilcoxon p-values in report.md)",
            *notes,
        ]
    if "oracle_vs_random" in res and res["oracle_vs_random"].get("n"):
        o = res["oracle_vs_random"]
        lines.append(
            f"oracle - random: {100 * o['diff']:+.1f} [{100 * o['ci_low']:+.1f}, {100 * o['ci_high']:+.1f}] "
            f"points, p {_p_cell(o)}; headroom share = (m - random) / (oracle - random), "
            "same resampling"
        )
    lines += ["", mechanism_table(res)]
    if "laser" in res["selection"]:
        lines += [
            "",
            "LASeR selection (share of each domain's prompts per RM, all iterations, pooled seeds):",
            f"{'domain':<10}" + "".join(f"{n:>14}" for n in res["rms"]),
        ]
        for d, r in res["selection"]["laser"]["by_domain"].items():
            lines.append(f"{d:<10}" + "".join(f"{100 * r[n]:>13.0f}%" for n in res["rms"]))
    return "\n".join(lines)


def mechanism_table(res: dict) -> str:
    """Per method: share of prompts scored by their domain's best RM, gold accuracy of the trained
    pairs, RM scorings per response (``responses_scored`` over the responses), label-model time per step."""
    lines = [
        f"{'method':<24}{'best-RM share %':>16}{'trained-pair gold acc':>23}{'RM scorings/resp':>19}"
        f"{'label model ms/step':>21}"
    ]
    for m, e in res["methods"].items():
        k = e.get("mechanism") or {}
        share = "" if k.get("best_rm_share") is None else f"{100 * k['best_rm_share']:.0f}"
        gold = "" if k.get("pair_gold") is None else f"{k['pair_gold']:+.3f}"
        ms = "" if k.get("label_model_ms") is None else f"{k['label_model_ms']:.1f}"
        lines.append(f"{m:<24}{share:>16}{gold:>23}{k.get('calls_per_response', float('nan')):>19.2f}{ms:>21}")
    return "\n".join(
        [
            "mechanism (all iterations, seeds pooled): best-RM share = prompts scored by their domain's "
            "expert; trained-pair gold acc = mean correct(chosen) - correct(rejected) of the pairs trained on",
            *lines,
        ]
    )


def write_report(cfg, jobs: dict, data: dict, rm_names: list[str], out: Path, wall_time_s: float) -> dict:
    """Compute the results, draw the plots, write results.json and report.md, print the table."""
    from laser.bench.compare.markdown import render

    res = build_results(cfg, jobs, data, rm_names, wall_time_s)
    res["plots"] = draw_plots(res, out)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "report.md").write_text(render(res))
    print(format_table(res))
    print(f"\nreport: {out / 'report.md'}  plots: {', '.join(res['plots'])}  wall time {wall_time_s:.0f}s")
    return res


def draw_plots(res: dict, out: Path) -> list[str]:
    """Every PNG of the report; returns their file names (relative to ``out``)."""
    from laser.bench.compare import plots

    made = [
        plots.accuracy_curves(
            {m: e["accuracy_curve"] for m, e in res["methods"].items()}, out / "accuracy_per_iteration.png"
        )
    ]
    sel_method = "laser" if "laser" in res["selection"] else next(iter(res["selection"]), None)
    if sel_method:
        sel = res["selection"][sel_method]
        made.append(
            plots.selection_over_training(
                sel["by_iteration"],
                res["rms"],
                out / "selection_per_iteration.png",
                title=f"{sel_method}: share of prompts per RM, per iteration",
            )
        )
        made.append(
            plots.selection_by_domain(
                sel["by_domain"],
                res["rms"],
                out / "selection_per_domain.png",
                title=f"{sel_method}: share of each domain's prompts per RM",
            )
        )
    made.append(
        plots.agreement_heatmap(res["agreement"]["matrix"], res["agreement"]["labels"], out / "rm_agreement.png")
    )
    made.append(
        plots.training_time(
            {m: (e["wall_time_s"], e["wall_time_std"]) for m, e in res["methods"].items()}, out / "training_time.png"
        )
    )
    if "noise" in res:
        acc = {m: {float(s): v["accuracy"] for s, v in row.items()} for m, row in res["noise"]["methods"].items()}
        made.append(plots.noise_robustness(acc, out / "noise_robustness.png"))
    return [p.name for p in made]
