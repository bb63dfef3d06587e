"""Offline evidence for the reliability router: does the label model pick each domain's right RM?

For each seed: the benchmark's SFT start samples ``n`` responses for every training prompt of
benchmark v2; every RM of a scenario scores them all; pairs become votes
(:func:`laser.routing.reliability.pair_votes`, clusters = prompts) and the label model
(:func:`laser.routing.labelmodel.fit_label_model`) estimates each RM's accuracy per domain. Gold
answers are read only to score the outcome: an RM's gold pairwise accuracy on a domain is its
share of right votes on the pairs where exactly one response is correct.

Scenarios (each a list of RMs; the anchor is the RM named ``generalist``):

* ``v2``: the demo's five RMs (experts that mislead off their domains); the right RM is
  math_expert on arith and count, logic_expert on compare and choice.
* ``above_chance``: every RM above chance everywhere, the best one differs by domain (right/wrong
  plus Gaussian noise of sd 0.3 for a judge on its domains, 1.0 off them; the generalist 0.7; two
  weak RMs 1.5 and 2.5).
* ``shared_error``: as ``above_chance`` but three RMs (both judges and ``weak``, not the anchor)
  add the same bias, 1.5 x (length / 10 + one shared normal draw per response): a shared error
  component, as RMs trained on overlapping data share errors.
* ``near_duplicate``: the demo's five plus ``length_lover_2`` (length plus 0.5-char noise) and
  ``math_expert_2`` (math_expert's score plus small noise).

Prints, per scenario and domain, how often the label model's pick is a gold-best RM (ties count),
how often it falls back (the anchor with an anchor; a random arm label-free), and the gold accuracy of
the pick vs the best; plus the label model's time.

Usage: ``python benchmarks/reliability_offline.py [--seeds 5] [--scenarios v2,above_chance,...]``;
with ``--train laser:reliability,random,oracle`` it trains those methods with each scenario's RMs
instead (the demo's settings) and prints greedy test accuracy. Groups without a column:
``--purity`` (k-means purity of the domains on the sentence encoder vs the policy's last-token
state), ``--simulate column,kmeans4`` (the strategy routing the fixed SFT samples, no training),
``--groupings column,kmeans4,kmeans4-run`` (training runs per grouping).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from laser.rewards.synthetic import _hash_normal, _hash_uniform, make_demo_rms
from laser.routing.labelmodel import fit_label_model
from laser.routing.reliability import pair_votes
from laser.tasks.extract import extract_answer
from laser.tasks.synthetic import DOMAIN_TASKS, solve


class NoisyJudge:
    """Right/wrong plus Gaussian noise with a per-domain sd, plus ``bias`` x the length in tens of characters."""

    def __init__(self, name: str, sd: dict[str, float], seed: int, bias: float = 0.0, bias_key: str = "len"):
        self.name, self.sd, self.seed, self.bias, self.bias_key = name, sd, seed, bias, bias_key
        best = min(sd.values())  # the oracle's map (laser.benchmark.oracle_map): a judge is the expert
        self.domains = tuple(d for d, v in sd.items() if v == best) if len(set(sd.values())) > 1 else ()
        self.kind = "expert" if self.domains else "judge"  # of the domains where its noise is lowest

    def score(self, prompts, responses):
        out = []
        for p, r in zip(prompts, responses, strict=True):
            domain, truth = solve(p)
            right = float(extract_answer(DOMAIN_TASKS[domain], r) == truth)
            shared = self.bias * (len(r) / 10.0 + _hash_normal(self.seed, self.bias_key, p, r))  # the same for all
            out.append(right + self.sd[domain] * _hash_normal(self.seed, self.name, p, r) + shared)
        return np.asarray(out)


class Jittered:
    """Another RM's score plus uniform noise of width ``width`` (a near-duplicate)."""

    def __init__(self, name: str, base, width: float, seed: int):
        self.name, self.base, self.width, self.seed = name, base, width, seed

    def score(self, prompts, responses):
        noise = [_hash_uniform(self.seed, self.name, p, r) for p, r in zip(prompts, responses, strict=True)]
        return np.asarray(self.base.score(prompts, responses)) + self.width * np.asarray(noise)


