"""Evidence for the reliability router's groups without a group column (``groups: kmeans``).

On benchmark v2 (whose prompts carry a domain, ignored here except to score the outcome):

* ``--purity``: k-means purity of the 4 domains over the training prompts, on the sentence
  encoder's embedding and on the SFT policy's last-token state (k = 4, 8, 16);
* ``--simulate column,kmeans4``: the ``reliability`` strategy routing the SFT start's fixed samples
  (no training) per grouping: share of prompts scored by their domain's best RM, RM scorings per
  response;
* ``--groupings column,kmeans4,kmeans4-run``: training runs of ``laser:reliability`` per grouping
  (``-run``: k-means on the policy's last-token state) with the demo's settings.

Usage: ``python benchmarks/reliability_groups.py --seeds 5 --simulate column,kmeans4,kmeans8``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
from reliability_offline import sample_sft

from laser.bench.rms import make_demo_rms


def simulate_routing(train, samples, rms, grouping=None, embed=None, seed: int = 0, passes: int = 3, bs: int = 16):
    """Drive the ``reliability`` strategy over the fixed SFT samples (no training: the policy does
    not move), batches of one domain in shuffled order as in the demo; returns (best-RM share
    over all passes, after the first pass, RM scorings per response, the strategy)."""
    from laser.bench.runs import oracle_map
    from laser.routing.batch import Batch
    from laser.routing.pool import RewardPool
    from laser.routing.reliability import ReliabilityRouter
    from laser.routing.strategies.reliability import ReliabilityStrategy

    names, best = [rm.name for rm in rms], oracle_map(rms)
    router = ReliabilityRouter(len(rms), anchor=names.index("generalist"), seed=seed)
    strat, pool, owner, hits = (
        ReliabilityStrategy(names, router, grouping, embed),
        RewardPool(rms),
        samples.prompt_index,
        [],
    )
    owner = np.asarray(owner)
    for it in range(passes):
        rng = np.random.default_rng([seed, it])
        by: dict[str, list[int]] = {}
        for i in rng.permutation(len(train)):
            by.setdefault(train[i].group, []).append(int(i))
        batches = [g[j : j + bs] for _, g in sorted(by.items()) for j in range(0, len(g), bs)]
        for b in rng.permutation(len(batches)):
            idx = batches[b]
            batch = Batch.of([train[i] for i in idx])
            batch.arms = batch.my_arms = strat.decide(batch, None)
            resp = [(local, j) for local, i in enumerate(idx) for j in np.flatnonzero(owner == i)]
            batch.add_responses([samples.texts[j] for _, j in resp], [local for local, _ in resp])
            strat.score(batch, pool)
            strat.units(batch, None, None, None)
            hits += [(it, names[a] == best[train[i].group]) for a, i in zip(batch.arms, idx, strict=True)]
    share = float(np.mean([h for _, h in hits]))
    late = float(np.mean([h for it, h in hits if it > 0])) if passes > 1 else share
    return share, late, float(pool.responses_scored.sum() / (passes * len(owner))), strat


def simulate_groupings(seeds: list[int], groupings: list[str], n: int) -> None:
    """:func:`simulate_routing` per grouping (``column``, ``kmeans<k>`` on the sentence encoder)."""
    from laser.policy.encoder import SentenceEncoder
    from laser.routing.kmeans import ContextGroups

    embed = SentenceEncoder("auto").embed
    print(f"\n== routing the fixed SFT samples, 3 passes, seeds {seeds}: best-RM share all / after pass 1, calls/resp")
    rows = defaultdict(list)
    for seed in seeds:
        train, samples = sample_sft(seed, n)
        rms = make_demo_rms(seed=seed, version="v2")
        for g in groupings:
            grouping = None if g == "column" else ContextGroups(int(g.removeprefix("kmeans")), seed=seed)
            share, late, calls, _ = simulate_routing(train, samples, rms, grouping, embed if grouping else None, seed)
            rows[g].append((share, late, calls))
            print(f"  seed {seed} {g:<9} {100 * share:5.1f}% / {100 * late:5.1f}%  calls/resp {calls:.2f}", flush=True)
    for g, v in rows.items():
        m = np.mean(v, axis=0)
        print(f"  mean   {g:<9} {100 * m[0]:5.1f}% / {100 * m[1]:5.1f}%  calls/resp {m[2]:.2f}")


def train_groupings(groupings: list[str], seeds: list[int]) -> None:
    """Train ``laser:reliability`` with each grouping (``column``, ``kmeans<k>``, ``kmeans<k>-run``:
    the policy's last-token state) from the SFT start with the demo's RMs and settings; prints the
    share of prompts scored by their domain's best RM (after the first iteration and overall), the
    purity of the final groups against the domains, the greedy test accuracy and RM calls/response."""
    import json
    import tempfile
    from pathlib import Path

    from laser.bench.policy import build_tiny_policy, evaluate_accuracy
    from laser.bench.runs import (
        DEFAULT_FEEDBACK,
        RELIABILITY_ANCHOR,
        DemoSettings,
        benchmark_sets,
        demo_rms,
        demo_run_config,
        load_sft_policy,
        oracle_map,
    )
    from laser.build import build
    from laser.routing.kmeans import prompt_key, purity

    s, out = DemoSettings(), Path(tempfile.mkdtemp(prefix="reliability_groups_"))
    print(f"\n== laser:reliability by grouping, seeds {seeds} (best-RM share: all steps / after iteration 1)")
    for seed in seeds:
        policy_dir = build_tiny_policy(seed=seed, target=s.sft_target)
        train, test = benchmark_sets(s, seed)
        rms = demo_rms(s, seed)
        names, best = [rm.name for rm in rms], oracle_map(rms)
        domain_of = {ex.id: ex.group for ex in train}
        for g in groupings:
            kw = {"anchor": RELIABILITY_ANCHOR}
            if g != "column":
                k, _, ctx = g.removeprefix("kmeans").partition("-")
                kw.update(groups="kmeans", n_groups=int(k), cluster_context=ctx or "auto")
            run_dir = out / f"seed{seed}" / g
            cfg = demo_run_config(seed, run_dir, names, s, {"name": "reliability", "kwargs": kw}, DEFAULT_FEEDBACK)
            t0 = time.perf_counter()
            trainer = build(cfg, train, load_sft_policy(policy_dir), rms, show_progress=False)
            summary = trainer.run()
            log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
            hits = [
                (r["iteration"], names[a] == best[domain_of[i]])
                for r in log
                for i, a in zip(r["prompt_ids"], r["prompt_arms"], strict=True)
            ]
            share = np.mean([h for _, h in hits])
            late = np.mean([h for it, h in hits if it > min(it for it, _ in hits)])
            grouping = trainer.strategy.grouping
            pur = (
                purity([grouping.group_of_key(prompt_key(ex.prompt)) for ex in train], [ex.group for ex in train])
                if grouping is not None
                else 1.0
            )
            acc = evaluate_accuracy(
                trainer.policy.model, trainer.policy.tokenizer, test, max_new_tokens=s.max_new_tokens
            )["average"]
            calls = sum(summary["responses_scored"]) / (s.iterations * len(train) * s.n_samples)
            print(
                f"  seed {seed} {g:<14} best-RM share {100 * share:5.1f}% / {100 * late:5.1f}%  purity {pur:.2f}  "
                f"acc {100 * acc:5.1f}  calls/resp {calls:.2f}  {time.perf_counter() - t0:5.1f}s",
                flush=True,
            )


def cluster_purity(seeds: list[int], ks: list[int]) -> None:
    """k-means purity of the training prompts' domains (:func:`laser.routing.kmeans.purity`) on the
    sentence encoder's embedding and on the SFT policy's last-token state, per k (mean over seeds)."""
    from laser.bench.policy import build_tiny_policy
    from laser.bench.runs import DemoSettings, benchmark_sets, load_sft_policy
    from laser.policy.encoder import SentenceEncoder
    from laser.routing.kmeans import kmeans, purity

    s, enc = DemoSettings(), SentenceEncoder("auto")
    out = defaultdict(list)
    for seed in seeds:
        train, _ = benchmark_sets(s, seed)
        prompts, domains = [ex.prompt for ex in train], [ex.group for ex in train]
        policy = load_sft_policy(build_tiny_policy(seed=seed, target=s.sft_target))
        for name, x in (("encoder", enc.embed(prompts)), ("policy last-token", policy.context(prompts))):
            x = x / np.linalg.norm(x, axis=1, keepdims=True)  # as ContextGroups clusters them
            for k in ks:
                out[(name, k)].append(purity(kmeans(x, k, seed=seed)[1], domains))
    print(f"\n== k-means purity of the {len(prompts)} training prompts' 4 domains, seeds {seeds}")
    for (name, k), v in sorted(out.items()):
        print(f"  {name:<18} k = {k:<3} purity mean {np.mean(v):.3f} min {np.min(v):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n", type=int, default=12, help="samples per prompt (the demo's n_samples)")
    ap.add_argument("--purity", action="store_true", help="the k-means purity of the domains (k = 4, 8, 16)")
    ap.add_argument("--simulate", default="", help="route the fixed SFT samples per grouping, e.g. column,kmeans4")
    ap.add_argument("--groupings", default="", help="train per grouping, e.g. column,kmeans4,kmeans4-run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    if args.purity:
        cluster_purity(seeds, [4, 8, 16])
    if args.simulate:
        simulate_groupings(seeds, args.simulate.split(","), args.n)
    if args.groupings:
        train_groupings(args.groupings.split(","), seeds)


if __name__ == "__main__":
    main()
