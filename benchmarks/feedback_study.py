"""Which bandit feedback should LASeR use? Every variant over seeds, against random and the oracle.

Variants: the paper's ``neg_loss``; label-free ``majority_pair_accuracy`` (pairs checked against the
majority answer of the prompt's own samples, labelled fraction f = 0); ``mixed_pair_accuracy``
with a seeded fraction f of the training prompts keeping their gold answer (f = 0.1, 0.25: the
others fall back to the majority answer); ``pair_accuracy`` (f = 1). ``random`` and ``oracle``
(each prompt scored by its domain's expert) bound the range; each variant's share of the oracle's
headroom, (m - random) / (oracle - random), and its difference to ``random`` come from the
two-level bootstrap over seeds and test items (``laser.bench.compare.stats``). Also: which RM each variant
picks per domain (last iteration, seeds pooled).

    python benchmarks/feedback_study.py --seeds 5 --out feedback_out            # runs (resumable)
    python benchmarks/feedback_study.py --seeds 5 --out feedback_out --report   # the table only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

#: variant -> (method, feedback, labelled fraction of the training prompts)
VARIANTS = {
    "random": ("random", "neg_loss", 0.0),
    "oracle": ("oracle", "neg_loss", 0.0),
    "neg_loss": ("laser", "neg_loss", 0.0),
    "majority (f=0)": ("laser", "majority_pair_accuracy", 0.0),
    "mixed f=0.1": ("laser", "mixed_pair_accuracy", 0.1),
    "mixed f=0.25": ("laser", "mixed_pair_accuracy", 0.25),
    "pair_accuracy (f=1)": ("laser", "pair_accuracy", 1.0),
}


def keep_labels(train: list, fraction: float, seed: int) -> list:
    """The training prompts with the gold answer kept on a seeded ``fraction`` of them (per domain)."""
    rng = np.random.default_rng([seed, 29])
    out = []
    for ex in train:
        out.append(ex if rng.random() < fraction else dataclasses.replace(ex, answer=""))
    return out


def run_one(variant: str, seed: int, s, out: Path) -> dict:
    from laser.bench.compare.runner import evaluate
    from laser.bench.demo import selection_matrix
    from laser.bench.policy import build_tiny_policy
    from laser.bench.runs import benchmark_sets, demo_rms, run_method

    method, feedback, fraction = VARIANTS[variant]
    policy_dir = build_tiny_policy(seed=seed, target=s.sft_target)
    train, test = benchmark_sets(s, seed)
    rms = demo_rms(s, seed)
    t = time.perf_counter()
    slug = variant.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "")
    _, policy, run_dir = run_method(
        method,
        seed,
        policy_dir,
        keep_labels(train, fraction, seed),
        [r.name for r in rms],
        s,
        out / "runs" / slug,
        rms=rms,
        feedback=feedback,
    )
    wall = time.perf_counter() - t
    ev = evaluate((policy.model, policy.tokenizer), test, s)
    domain_of = {ex.id: ex.group for ex in train}
    sel = selection_matrix(run_dir / "log.jsonl", domain_of, [r.name for r in rms]) if method != "random" else None
    return {"variant": variant, "seed": seed, "wall_s": wall, **ev, "selection": sel}


def report(rows: list[dict]) -> str:
    from laser.bench.compare.analyses import seed_item_matrices
    from laser.bench.compare.stats import headroom_share, hierarchical_bootstrap

    by = {v: sorted([r for r in rows if r["variant"] == v], key=lambda r: r["seed"]) for v in VARIANTS}
    by = {v: rs for v, rs in by.items() if rs}
    lines = [
        f"{'variant':<22}{'accuracy %':>12}{'- random [95% CI]':>26}{'p':>8}{'headroom % [95% CI]':>26}{'time s':>8}"
    ]
    for v, rs in by.items():
        acc = [100 * r["accuracy"]["average"] for r in rs]
        cells = [f"{v:<22}", f"{np.mean(acc):7.1f} ±{np.std(acc):3.1f}"]
        grid = seed_item_matrices([rs, by.get("random", []), by.get("oracle", [])]) if "random" in by else None
        if grid is not None and v != "random":
            (m, rnd, orc), design = grid
            d = hierarchical_bootstrap(m, rnd, design=design)
            cells += [
                f"{100 * d['mean_diff']:+8.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]",
                f"{d['p_value']:8.3f}",
            ]
            if "oracle" in by:
                h = headroom_share(m, rnd, orc, design=design)
                lo = "-inf" if h["ci_low"] is None else f"{100 * h['ci_low']:.0f}"
                hi = "+inf" if h["ci_high"] is None else f"{100 * h['ci_high']:.0f}"
                share = "n/a" if h["share"] is None else f"{100 * h['share']:.0f}"
                cells.append(f"{share:>12} [{lo}, {hi}]")
        else:
            cells += [" " * 26, " " * 8, " " * 26]
        cells.append(f"{np.mean([r['wall_s'] for r in rs]):8.1f}")
        lines.append("".join(f"{c:>26}" if i in (2, 4) else c for i, c in enumerate(cells)))
    lines += [
        "",
        f"seeds: {sorted({r['seed'] for r in rows})}; p: hierarchical bootstrap over seeds and test items",
        "",
        "RM picked per domain (last iteration, seeds pooled; share of prompts):",
    ]
    for v, rs in by.items():
        sels = [r["selection"] for r in rs if r["selection"]]
        if not sels:
            continue
        for d in sorted(sels[0]):
            shares = {rm: np.mean([s_[d][rm] for s_ in sels]) for rm in sels[0][d]}
            lines.append(f"  {v:<22}{d:<9}" + "  ".join(f"{rm} {100 * x:3.0f}%" for rm, x in shares.items()))
    return "\n".join(lines)


def main() -> None:
    import torch

    from laser.bench.runs import DemoSettings

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", default="feedback_out")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--report", action="store_true", help="print the table of finished runs only")
    p.add_argument("--set", nargs="*", default=[], help="DemoSettings overrides, e.g. iterations=8")
    args = p.parse_args()
    torch.set_num_threads(1)
    s = DemoSettings(**{k: type(getattr(DemoSettings(), k))(v) for k, v in (x.split("=", 1) for x in args.set)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    done = {(r["variant"], r["seed"]) for r in rows}
    if not args.report:
        for seed in range(args.seeds):
            for v in args.variants.split(","):
                if (v, seed) in done:
                    continue
                row = run_one(v, seed, s, out)
                rows.append(row)
                with open(path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"[seed {seed}] {v:<22} avg acc {100 * row['accuracy']['average']:.1f}  {row['wall_s']:.0f}s",
                    flush=True,
                )
    print(report(rows))


if __name__ == "__main__":
    main()