MATH, LOGIC = ("arith", "count"), ("compare", "choice")


def scenario_rms(name: str, seed: int) -> list:
    demo = make_demo_rms(seed=seed, version="v2")
    if name == "v2":
        return demo
    if name == "near_duplicate":
        return [*demo, Jittered("length_lover_2", demo[3], 0.5, seed), Jittered("math_expert_2", demo[0], 0.02, seed)]
    sd = lambda good, bad, doms: {d: (good if d in doms else bad) for d in (*MATH, *LOGIC)}  # noqa: E731
    bias = 1.5 if name == "shared_error" else 0.0
    return [
        NoisyJudge("math_judge", sd(0.3, 1.0, MATH), seed, bias),
        NoisyJudge("logic_judge", sd(0.3, 1.0, LOGIC), seed, bias),
        NoisyJudge("generalist", sd(0.7, 0.7, MATH), seed),
        NoisyJudge("weak", sd(1.5, 1.5, MATH), seed, bias),
        NoisyJudge("weaker", sd(2.5, 2.5, MATH), seed),
    ]


def sample_sft(seed: int, n: int):
    """(train examples, samples) of the v2 SFT start on the training prompts."""
    from laser.benchmark import DemoSettings, benchmark_sets, load_sft_policy
    from laser.policy.tiny import build_tiny_policy

    s = DemoSettings()
    train, _ = benchmark_sets(s, seed)
    policy = load_sft_policy(build_tiny_policy(seed=seed, target=s.sft_target))
    samples = policy.sample([ex.prompt for ex in train], n, 0.8, 1.0, s.max_new_tokens, seed=seed)
    return train, samples


def votes_by_domain(train, samples, matrix: np.ndarray, seed: int, different_answers: bool = True):
    """Per domain: (votes (K, m), clusters (m,), gold (m,) in {-1, 0, +1}: the vote a perfect RM casts)."""
    rng = np.random.default_rng([seed, 99])
    owner = np.asarray(samples.prompt_index)
    out = defaultdict(lambda: ([], [], []))
    for i, ex in enumerate(train):
        idx = np.flatnonzero(owner == i)
        texts = [samples.texts[j] for j in idx]
        answers = [extract_answer(ex.task, t) for t in texts]
        correct = np.array([float(a == ex.answer) for a in answers])
        # the gold is a pseudo-RM: appended as the last row so its vote follows each pair's orientation
        full = np.vstack([matrix[:, idx], correct[None]])
        v = pair_votes(full, answers if different_answers else None, texts, rng, max_pairs=32)
        bucket = out[ex.group]
        bucket[0].append(v[:-1])
        bucket[1].append(np.full(v.shape[1], i))
        bucket[2].append(v[-1])
    return {d: (np.hstack(a), np.concatenate(b), np.concatenate(c)) for d, (a, b, c) in out.items()}


def shared_error_checks(v: np.ndarray, cl: np.ndarray, anchor: int, res, gold_acc: np.ndarray) -> dict:
    """Cheap candidate detections of a ranking the votes mislead, on one anchored fit: the rank-one
    fit's chi-square z; whether one-coin EM picks the spectral fit's best RM; whether the anchor's
    own agreements ``Q[anchor, j]`` (untouched by errors shared among the other RMs) rank the
    fit's best non-anchor RM first; and whether the fit's pick is a gold-best RM."""
    from laser.routing.labelmodel import moment_se, second_moments

    em = fit_label_model(v, cl, anchor=anchor, method="em")
    q, n = second_moments(v)
    se = moment_se(v, q, n, cl)
    others = [k for k in range(len(v)) if k != anchor and res.used[k]]
    fit_best = max(others, key=lambda k: res.acc[k])
    row_best = max(others, key=lambda k: q[anchor, k])
    # how far (in standard errors) the anchor's agreements prefer another RM to the fit's best
    row_z = max(
        ((q[anchor, j] - q[anchor, fit_best]) / np.hypot(se[anchor, j], se[anchor, fit_best]) for j in others),
        default=0.0,
    )
    pick = res.ranking()[0]
    return {
        "row_z": float(row_z),
        "z": res.gof["z"],
        "em_same": em.ranking()[0] == pick,
        "row_same": row_best == fit_best,
        "right": bool(gold_acc[pick] >= np.nanmax(gold_acc) - 1e-9),
        "ok": res.ok,
    }


