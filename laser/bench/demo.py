"""`laser demo`: LASeR against every baseline on the embedded benchmark, on a CPU, no downloads.

Every method starts from the same SFT checkpoint of the tiny character-level policy, trains on
the same prompts with the same reward models, and is evaluated by greedy decoding on the same
held-out prompts with the benchmark's exact answer extraction.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from laser.bench.runs import DEFAULT_FEEDBACK, QUICK, DemoSettings, benchmark_sets, run_method


def method_names(rm_names: list[str], feedbacks: list[str]) -> list[str]:
    """LASeR (the label-free reliability router), LinUCB per prompt on label-free feedback
    (``laser_per_prompt``), the label-based ``laser:pair_accuracy``,
    extra feedbacks, the bounds (``random``, ``oracle``, ``verifier``) and every baseline."""
    extra = [f"laser:{f}" for f in feedbacks if f not in (DEFAULT_FEEDBACK, "pair_accuracy")]
    return [
        "laser",
        "laser_per_prompt",
        "laser:pair_accuracy",
        *extra,
        "random",
        "oracle",
        "verifier",
        "round_robin",
        "score_ensemble",
        "agreement_ensemble",
        *[f"single:{n}" for n in rm_names],
    ]


def selection_matrix(log_path: Path, domain_of: dict[str, str], rm_names: list[str]) -> dict:
    """Share of each domain's prompts scored by each RM in the last iteration of a run."""
    records = [json.loads(line) for line in open(log_path)]
    last = max(r["iteration"] for r in records)
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        if r["iteration"] == last:
            for pid, arm in zip(r["prompt_ids"], r["prompt_arms"], strict=True):
                counts[domain_of[pid]][rm_names[arm]] += 1
    return {d: {n: c[n] / max(sum(c.values()), 1) for n in rm_names} for d, c in sorted(counts.items())}


