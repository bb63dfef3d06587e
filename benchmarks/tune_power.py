"""Does choosing the right RM matter on the embedded benchmark? Oracle vs random, with intervals.

Runs a few methods of the demo from the same SFT start, over several seeds, and reports each
method's greedy test accuracy, ``oracle - random`` and ``single:noise - SFT`` with a 95% interval
from ``laser compare``'s two-level bootstrap (seeds, then test items within each seed:
:func:`laser.bench.compare.stats.hierarchical_bootstrap`) and a seeds-only one
(:func:`laser.bench.compare.stats.paired_bootstrap`).

Every method, ``oracle`` included (the library's oracle strategy: each prompt scored by its
domain's expert, math_expert for arith/count and logic_expert for compare/choice, from the
benchmark's design), runs through ``laser.bench.runs.run_method`` with the demo's config.
``--set key=value`` overrides of DemoSettings go through the typed config loader.

Usage::

    python benchmarks/tune_power.py --benchmark v2 --seeds 0 1 --methods oracle random \\
        --set iterations=8 --out runs/tune_power/v2.jsonl
    python benchmarks/tune_power.py --report runs/tune_power/v2.jsonl

Each finished (seed, method) appends one JSON line to ``--out`` (per-item correctness included),
so runs can be split across processes and reported together. Wall times are measured on
whatever machine runs this; on a shared machine they are inflated by the other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from laser.bench.runs import DemoSettings, run_method


def run(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from laser.bench.compare.runner import evaluate
    from laser.bench.policy import build_tiny_policy
    from laser.bench.rms import make_demo_rms
    from laser.bench.tasks import make_benchmark

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    s = args.settings
    bench = {"version": args.benchmark} if args.benchmark != "v1" else {}  # v1: exactly the demo's calls
    work = Path(args.work)
    for seed in args.seeds:
        t0 = time.perf_counter()
        policy_dir = build_tiny_policy(seed=seed, target=s.sft_target, **args.sft)
        sft_s = time.perf_counter() - t0
        train = make_benchmark(s.n_train_per_domain, seed=seed, split="train", **bench)
        test = make_benchmark(s.n_test_per_domain, seed=seed, split="test", **bench)

        def rms(seed=seed):  # fresh RMs per method
            return make_demo_rms(seed=seed, **bench)

        names = [rm.name for rm in rms()]
        base = {"benchmark": args.benchmark, "tag": args.tag, "settings": asdict(s), "sft": args.sft, "seed": seed}
        for method in ["sft", *args.methods]:
            # a run folder left from an earlier call would make the loop resume it
            shutil.rmtree(work / args.tag / f"seed{seed}" / method.replace(":", "_"), ignore_errors=True)
            t = time.perf_counter()
            if method == "sft":
                model = AutoModelForCausalLM.from_pretrained(policy_dir)
                tok = AutoTokenizer.from_pretrained(policy_dir)
            else:
                _, policy, _ = run_method(method, seed, policy_dir, train, names, s, work / args.tag, rms=rms())
                model, tok = policy.model, policy.tokenizer
            train_s = time.perf_counter() - t
            scored = evaluate((model, tok), test, s)  # laser compare's greedy evaluation
            row = {
                **base,
                "method": method,
                "accuracy": scored["accuracy"],
                "items": scored["correct"],
                "groups": scored["domains"],
                "train_s": train_s,
                "wall_s": time.perf_counter() - t,
                "sft_build_s": sft_s,
            }
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            acc = row["accuracy"]
            print(
                f"[{args.tag} seed {seed}] {method:<22} "
                + " ".join(f"{k} {100 * v:5.1f}" for k, v in acc.items())
                + f"  {row['wall_s']:6.1f}s",
                flush=True,
            )


def timing(args) -> None:
    """Per-step cost of v2 relative to v1 in this one process (ratios survive a shared machine).

    Alternates SFT steps on v1 and v2 targets (same model size), then one method of the demo on
    v1's default settings and on ``--set`` with ``--benchmark``, ``--repeats`` times each.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from laser.bench.policy import build_tiny_policy, make_char_tokenizer, make_tiny_model, sft_targets, train_sft
    from laser.bench.rms import make_demo_rms
    from laser.bench.tasks import make_benchmark

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    tok, times = make_char_tokenizer(), {}
    sft_sets = {v: make_benchmark(300, 0, "train", version=v) for v in ("v1", "v2")}
    for _ in range(args.repeats):
        for v, ex in sft_sets.items():
            model = make_tiny_model(tok, 64, 2, 4, seed=0)
            t = time.perf_counter()
            train_sft(model, tok, ex, 40, 3e-3, 32, seed=0, responses=sft_targets(ex, v, 0.6 * (v == "v2"), 0))
            times.setdefault(f"sft step {v}", []).append((time.perf_counter() - t) / 40)
    runs = {
        "v1": (DemoSettings(), {}),
        args.benchmark: (args.settings, {"version": args.benchmark} if args.benchmark != "v1" else {}),
    }
    for _ in range(args.repeats):
        for v, (s, bench) in runs.items():
            policy_dir = build_tiny_policy(seed=0, target=s.sft_target)
            train = make_benchmark(s.n_train_per_domain, seed=0, split="train", **bench)
            names = [rm.name for rm in make_demo_rms(0)]
            for method in args.methods:
                shutil.rmtree(Path(args.work) / "timing", ignore_errors=True)
                t = time.perf_counter()
                run_method(
                    method,
                    0,
                    policy_dir,
                    train,
                    names,
                    s,
                    Path(args.work) / "timing",
                    rms=make_demo_rms(seed=0, **bench),
                )
                times.setdefault(f"{method} {v}", []).append(time.perf_counter() - t)
    for k, v in times.items():
        print(f"{k:<30} " + " ".join(f"{x:.3f}" for x in v) + f"  median {np.median(v):.3f} s")
    for k in [k for k in times if k.endswith(" v1")]:
        other = k[:-3] + f" {args.benchmark}"
        if other in times and other != k:
            print(f"ratio {other} / {k}: {np.median(times[other]) / np.median(times[k]):.2f}")