def evaluate(name: str, seeds: list[int], n: int, cache: dict) -> None:
    checks: list[dict] = []
    stats = defaultdict(list)
    fit_times = []
    for seed in seeds:
        if seed not in cache:
            cache[seed] = sample_sft(seed, n)
        train, samples = cache[seed]
        rms = scenario_rms(name, seed)
        names = [rm.name for rm in rms]
        prompts = [train[i].prompt for i in samples.prompt_index]
        matrix = np.stack([np.asarray(rm.score(prompts, samples.texts), dtype=float) for rm in rms])
        anchor = names.index("generalist")
        for variant, diff in (("different answers", True), ("all pairs", False)):
            for d, (v, cl, gold) in sorted(votes_by_domain(train, samples, matrix, seed, diff).items()):
                decided = gold != 0
                gold_acc = np.array(
                    [
                        (v[k, decided] == gold[decided])[v[k, decided] != 0].mean()
                        if (v[k, decided] != 0).any()
                        else np.nan
                        for k in range(len(rms))
                    ]
                )
                best = int(np.nanargmax(gold_acc))
                for label, kw in (("anchor", {"anchor": anchor}), ("label-free", {})):
                    t0 = time.perf_counter()
                    try:
                        res = fit_label_model(v, cl, **kw)
                        fit_times.append(time.perf_counter() - t0)
                    except ValueError as exc:
                        stats[(variant, label, d)].append(("refused", best, gold_acc, str(exc)[:60], {}))
                        continue
                    pick = res.ranking()[0] if res.ok else (anchor if label == "anchor" else -1)
                    status = "estimate" if res.ok else "fallback"
                    stats[(variant, label, d)].append((status, best, gold_acc, pick, res.twins))
                    if label == "anchor" and diff:
                        checks.append(shared_error_checks(v, cl, anchor, res, gold_acc))
    print(f"\n== scenario {name}: RMs {names} (anchor: generalist), seeds {seeds}, {n} samples per prompt")
    print(
        f"{'pairs':<18}{'sign':<12}{'domain':<9}{'right pick':>11}{'fallback':>9}{'gold acc pick':>14}"
        f"{'gold acc best':>14}  picks / twins"
    )
    for (variant, label, d), rows in sorted(stats.items()):
        right = sum(
            1 for st, best, ga, pick, _ in rows if st == "estimate" and ga[pick] >= ga[best] - 1e-9
        )  # ties count
        fallback = sum(1 for st, *_ in rows if st != "estimate")
        pick_acc = np.mean([ga[p] if isinstance(p, int) and p >= 0 else 0.5 for _, _, ga, p, _ in rows])
        best_acc = np.mean([ga[b] for _, b, ga, _, _ in rows])
        picks = ",".join(names[p] if isinstance(p, int) and p >= 0 else "random" for _, _, _, p, _ in rows)
        twins = [t for *_, t in rows if t]
        print(
            f"{variant:<18}{label:<12}{d:<9}{right:>6}/{len(rows):<4}{fallback:>9}{pick_acc:>14.3f}{best_acc:>14.3f}"
            f"  {picks}{f' twins in {len(twins)}/{len(rows)}, e.g. {twins[0]}' if twins else ''}"
        )
    if checks:
        wrong = [c for c in checks if not c["right"]]
        count = lambda key, rows: f"{sum(c[key] for c in rows)}/{len(rows)}"  # noqa: E731
        print(
            f"shared-error checks (different answers, anchor; {len(checks)} domain-seeds, the fit's pick wrong in "
            f"{len(wrong)}): chi2 z max {max(c['z'] for c in checks):.1f} (wrong picks: "
            f"{max((c['z'] for c in wrong), default=float('nan')):.1f}); EM picks the same RM in "
            f"{count('em_same', checks)} ({count('em_same', wrong)} wrong); the anchor's agreements rank the "
            f"fit's best non-anchor RM first in {count('row_same', checks)} ({count('row_same', wrong)} wrong), "
            f"their preference for another RM at most {max(c['row_z'] for c in checks):.1f} standard errors"
        )
    if fit_times:
        print(
            f"label model fit: median {1000 * np.median(fit_times):.1f} ms, max {1000 * np.max(fit_times):.1f} ms "
            f"({len(fit_times)} fits, K = {len(names)})"
        )


