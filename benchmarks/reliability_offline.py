"""Offline evidence for the reliability router: does the label model pick each domain's right RM?

For each seed: the benchmark's SFT start samples ``n`` responses for every training prompt of
benchmark v2; every RM of a scenario scores them all; pairs become votes
(:func:`laser.routing.reliability.pair_votes`, clusters = prompts) and the label model
(:func:`laser.routing.labelfit.fit_label_model`) estimates each RM's accuracy per domain. Gold
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
how often it falls back (the anchor with an anchor; with labelled pairs and no anchor the RM right on
most of them; a random arm label-free), and the gold accuracy of the pick vs the best; plus the label
model's time. ``--labelled L`` adds fits given L labelled pairs per domain (``--draws`` draws of
them from the pairs with a gold preference), with and without the anchor: the pairs fix the sign
and veto a pick they contradict.

Usage: ``python benchmarks/reliability_offline.py [--seeds 5] [--scenarios v2,above_chance,...] [--labelled 20]``;
with ``--train laser:reliability,random,oracle`` it trains those methods with each scenario's RMs
instead (the demo's settings) and prints greedy test accuracy. Groups without a column (k-means):
``benchmarks/reliability_groups.py``.
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections import defaultdict

import numpy as np

from laser.bench.rms import _hash_normal, _hash_uniform, make_demo_rms
from laser.bench.tasks import DOMAIN_TASKS, solve
from laser.routing.labelfit import fit_label_model
from laser.routing.reliability import pair_votes
from laser.tasks.extract import extract_answer


class NoisyJudge:
    """Right/wrong plus Gaussian noise with a per-domain sd, plus ``bias`` x the length in tens of characters."""

    def __init__(self, name: str, sd: dict[str, float], seed: int, bias: float = 0.0, bias_key: str = "len"):
        self.name, self.sd, self.seed, self.bias, self.bias_key = name, sd, seed, bias, bias_key
        best = min(sd.values())  # the oracle's map (laser.bench.runs.oracle_map): a judge is the expert
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
    from laser.bench.policy import build_tiny_policy
    from laser.bench.runs import DemoSettings, benchmark_sets, load_sft_policy

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


def sign_variants(anchor: int, v: np.ndarray, gold: np.ndarray, seed: int, domain: str, labelled: int, draws: int):
    """``(label, fit kwargs)``: the anchor, label-free, and with ``labelled`` > 0 ``draws`` draws of
    that many gold-decided pairs (votes oriented chosen-first, as the router stores them) with and
    without the anchor."""
    yield "anchor", {"anchor": anchor}
    yield "label-free", {}
    decided = np.flatnonzero(gold != 0)
    if labelled <= 0 or len(decided) < labelled:
        return
    for r in range(draws):
        idx = np.random.default_rng([seed, r, labelled, zlib.crc32(domain.encode())]).choice(decided, labelled, False)
        pairs = (v[:, idx] * gold[idx][None, :], np.ones(labelled))
        yield f"anchor+{labelled}L", {"anchor": anchor, "labelled": pairs}
        yield f"{labelled} labels", {"labelled": pairs}


def fallback_arm(kw: dict, k: int) -> int:
    """The router's fallback (:meth:`ReliabilityRouter._fallback`): the anchor, else the RM right on
    most labelled pairs, else -1 (one arm per group drawn from its name: scored as chance)."""
    if "anchor" in kw:
        return kw["anchor"]
    if "labelled" in kw:
        right = np.sum(kw["labelled"][0] == 1, axis=1)
        return max(range(k), key=lambda j: (right[j], -j))
    return -1


def evaluate(name: str, seeds: list[int], n: int, cache: dict, labelled: int = 0, draws: int = 10) -> None:
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
                for label, kw in sign_variants(anchor, v, gold, seed, d, labelled, draws):
                    t0 = time.perf_counter()
                    try:
                        res = fit_label_model(v, cl, **kw)
                        fit_times.append(time.perf_counter() - t0)
                    except ValueError as exc:
                        stats[(variant, label, d)].append(("refused", best, gold_acc, str(exc)[:60], {}))
                        continue
                    pick = res.ranking()[0] if res.ok else fallback_arm(kw, len(rms))
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
    totals = defaultdict(lambda: [0, 0, 0, 0])  # (pairs, sign) -> right, fallback, trusted wrong, fits
    for (variant, label, _), rows in stats.items():
        t = totals[(variant, label)]
        for st, best, ga, pick, _ in rows:
            right = isinstance(pick, int) and pick >= 0 and ga[pick] >= ga[best] - 1e-9
            t[0] += right
            t[1] += st != "estimate"
            t[2] += st == "estimate" and not right
            t[3] += 1
    for (variant, label), (right, fb, wrong, fits) in sorted(totals.items()):
        print(
            f"  total {variant:<18}{label:<14} routed to a gold-best RM {right}/{fits}; fallbacks {fb}; "
            f"trusted a wrong pick {wrong}"
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


def write_labelled(train, samples, per_domain: int, seed: int, path) -> int:
    """A labelled-pairs JSONL (docs/reliability_routing.md, "Labelled pairs"): per domain,
    ``per_domain`` pairs (a correct SFT sample of a training prompt, a wrong one of the same
    prompt), drawn at random; returns the pairs written."""
    import json

    rng = np.random.default_rng([seed, 7])
    owner = np.asarray(samples.prompt_index)
    by_domain = defaultdict(list)
    for i, ex in enumerate(train):
        texts = [samples.texts[j] for j in np.flatnonzero(owner == i)]
        good = [t for t in texts if extract_answer(ex.task, t) == ex.answer]
        bad = [t for t in texts if extract_answer(ex.task, t) != ex.answer]
        by_domain[ex.group] += [(ex.prompt, g, b) for g in good[:2] for b in bad[:2]]
    rows = []
    for group, pairs in sorted(by_domain.items()):
        for k in rng.choice(len(pairs), min(per_domain, len(pairs)), replace=False):
            p, c, r = pairs[k]
            rows.append({"prompt": p, "chosen": c, "rejected": r, "group": group})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def train_scenarios(scenarios: list[str], seeds: list[int], methods: list[str], labelled: int = 20) -> None:
    """Train each method from the SFT start with a scenario's RMs (the demo's settings) and print
    the greedy test accuracy and, for the router, its last routing per domain. The method
    ``laser:reliability+labels`` is the router given ``labelled`` labelled pairs per domain
    (:func:`write_labelled`), with the anchor; ``laser:reliability+labels-anchor`` without it."""
    import json
    import tempfile
    from pathlib import Path

    from laser.bench.policy import build_tiny_policy, evaluate_accuracy
    from laser.bench.runs import DemoSettings, benchmark_sets, run_method

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
                base, extra_kw = m, None
                if m.startswith("laser:reliability+labels"):
                    path = out / f"{name}_seed{seed}_labelled.jsonl"
                    write_labelled(train, sample_sft(seed, s.n_samples)[1], labelled, seed, path)
                    base, extra_kw = "laser:reliability", {"labelled_pairs": str(path)}
                    if m.endswith("-anchor"):
                        extra_kw["anchor"] = None
                summary, policy, run_dir = run_method(
                    base,
                    seed,
                    policy_dir,
                    train,
                    names,
                    s,
                    out / name / m.replace("+", "_"),
                    rms=rms,
                    reliability=extra_kw,
                )
                a = evaluate_accuracy(policy.model, policy.tokenizer, test, max_new_tokens=s.max_new_tokens)["average"]
                acc[m].append(a)
                extra = ""
                if base == "laser:reliability":
                    last = {}  # each group's routing at its last step (a step logs the groups of its batch)
                    for line in (run_dir / "log.jsonl").read_text().splitlines():
                        last.update(json.loads(line).get("routing") or {})
                    calls = sum(summary["responses_scored"]) / (s.iterations * len(train) * s.n_samples)
                    routes = {g: f"{names[r['arm']]} ({r['status'][:8]})" for g, r in sorted(last.items())}
                    extra = f"  calls/response {calls:.2f}; last routing {routes}"
                print(f"  seed {seed} {m:<20} {100 * a:5.1f}  {time.perf_counter() - t0:5.1f}s{extra}", flush=True)
        for m, v in acc.items():
            print(f"  mean {m:<20} {100 * np.mean(v):5.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n", type=int, default=12, help="samples per prompt (the demo's n_samples)")
    ap.add_argument("--scenarios", default="v2,above_chance,shared_error,near_duplicate")
    ap.add_argument("--labelled", type=int, default=0, help="also fit with this many labelled pairs per group")
    ap.add_argument("--draws", type=int, default=10, help="draws of the labelled pairs per domain-seed")
    ap.add_argument(
        "--train",
        default="",
        help="comma-separated methods to also train per scenario "
        "(e.g. laser:reliability,laser:reliability+labels,random,oracle,single:generalist; +labels: "
        "--labelled pairs per domain, default 20); offline analysis skipped",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.train:
        train_scenarios(args.scenarios.split(","), list(range(args.seeds)), args.train.split(","), args.labelled or 20)
        return
    cache: dict = {}
    for name in args.scenarios.split(","):
        evaluate(name, list(range(args.seeds)), args.n, cache, args.labelled, args.draws)


if __name__ == "__main__":
    main()
