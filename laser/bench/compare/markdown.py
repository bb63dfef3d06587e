"""report.md from the results dict of :func:`laser.bench.compare.report.build_results`."""

from __future__ import annotations


def _p(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *["| " + " | ".join(r) + " |" for r in rows], ""]


def _pv(v: dict, key: str = "p_value", note: str = "p_note") -> str:
    """A p-value cell, or the reason it is not one ("n/a (5 seeds: min p 0.0625)")."""
    if v.get(note):
        return v[note] if v[note].startswith("n/a") else f"n/a ({v[note]})"
    return f"{v[key]:.3g}" if v.get(key) is not None else ""


def _ci(v: dict, lo: str = "ci_low", hi: str = "ci_high") -> str:
    return f"{100 * v['diff']:+.1f} [{100 * v[lo]:+.1f}, {100 * v[hi]:+.1f}]"


def paired_table(methods: dict, tests: str) -> list[str]:
    """The "LASeR against each baseline" section: which test gave each p-value, one row per baseline."""
    rows = []
    for m, e in methods.items():
        v = e.get("vs_laser")
        if not v or not v.get("n"):
            continue
        item_ci = v.get("ci_item", [v["ci_low"], v["ci_high"]])
        rows.append(
            [
                m,
                _ci(v),
                _pv(v),
                _pv(v, "p_seeds_wilcoxon", "seeds_wilcoxon_note"),
                f"{100 * v['diff']:+.1f} [{100 * item_ci[0]:+.1f}, {100 * item_ci[1]:+.1f}]",
                f"{v['p_wilcoxon']:.3g}",
                f"{v['wins']}/{v['losses']}",
                f"{v.get('n_seeds', '?')} x {v['n'] // max(v.get('n_seeds', 1), 1)}",
            ]
        )
    test = next((v["test"] for e in methods.values() if (v := e.get("vs_laser")) and v.get("test")), "")
    return [
        "## LASeR against each baseline (paired, same seeds and prompts)",
        "",
        tests,
        "",
        *_table(
            [
                "baseline m",
                f"laser - m (points) [95% CI]: {test}",
                f"p: {test}",
                "p: Wilcoxon over per-seed accuracies",
                "per-item CI (ignores seeds)",
                "p: per-item Wilcoxon (ignores seeds)",
                "items laser right only / m right only",
                "seeds x items",
            ],
            rows,
        ),
    ]


def step_cost_table(sc: dict | None) -> list[str]:
    """Per-step time and peak memory of LASeR against the ensembles with RMs of policy-like cost
    (the demo's RMs cost nothing, so the table above shows call counts, not time)."""
    if not sc:
        return []

    def base(m: str) -> dict:  # LASeR with the same placement (resident or offloaded RMs)
        suffix = m[len(m.split("/")[0]) :]
        return sc["methods"].get("linucb" + suffix, sc["methods"]["linucb"])

    rows = [
        [
            m,
            f"{e['step_s']:.3f}",
            f"{e['phases']['score']:.3f}",
            f"{e['step_s'] / base(m)['step_s']:.2f}",
            f"{e['peak_bytes'] / 2**20:.0f}",
        ]
        for m, e in sc["methods"].items()
    ]
    return [
        "### Cost with reward models of policy-like cost",
        "",
        (
            f"`benchmarks/step_cost.py`: policy and K = {sc['k']} RMs of one size ({sc['size']}, {sc['dtype']}) "
            f"on {sc['device']}; median seconds per step. Peak memory: {sc.get('memory_measure', '')}. "
            "The paper reports LASeR 2x faster than the score ensemble in training time."
        ),
        "",
        *_table(["method", "step s", "score s", "step / LASeR", "peak MiB"], rows),
    ]