def train_scenarios(scenarios: list[str], seeds: list[int], methods: list[str]) -> None:
    """Train each method from the SFT start with a scenario's RMs (the demo's settings) and print
    the greedy test accuracy and, for the router, its last routing per domain."""
    import json
    import tempfile
    from pathlib import Path

    from laser.benchmark import DemoSettings, benchmark_sets, run_method
    from laser.policy.tiny import build_tiny_policy, evaluate_accuracy

    s = DemoSettings()
    out = Path(tempfile.mkdtemp(prefix="reliability_train_"))
    for name in scenarios:
        print(f"\n== training, scenario {name}: greedy test accuracy % (average of 4 domains), seeds {seeds}")
        acc = defaultdict(list)
        for seed in seeds:
            policy_dir = build_tiny_policy(seed=seed, target=s.sft_target)
            train, test = benchmark_sets(s, seed)
            rms = scenario_rms(name, seed)
            names = [rm.name for rm in rms]
            for m in methods:
                t0 = time.perf_counter()
                summary, policy, run_dir = run_method(m, seed, policy_dir, train, names, s, out / name, rms=rms)
                a = evaluate_accuracy(policy.model, policy.tokenizer, test, max_new_tokens=s.max_new_tokens)["average"]
                acc[m].append(a)
                extra = ""
                if m == "laser:reliability":
                    last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
                    calls = sum(summary["responses_scored"]) / (s.iterations * len(train) * s.n_samples)
                    routes = {g: f"{names[r['arm']]} ({r['status'][:8]})" for g, r in last["routing"].items()}
                    extra = f"  calls/response {calls:.2f}; last routing {routes}"
                print(f"  seed {seed} {m:<20} {100 * a:5.1f}  {time.perf_counter() - t0:5.1f}s{extra}", flush=True)
        for m, v in acc.items():
            print(f"  mean {m:<20} {100 * np.mean(v):5.1f}")


def simulate_routing(train, samples, rms, grouping=None, embed=None, seed: int = 0, passes: int = 3, bs: int = 16):
    """Drive the ``reliability`` strategy over the fixed SFT samples (no training: the policy does
    not move), batches of one domain in shuffled order as in the demo; returns (best-RM share
    over all passes, after the first pass, RM scorings per response, the strategy)."""
    from laser.benchmark import oracle_map
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

    from laser.benchmark import (
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
    from laser.policy.tiny import build_tiny_policy, evaluate_accuracy
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
    from laser.benchmark import DemoSettings, benchmark_sets, load_sft_policy
    from laser.policy.encoder import SentenceEncoder
    from laser.policy.tiny import build_tiny_policy
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
    ap.add_argument("--scenarios", default="v2,above_chance,shared_error,near_duplicate")
    ap.add_argument(
        "--train",
        default="",
        help="comma-separated methods to also train per scenario "
        "(e.g. laser:reliability,random,oracle,single:generalist); offline analysis skipped",
    )
    ap.add_argument("--purity", action="store_true", help="only the k-means purity of the domains (k = 4, 8, 16)")
    ap.add_argument(
        "--groupings", default="", help="train laser:reliability per grouping, e.g. column,kmeans4,kmeans4-run"
    )
    ap.add_argument("--simulate", default="", help="route the fixed SFT samples per grouping, e.g. column,kmeans4")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.simulate:
        simulate_groupings(list(range(args.seeds)), args.simulate.split(","), args.n)
        return
    if args.groupings:
        train_groupings(args.groupings.split(","), list(range(args.seeds)))
        return
    if args.purity:
        cluster_purity(list(range(args.seeds)), [4, 8, 16])
        return
    if args.train:
        train_scenarios(args.scenarios.split(","), list(range(args.seeds)), args.train.split(","))
        return
    cache: dict = {}
    for name in args.scenarios.split(","):
        evaluate(name, list(range(args.seeds)), args.n, cache)


if __name__ == "__main__":
    main()
