"""report.md from the results dict of :func:`laser.compare.report.build_results`."""

from __future__ import annotations


def _p(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *["| " + " | ".join(r) + " |" for r in rows], ""]


def render(res: dict) -> str:
    """The Markdown report (plots embedded by relative path)."""
    doms, rms = res["domains"], res["rms"]
    s = res["settings"]
    lines = ["# laser compare report", "",
             (f"Seeds {res['seeds']}; {s['n_train_per_domain']} train and {s['n_test_per_domain']} test prompts per "
              f"domain; {s['iterations']} iterations of batch {s['batch_size']}, {s['n_samples']} samples per prompt. "
              f"Wall time of this invocation {res['wall_time_s']:.0f} s (finished jobs are not rerun)."), "", "## Accuracy (%)", "",
             "Mean over seeds x test prompts, +- the std of the per-seed accuracies, and the 95% bootstrap interval.", ""]
    rows = []
    for name, e in [("sft", res["sft"]), *res["methods"].items()]:
        acc = e["accuracy"]
        rows.append([name, *[f"{_p(acc[d]['mean'])} +-{_p(acc[d]['std_seeds'])} [{_p(acc[d]['ci_low'])}, "
                             f"{_p(acc[d]['ci_high'])}]" for d in [*doms, "average"]]])
    lines += _table(["method", *doms, "average"], rows)
    lines += ["## LASeR against each baseline (paired, same seeds and prompts)", "", res["tests"], ""]
    rows = [[m, f"{100 * v['diff']:+.1f} [{100 * v['ci_low']:+.1f}, {100 * v['ci_high']:+.1f}]",
             f"{v['wins']}/{v['losses']}", f"{v['p_wilcoxon']:.3g}", f"{v['p_bootstrap']:.3g}", str(v["n"])]
            for m, e in res["methods"].items() if (v := e.get("vs_laser")) and v.get("n")]
    lines += _table(["baseline m", "laser - m (points) [95% CI]", "items laser right only / m right only",
                     "p (Wilcoxon)", "p (bootstrap)", "items"], rows)
    lines += ["## Cost", ""]
    lines += _table(["method", "bandit feedback", "RM scoring calls", "training wall time s (mean +- std)"],
                    [[m, str(e.get("feedback") or ""), f"{e['rm_calls']:.0f}",
                      f"{e['wall_time_s']:.1f} +- {e['wall_time_std']:.1f}"]
                     for m, e in res["methods"].items()])
    lines += ["![training time](training_time.png)", "", "## Accuracy per iteration", "",
              ("Greedy test accuracy after every iteration (the run is trained one iteration at a time, resuming "
               "from its checkpoint; iteration 0 is the SFT start)."), "", "![accuracy per iteration](accuracy_per_iteration.png)", ""]
    if "laser" in res["selection"]:
        lines += ["## Which RM LASeR selects", "", "Share of each domain's prompts scored by each RM (all iterations, seeds pooled).", ""]
        lines += _table(["method", "domain", *rms],
                        [[m, d, *[_p(r[n]) for n in rms]] for m, sel in res["selection"].items()
                         if m.startswith("laser") or m == "classifier" for d, r in sel["by_domain"].items()])
        lines += ["![selection per iteration](selection_per_iteration.png)", "",
                  "![selection per domain](selection_per_domain.png)", ""]
    if res.get("classifier_labels"):
        lines += ["Classifier labels on the held-out labelled split (share per RM):", ""]
        lines += _table(["domain", *rms], [[d, *[_p(r[n]) for n in rms]] for d, r in res["classifier_labels"].items()])
    if res.get("online_ensemble_weights"):
        w = res["online_ensemble_weights"]
        text = ", ".join(f"{n} {w[n]:.2f}" for n in rms)
        lines += [f"Online ensemble weights after the last step (mean over seeds): {text}", ""]
    ag = res["agreement"]
    lines += ["## RM agreement", "", ("Fraction of sampled response pairs (SFT policy, train prompts, all within-prompt "
                                      "pairs) that two RMs order the same way, among pairs both order strictly; "
                                      "`correct` orders a pair only when exactly one response is right."), ""]
    lines += _table(["", *ag["labels"]], [[a, *[f"{v:.2f}" for v in row]] for a, row in zip(ag["labels"], ag["matrix"])])
    lines += ["![RM agreement](rm_agreement.png)", ""]
    if "noise" in res:
        n = res["noise"]
        lines += ["## Noise robustness", "", (f"Gaussian noise N(0, sigma^2) added to the scores of {n['rm']} RM(s). "
                                              "Drop = accuracy without noise minus with noise (points, paired over "
                                              "the same items)."), ""]
        sig = [k for k in next(iter(n["methods"].values())) if k != "0"]
        lines += _table(["method", "sigma 0", *[f"sigma {k}: acc / drop [95% CI] (p)" for k in sig]],
                        [[m, _p(row["0"]["accuracy"]), *[f"{_p(row[k]['accuracy'])} / {100 * row[k]['drop']:+.1f} "
                                                          f"[{100 * row[k]['drop_ci'][0]:+.1f}, {100 * row[k]['drop_ci'][1]:+.1f}] "
                                                          f"({row[k]['p_wilcoxon']:.3g})" for k in sig]]
                         for m, row in n["methods"].items()])
        lines += ["![noise robustness](noise_robustness.png)", ""]
    if "add_rm" in res:
        a = res["add_rm"]
        lines += ["## Adding an RM mid-run", "", f"`{a['rm']}` joins at global step {a['step']}.", ""]
        lines += _table(["method", "accuracy", "without the late RM", "diff (p)", f"{a['rm']} share before", "after"],
                        [[m, _p(e["accuracy"]), _p(e["accuracy_without_late_rm"]),
                          f"{100 * e['diff']:+.1f} ({e['p_wilcoxon']:.3g})" if e.get("diff") is not None else "",
                          _p(e.get("share_before", {}).get(a["rm"])), _p(e.get("share_after", {}).get(a["rm"]))]
                         for m, e in a["methods"].items()])
    if "judged" in res:
        j = res["judged"]
        lines += ["## Instruction following, judged", "",
                  (f"Prompts without gold answers or domain labels; `{j['a']}` vs `{j['b']}`, greedy answers on the "
                   f"test prompts, judge: {j['judge']}. Win rate {_p(j['win_rate'])}% [{_p(j['ci_low'])}, "
                   f"{_p(j['ci_high'])}] over {j['n']} items ({j['wins']} wins, {j['ties']} ties, "
                   f"{j['losses']} losses)."), ""]
    return "\n".join(lines)