def cost_table(methods: dict) -> list[str]:
    """The "Cost" section: each method's bandit feedback ("none read" for a method that learns
    nothing from it: random, oracle, one RM, the ensembles, the reliability router), RM scorings
    and training wall time."""
    return [
        "## Cost",
        "",
        *_table(
            ["method", "bandit feedback", "responses_scored", "training wall time s (mean +- std)"],
            [
                [
                    m,
                    str(e.get("feedback") or "none read"),
                    f"{e['responses_scored']:.0f}",
                    f"{e['wall_time_s']:.1f} +- {e['wall_time_std']:.1f}",
                ]
                for m, e in methods.items()
            ],
        ),
    ]


def headroom_table(res: dict) -> list[str]:
    """Where each method lies between `random` and `oracle` (only when both ran)."""
    o = res.get("oracle_vs_random")
    if not o or not o.get("n"):
        return []
    rows = []
    for name, e in [("sft", res["sft"]), *res["methods"].items()]:
        h = e.get("headroom")
        if h is None:
            continue
        low = "-inf" if h["ci_low"] is None else _p(h["ci_low"])
        high = "+inf" if h["ci_high"] is None else _p(h["ci_high"])
        rows.append(
            [
                name,
                "n/a" if h["share"] is None else _p(h["share"]),
                f"[{low}, {high}]",
                f"{100 * h['no_headroom_draws']:.1f}",
            ]
        )
    return [
        "## Headroom captured",
        "",
        (
            f"oracle - random: {_ci(o)} points (p {_pv(o)}, {o.get('test', '')}). Share of the headroom a method "
            "captures, (m - random) / (oracle - random), in %: 0 is `random`, 100 is `oracle`. The interval takes "
            "the ratio per draw of the same two-level bootstrap; draws where oracle - random <= 0 count against "
            "both bounds, so a bound is infinite when more than 2.5% of the draws have no headroom."
        ),
        "",
        *_table(["method", "headroom share %", "95% CI", "% draws without headroom"], rows),
    ]


def _mechanism(res: dict) -> list[str]:
    from laser.bench.compare.report import mechanism_table

    return mechanism_table(res).splitlines()