def report(paths: list[str], tag: str | None = None) -> None:
    from laser.bench.compare.stats import hierarchical_bootstrap, paired_bootstrap

    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    tags = sorted({r["tag"] for r in rows}) if tag is None else [tag]
    for t in tags:
        rs = [r for r in rows if r["tag"] == t]
        by = {}
        for r in rs:
            by.setdefault(r["method"], {})[r["seed"]] = r
        seeds = sorted(set.intersection(*[set(v) for v in by.values()]))
        print(f"== {t}: seeds {seeds}  settings {rs[0]['settings']}")
        doms = [k for k in rs[0]["accuracy"]]
        print(f"{'method':<22}" + "".join(f"{d:>14}" for d in doms) + f"{'train s':>9}")
        for m, per in by.items():
            accs = [per[s]["accuracy"] for s in seeds]
            cells = "".join(
                f"{100 * np.mean([a[d] for a in accs]):8.1f} ±{100 * np.std([a[d] for a in accs]):4.1f}" for d in doms
            )
            print(f"{m:<22}{cells}{np.mean([per[s]['train_s'] for s in seeds]):9.1f}")
        for x, y in (("oracle", "random"), ("single:noise", "sft"), ("oracle", "sft"), ("random", "sft")):
            if x in by and y in by and len(seeds) > 1:
                a = np.array([by[x][s]["items"] for s in seeds])
                b = np.array([by[y][s]["items"] for s in seeds])
                # the mean over all items: the macro average here (equal domain sizes per seed)
                two = hierarchical_bootstrap(a, b)
                one = paired_bootstrap(
                    [by[x][s]["accuracy"]["average"] for s in seeds], [by[y][s]["accuracy"]["average"] for s in seeds]
                )
                per_seed = [100 * (by[x][s]["accuracy"]["average"] - by[y][s]["accuracy"]["average"]) for s in seeds]
                print(
                    f"  {x} - {y}: {100 * two['mean_diff']:+.1f} points, 95% two-level "
                    f"[{100 * two['ci_low']:+.1f}, {100 * two['ci_high']:+.1f}] p = {two['p_value']:.3g} "
                    f"({two['test']}, df {two['df']:.1f}), seeds-only [{100 * one['ci_low']:+.1f}, "
                    f"{100 * one['ci_high']:+.1f}]; per seed " + " ".join(f"{v:+.1f}" for v in per_seed)
                )


def _parse_set(items: list[str], benchmark: str) -> DemoSettings:
    """DemoSettings from ``key=value`` items and ``--benchmark``, through the typed config loader."""
    from laser.config import ConfigError, check_fields, parse_override, parse_section

    data, problems = {}, []
    for item in items:
        keys, value = parse_override(item)
        data[".".join(keys)] = value
    s = parse_section(DemoSettings, {**data, "benchmark": benchmark}, "--set ", problems)
    problems += check_fields(s, "--set ")
    if problems:
        raise SystemExit(str(ConfigError(problems)))
    return s


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", default="v1", help="benchmark / RM version (v1 = the current demo)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=["oracle", "random"])
    p.add_argument("--set", dest="settings", nargs="*", default=[], help="DemoSettings overrides, key=value")
    p.add_argument("--sft", default="{}", help="build_tiny_policy overrides of the preset, as JSON")
    p.add_argument("--tag", default=None, help="label of this setting in the output (default: from --set)")
    p.add_argument("--out", default="runs/tune_power/power.jsonl")
    p.add_argument("--work", default="runs/tune_power/work", help="folder for the runs' logs and checkpoints")
    p.add_argument("--report", nargs="*", help="only print the report of these JSONL files")
    p.add_argument("--timing", action="store_true", help="time v1 against --benchmark/--set in one process")
    p.add_argument("--repeats", type=int, default=2, help="with --timing: alternations")
    args = p.parse_args()
    if args.report:
        report(args.report, args.tag)
        return
    args.tag = args.tag or "_".join([args.benchmark, *args.settings, args.sft]) or args.benchmark
    args.settings = _parse_set(args.settings, args.benchmark)
    args.sft = json.loads(args.sft)
    if args.timing:
        timing(args)
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    run(args)
    report([args.out], args.tag)


if __name__ == "__main__":
    main()
