"""The compare report: results.json, report.md with embedded PNGs, and the terminal table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from laser.compare import analyses as A
from laser.compare.methods import selects_arms

TESTS = ("Paired test of `laser` against each baseline on the same (seed, test prompt) items: Wilcoxon "
         "signed-rank test (two-sided, zero differences dropped, normal approximation with tie correction "
         "since 0/1 differences all tie) on the per-item differences of greedy-answer correctness; the "
         "interval of the difference is a paired percentile bootstrap (10,000 resamples). Accuracy "
         "intervals: percentile bootstrap (2,000 resamples) of the mean over the pooled seeds x prompts; "
         "`std` is the standard deviation of the per-seed accuracies. Items are treated as independent, "
         "so the intervals cover prompt sampling but only partly the seed-to-seed training variance.")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def build_results(cfg, jobs: dict, data: dict, rm_names: list[str], wall_time_s: float) -> dict:
    """Every number of the report, JSON-able."""
    from laser.compare.judged import QualityJudge

    main = jobs["main"]
    domains = sorted({d for r in next(iter(main.values())) for d in r["domains"]})
    sft_runs = [{**d.sft, "seed": s} for s, d in data.items()]
    res = {"settings": dataclasses.asdict(cfg.settings), "seeds": sorted(data), "rms": rm_names,
           "domains": domains, "wall_time_s": wall_time_s, "tests": TESTS,
           "sft": {"accuracy": A.method_summary(sft_runs, domains, cfg.n_boot)}, "methods": {}, "selection": {}}
    for m, runs in main.items():
        entry = {"accuracy": A.method_summary(runs, domains, cfg.n_boot), "accuracy_curve": A.accuracy_curve(runs),
                 "rm_calls": float(np.mean([r["rm_calls"] for r in runs])),
                 "wall_time_s": float(np.mean([r["wall_time_s"] for r in runs])),
                 "wall_time_std": float(np.std([r["wall_time_s"] for r in runs])),
                 "feedback": runs[0].get("feedback")}
        if m != "laser" and "laser" in main:
            entry["vs_laser"] = A.paired_test(main["laser"], runs)
        res["methods"][m] = entry
        if selects_arms(m):
            res["selection"][m] = A.selection_shares(runs, rm_names)
    if "classifier" in main:
        shares = [r["label_share"] for r in main["classifier"] if r.get("label_share")]
        res["classifier_labels"] = {d: {n: float(np.mean([s[d][n] for s in shares])) for n in rm_names}
                                    for d in shares[0]} if shares else {}
    if "online_ensemble" in main:
        res["online_ensemble_weights"] = dict(zip(rm_names, np.mean(
            [r["steps"][-1]["weights"] for r in main["online_ensemble"]], axis=0).tolist()))
    res["agreement"] = {"labels": [*rm_names, "correct"], **A.agreement_matrix([d.agreement for d in data.values()])}
    noise_tags = sorted((t for t in jobs if t.startswith("noise=")), key=lambda t: float(t.split("=")[1]))
    if noise_tags:
        res["noise"] = {"rm": cfg.noise_rm, "sigmas": [0.0] + [float(t.split("=")[1]) for t in noise_tags], "methods": {}}
        for m in cfg.analysis_methods:
            if m not in main:
                continue
            row = {"0": {"accuracy": res["methods"][m]["accuracy"]["average"]["mean"]}}
            for t in noise_tags:
                d = A.paired_test(jobs[t][m], main[m])
                row[t.split("=")[1]] = {"accuracy": A.method_summary(jobs[t][m], domains, cfg.n_boot)["average"]["mean"],
                                        "drop": -d["diff"], "drop_ci": [-d["ci_high"], -d["ci_low"]],
                                        "p_wilcoxon": d["p_wilcoxon"]}
            res["noise"]["methods"][m] = row
    add_tag = next((t for t in jobs if t.startswith("add=")), None)
    if add_tag:
        rm, step = cfg.add_rm, cfg.add_at
        res["add_rm"] = {"rm": rm, "step": step, "methods": {}}
        for m, runs in jobs[add_tag].items():
            d = A.paired_test(runs, main[m]) if m in main else {"diff": float("nan")}
            e = {"accuracy": A.method_summary(runs, domains, cfg.n_boot)["average"]["mean"],
                 "accuracy_without_late_rm": res["methods"].get(m, {}).get("accuracy", {}).get("average", {}).get("mean"),
                 "diff": d.get("diff"), "p_wilcoxon": d.get("p_wilcoxon")}
            if selects_arms(m):
                sel = A.selection_shares(runs, rm_names, split_step=step)
                e["share_before"], e["share_after"] = sel["before"], sel["after"]
            res["add_rm"]["methods"][m] = e
    if "judged" in jobs:
        j = jobs["judged"]
        base = cfg.judged_baseline
        prompts = {(s, ex.id): ex.prompt for s, d in data.items() for ex in d.test}
        res["judged"] = {"a": "laser", "b": base,
                         "judge": "QualityJudge (solves the prompt; no gold; position bias 1.0 cancelled by both orders)",
                         **A.win_rate_pooled(j["laser"], j[base], prompts, QualityJudge(), cfg.n_boot)}
    return res


def format_table(res: dict) -> str:
    """The terminal table: accuracy per domain (mean +- std over seeds), average with its 95% CI,
    the paired difference to LASeR with its Wilcoxon p-value, RM calls and wall time."""
    doms = res["domains"]
    head = (f"{'method':<24}" + "".join(f"{d:>13}" for d in doms) + f"{'average [95% CI]':>24}"
            + f"{'laser - m [95% CI]':>24}{'p':>9}{'RM calls':>10}{'time s':>8}")
    lines = [f"seeds: {res['seeds']}  (accuracy %, mean +- std over seeds)", head, "-" * len(head)]

    def row(name, e):
        acc = e["accuracy"]
        cells = "".join(f"{_pct(acc[d]['mean']) + ' +-' + _pct(acc[d]['std_seeds']):>13}" for d in doms)
        a = acc["average"]
        avg = f"{_pct(a['mean'])} [{_pct(a['ci_low'])}, {_pct(a['ci_high'])}]"
        v = e.get("vs_laser")
        vs = f"{100 * v['diff']:+.1f} [{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}]" if v else ""
        p = f"{v['p_wilcoxon']:.3g}" if v else ""
        calls = f"{e['rm_calls']:.0f}" if "rm_calls" in e else ""
        t = f"{e['wall_time_s']:.1f}" if "wall_time_s" in e else ""
        return f"{name:<24}{cells}{avg:>24}{vs:>24}{p:>9}{calls:>10}{t:>8}"

    lines.append(row("sft", res["sft"]))
    lines += [row(m, e) for m, e in res["methods"].items()]
    if "laser" in res["selection"]:
        lines += ["", "LASeR selection (share of each domain's prompts per RM, all iterations, pooled seeds):",
                  f"{'domain':<10}" + "".join(f"{n:>14}" for n in res["rms"])]
        for d, r in res["selection"]["laser"]["by_domain"].items():
            lines.append(f"{d:<10}" + "".join(f"{100 * r[n]:>13.0f}%" for n in res["rms"]))
    return "\n".join(lines)


def write_report(cfg, jobs: dict, data: dict, rm_names: list[str], out: Path, wall_time_s: float) -> dict:
    """Compute the results, draw the plots, write results.json and report.md, print the table."""
    from laser.compare.markdown import render

    res = build_results(cfg, jobs, data, rm_names, wall_time_s)
    res["plots"] = draw_plots(res, out)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "report.md").write_text(render(res))
    print(format_table(res))
    print(f"\nreport: {out / 'report.md'}  plots: {', '.join(res['plots'])}  wall time {wall_time_s:.0f}s")
    return res


def draw_plots(res: dict, out: Path) -> list[str]:
    """Every PNG of the report; returns their file names (relative to ``out``)."""
    from laser import plots

    made = [plots.accuracy_curves({m: e["accuracy_curve"] for m, e in res["methods"].items()}, out / "accuracy_per_iteration.png")]
    sel_method = "laser" if "laser" in res["selection"] else next(iter(res["selection"]), None)
    if sel_method:
        sel = res["selection"][sel_method]
        made.append(plots.selection_over_training(sel["by_iteration"], res["rms"], out / "selection_per_iteration.png",
                                                  title=f"{sel_method}: share of prompts per RM, per iteration"))
        made.append(plots.selection_by_domain(sel["by_domain"], res["rms"], out / "selection_per_domain.png",
                                              title=f"{sel_method}: share of each domain's prompts per RM"))
    made.append(plots.agreement_heatmap(res["agreement"]["matrix"], res["agreement"]["labels"], out / "rm_agreement.png"))
    made.append(plots.training_time({m: (e["wall_time_s"], e["wall_time_std"]) for m, e in res["methods"].items()},
                                    out / "training_time.png"))
    if "noise" in res:
        acc = {m: {float(s): v["accuracy"] for s, v in row.items()} for m, row in res["noise"]["methods"].items()}
        made.append(plots.noise_robustness(acc, out / "noise_robustness.png"))
    return [p.name for p in made]