def render(res: dict) -> str:
    """The Markdown report (plots embedded by relative path)."""
    doms, rms = res["domains"], res["rms"]
    s = res["settings"]
    lines = [
        "# laser compare report",
        "",
        (
            f"Seeds {res['seeds']}; {s['n_train_per_domain']} train and {s['n_test_per_domain']} test prompts per "
            f"domain; {s['iterations']} iterations of batch {s['batch_size']}, {s['n_samples']} samples per prompt. "
            f"Wall time of this invocation {res['wall_time_s']:.0f} s (finished jobs are not rerun)."
        ),
        "",
        "## Accuracy (%)",
        "",
        (
            "Mean over seeds x test prompts, +- the std of the per-seed accuracies, and the 95% interval of the "
            "two-level bootstrap over seeds and items."
        ),
        "",
    ]
    rows = []
    for name, e in [("sft", res["sft"]), *res["methods"].items()]:
        acc = e["accuracy"]
        rows.append(
            [
                name,
                *[
                    f"{_p(acc[d]['mean'])} +-{_p(acc[d]['std_seeds'])} [{_p(acc[d]['ci_low'])}, "
                    f"{_p(acc[d]['ci_high'])}]"
                    for d in [*doms, "average"]
                ],
            ]
        )
    lines += _table(["method", *doms, "average"], rows)
    lines += paired_table(res["methods"], res["tests"])
    lines += headroom_table(res)
    lines += ["## Mechanism", "", "```", *_mechanism(res), "```", ""]
    lines += cost_table(res["methods"])
    lines += ["![training time](training_time.png)", ""]
    lines += step_cost_table(res.get("step_cost"))
    lines += [
        "## Accuracy per iteration",
        "",
        (
            "Greedy test accuracy after every iteration (the run is trained one iteration at a time, resuming "
            "from its checkpoint; iteration 0 is the SFT start)."
        ),
        "",
        "![accuracy per iteration](accuracy_per_iteration.png)",
        "",
    ]
    if "laser" in res["selection"]:
        lines += [
            "## Which RM LASeR selects",
            "",
            "Share of each domain's prompts scored by each RM (all iterations, seeds pooled).",
            "",
        ]
        lines += _table(
            ["method", "domain", *rms],
            [
                [m, d, *[_p(r[n]) for n in rms]]
                for m, sel in res["selection"].items()
                if m.startswith("laser") or m == "classifier"
                for d, r in sel["by_domain"].items()
            ],
        )
        lines += [
            "![selection per iteration](selection_per_iteration.png)",
            "",
            "![selection per domain](selection_per_domain.png)",
            "",
        ]
    if res.get("classifier_labels"):
        lines += ["Classifier labels on the held-out labelled split (share per RM):", ""]
        lines += _table(["domain", *rms], [[d, *[_p(r[n]) for n in rms]] for d, r in res["classifier_labels"].items()])
    if res.get("online_ensemble_weights"):
        w = res["online_ensemble_weights"]
        text = ", ".join(f"{n} {w[n]:.2f}" for n in rms)
        lines += [f"Online ensemble weights after the last step (mean over seeds): {text}", ""]
    ag = res["agreement"]
    lines += [
        "## RM agreement",
        "",
        (
            "Fraction of sampled response pairs (SFT policy, train prompts, all within-prompt pairs) that two "
            "RMs order the same way, among pairs both order strictly; `correct` orders a pair only when exactly "
            "one response is right."
        ),
        "",
    ]
    lines += _table(
        ["", *ag["labels"]],
        [[a, *[f"{v:.2f}" for v in row]] for a, row in zip(ag["labels"], ag["matrix"], strict=True)],
    )
    lines += ["![RM agreement](rm_agreement.png)", ""]
    if "noise" in res:
        n = res["noise"]
        lines += [
            "## Noise robustness",
            "",
            (
                f"Gaussian noise N(0, sigma^2) added to the scores of {n['rm']} RM(s). "
                "Drop = accuracy without noise minus with noise (points, paired over "
                "the same items; interval and p from the hierarchical bootstrap over "
                "seeds and items)."
            ),
            "",
        ]
        sig = [k for k in next(iter(n["methods"].values())) if k != "0"]
        lines += _table(
            ["method", "sigma 0", *[f"sigma {k}: acc / drop [95% CI] (p)" for k in sig]],
            [
                [
                    m,
                    _p(row["0"]["accuracy"]),
                    *[
                        f"{_p(row[k]['accuracy'])} / {100 * row[k]['drop']:+.1f} "
                        f"[{100 * row[k]['drop_ci'][0]:+.1f}, "
                        f"{100 * row[k]['drop_ci'][1]:+.1f}] "
                        f"(p {_pv(row[k])})"
                        for k in sig
                    ],
                ]
                for m, row in n["methods"].items()
            ],
        )
        lines += ["![noise robustness](noise_robustness.png)", ""]
    if "add_rm" in res:
        a = res["add_rm"]
        lines += ["## Adding an RM mid-run", "", f"`{a['rm']}` joins at global step {a['step']}.", ""]
        lines += _table(
            ["method", "accuracy", "without the late RM", "diff (p)", f"{a['rm']} share before", "after"],
            [
                [
                    m,
                    _p(e["accuracy"]),
                    _p(e["accuracy_without_late_rm"]),
                    f"{100 * e['diff']:+.1f} (p {_pv(e)})" if e.get("diff") is not None else "",
                    _p(e.get("share_before", {}).get(a["rm"])),
                    _p(e.get("share_after", {}).get(a["rm"])),
                ]
                for m, e in a["methods"].items()
            ],
        )
    if "judged" in res:
        j = res["judged"]
        lines += [
            "## Instruction following, judged",
            "",
            (
                f"Prompts without gold answers or domain labels; `{j['a']}` vs `{j['b']}`, greedy answers on the "
                f"test prompts, judge: {j['judge']}. Win rate {_p(j['win_rate'])}% [{_p(j['ci_low'])}, "
                f"{_p(j['ci_high'])}] over {j['n']} items ({j['wins']} wins, {j['ties']} ties, "
                f"{j['losses']} losses)."
            ),
            "",
        ]
    return "\n".join(lines)