def _worker_setup() -> None:
    """A worker (and the main process): one torch thread, no per-method weight-loading bars."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-method weight-loading bars would drown the table
    torch.set_num_threads(1)  # tiny model: one thread is faster than two on a shared 2-core machine


def _worker_init() -> None:
    """A worker's start: the setup, then the imports of a method's run (transformers' model code,
    the trainer: seconds), so they happen while the main process prepares the SFT start."""
    _worker_setup()
    import transformers.models.llama.modeling_llama  # noqa: F401

    import laser.build  # noqa: F401
    import laser.training.loop  # noqa: F401


def _ready() -> None:
    """A no-op task: submitting one per worker starts the workers (and their imports) now."""


def _run_one(method: str, seed: int, policy_dir, train, test, rm_names, s: DemoSettings, out_dir: Path) -> dict:
    """Train one method from the SFT start and evaluate it (in this process or a worker's)."""
    from laser.bench.policy import evaluate_accuracy

    t = time.perf_counter()
    summary, policy, run_dir = run_method(method, seed, policy_dir, train, rm_names, s, out_dir)
    wall = time.perf_counter() - t
    acc = evaluate_accuracy(policy.model, policy.tokenizer, test, max_new_tokens=s.max_new_tokens)
    domain_of = {ex.id: ex.group for ex in train}
    return {
        "entry": {"accuracy": acc, "responses_scored": int(sum(summary["responses_scored"])), "wall_time_s": wall},
        "selection": selection_matrix(run_dir / "log.jsonl", domain_of, rm_names)
        if method.startswith("laser")
        else None,
    }


def _start_workers(workers: int):
    """A pool of ``workers`` spawned processes, started now (None for one worker: this process)."""
    if workers <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    for _ in range(workers):
        pool.submit(_ready)
    return pool


def _run_methods(methods: list[str], pool, on_done, *args) -> dict[str, dict]:
    """Every method's result, in ``pool`` (from :func:`_start_workers`; None: one at a time in
    this process); each method seeds itself, so the results do not depend on the order or the
    worker; ``on_done(method, result)`` as each one finishes."""
    out: dict[str, dict] = {}
    if pool is None:
        for m in methods:
            out[m] = _run_one(m, *args)
            on_done(m, out[m])
        return out
    from concurrent.futures import as_completed

    futures = {pool.submit(_run_one, m, *args): m for m in methods}
    for f in as_completed(futures):
        out[futures[f]] = f.result()
        on_done(futures[f], out[futures[f]])
    return out


def run_demo(
    out: str = "demo_out",
    seeds: int = 1,
    quick: bool = False,
    feedbacks: list[str] | None = None,
    methods: list[str] | None = None,
    settings: DemoSettings | None = None,
    workers: int = 1,
    train_sft: bool = False,
) -> dict:
    """Run the demo, print the tables, write ``out/results.json``; returns the results dict.

    ``workers``: methods trained at once, each in its own process with one torch thread (the
    CLI's default is 2 where the machine has 2 cores); the results equal a one-process run.
    ``train_sft``: train the SFT start even where laser-rm ships it (seed 0 of the default
    settings; ``laser.bench.policy.SHIPPED_DIR``: the same bytes, about 2 minutes saved).
    """
    from laser.bench.rms import make_demo_rms

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _worker_setup()
    s, out_dir = settings or (QUICK if quick else DemoSettings()), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rm_names = [rm.name for rm in make_demo_rms(seed=0)]
    methods = methods or method_names(rm_names, feedbacks or [])
    per_seed: list[dict] = []
    pool = _start_workers(workers)  # the workers import while the SFT start is trained or loaded
    try:
        for seed in range(seeds):
            per_seed.append(_run_seed(seed, methods, pool, workers, train_sft, rm_names, s, out_dir))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    results = aggregate(per_seed, rm_names, list(range(seeds)))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(format_table(results))
    return results


def _run_seed(seed: int, methods, pool, workers: int, train_sft: bool, rm_names, s: DemoSettings, out_dir) -> dict:
    """One seed of the demo: the SFT start, its accuracy, every method's run."""
    from laser.bench.policy import SHIPPED_DIR, build_tiny_policy, evaluate_accuracy

    t0 = time.perf_counter()
    policy_dir = build_tiny_policy(seed=seed, target=s.sft_target, shipped=not train_sft)
    shipped = Path(policy_dir).parent == SHIPPED_DIR
    how = "shipped with laser-rm; --train-sft trains it" if shipped else "trained or cached"
    print(f"[seed {seed}] SFT policy ready in {time.perf_counter() - t0:.1f}s ({how}): {policy_dir}", flush=True)
    train, test = benchmark_sets(s, seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sft = evaluate_accuracy(
        AutoModelForCausalLM.from_pretrained(policy_dir),
        AutoTokenizer.from_pretrained(policy_dir),
        test,
        max_new_tokens=s.max_new_tokens,
    )
    if workers > 1:
        print(f"[seed {seed}] {len(methods)} methods on {workers} worker processes", flush=True)
    finished = []

    def on_done(method: str, res: dict, seed=seed, sft=sft, finished=finished) -> None:
        finished.append(method)
        acc, wall = res["entry"]["accuracy"], res["entry"]["wall_time_s"]
        print(
            f"[seed {seed}] {len(finished):2d}/{len(methods)} {method:<28} avg acc {acc['average']:.3f} "
            f"(SFT {sft['average']:.3f})  {wall:5.1f}s",
            flush=True,
        )

    done = _run_methods(methods, pool, on_done, seed, policy_dir, train, test, rm_names, s, out_dir)
    result = {"sft": sft, "methods": {}, "selection": {}}
    for method in methods:  # the table keeps the methods' order, whatever order they finished in
        result["methods"][method] = done[method]["entry"]
        if done[method]["selection"] is not None:
            result["selection"][method] = done[method]["selection"]
    return result


def _mean_std(values: list[dict]) -> tuple[dict, dict]:
    keys = values[0].keys()
    return (
        {k: float(np.mean([v[k] for v in values])) for k in keys},
        {k: float(np.std([v[k] for v in values])) for k in keys},
    )


def aggregate(per_seed: list[dict], rm_names: list[str], seeds: list[int]) -> dict:
    """Means over seeds; with several seeds each accuracy gets a sibling ``accuracy_std``."""
    several = len(per_seed) > 1
    sft_mean, sft_std = _mean_std([r["sft"] for r in per_seed])
    results = {
        "sft": {"accuracy": sft_mean, **({"accuracy_std": sft_std} if several else {})},
        "methods": {},
        "rms": rm_names,
        "seeds": seeds,
    }
    for m in per_seed[0]["methods"]:
        runs = [r["methods"][m] for r in per_seed]
        mean, std = _mean_std([r["accuracy"] for r in runs])
        results["methods"][m] = {
            "accuracy": mean,
            **({"accuracy_std": std} if several else {}),
            "responses_scored": int(np.mean([r["responses_scored"] for r in runs])),
            "wall_time_s": float(np.mean([r["wall_time_s"] for r in runs])),
        }
    selections = [r["selection"].get("laser") for r in per_seed if r["selection"].get("laser")]
    results["selection"] = (
        {d: {n: float(np.mean([sel[d][n] for sel in selections])) for n in rm_names} for d in selections[0]}
        if selections
        else {}
    )
    results["selection_by_method"] = {m: per_seed[-1]["selection"][m] for m in per_seed[-1]["selection"]}
    return results


def headroom_shares(results: dict) -> dict[str, float | None]:
    """Each method's share of the oracle's headroom on the mean average accuracy; {} without
    ``random`` and ``oracle`` (None for every method when oracle <= random)."""
    methods = results["methods"]
    if "random" not in methods or "oracle" not in methods:
        return {}
    rnd, orc = methods["random"]["accuracy"]["average"], methods["oracle"]["accuracy"]["average"]
    return {m: ((e["accuracy"]["average"] - rnd) / (orc - rnd) if orc > rnd else None) for m, e in methods.items()}


def format_table(results: dict) -> str:
    """The accuracy table (paper Table 1 layout) and LASeR's selection matrix, as text."""
    domains = [d for d in results["sft"]["accuracy"] if d != "average"]
    several = "accuracy_std" in results["sft"]
    share = headroom_shares(results)
    head = (
        f"{'method':<28}"
        + "".join(f"{d:>14}" for d in [*domains, "average"])
        + f"{'responses':>10}{'time s':>8}"
        + (f"{'headroom %':>12}" if share else "")
    )
    lines = [head, "-" * len(head)]

    def cell(entry, d):
        v = f"{100 * entry['accuracy'][d]:.1f}"
        return f"{v + (' ±' + format(100 * entry['accuracy_std'][d], '.1f') if several else ''):>14}"

    lines.append(f"{'sft':<28}" + "".join(cell(results["sft"], d) for d in [*domains, "average"]))
    for m, e in results["methods"].items():
        lines.append(
            f"{m:<28}"
            + "".join(cell(e, d) for d in [*domains, "average"])
            + f"{e['responses_scored']:>10}{e['wall_time_s']:>8.1f}"
            + (f"{100 * share[m]:>12.0f}" if share and share.get(m) is not None else "")
        )
    if share:
        lines += [
            "",
            "headroom %: (m - random) / (oracle - random) of the average accuracy (0 = random, "
            "100 = oracle); `laser compare` gives it with intervals over seeds and items",
        ]
    lines += [
        "",
        "LASeR selection (share of each domain's prompts per RM, last iteration):",
        f"{'domain':<10}" + "".join(f"{n:>14}" for n in results["rms"]),
    ]
    for d, row in results["selection"].items():
        lines.append(f"{d:<10}" + "".join(f"{100 * row[n]:>13.0f}%" for n in results["rms"]))
    return "\n".join(lines)
