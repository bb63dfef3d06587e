"""Best-of-n with the label-free reliability router on the embedded benchmark (``laser bon``'s code).

For each seed: the benchmark's SFT start (v2) samples ``n`` responses per test prompt of benchmark
v2; the demo's five RMs; ``run_bon`` with ``selector.name: reliability`` (anchor ``generalist``,
groups = the prompts' domains; the router reads no label) and, for reference, with LinUCB per
prompt (whose reward is the gold correctness of its pick: labelled). Gold answers score every
method's pick. Prints per seed and method: accuracy, headroom over random ((m - random) /
(oracle - random)), RM calls per response of the routing (probes included), the reliability
router's RM per domain beside the benchmark's design (``laser.bench.runs.oracle_map``: the expert
that is reliable on each domain), and each single RM's accuracy.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bon_reliability.py [--seeds 2] [--per-domain 100] [--n 8]``
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np


def bon(method: str, seed: int, policy, rms, examples, n: int, out: str) -> dict:
    from laser.bench.runs import RELIABILITY_ANCHOR
    from laser.bon import run_bon
    from laser.config import load_config

    selector = (
        {"name": "reliability", "kwargs": {"anchor": RELIABILITY_ANCHOR}}
        if method == "reliability"
        else {"name": "linucb", "alpha": 0.1}
    )
    cfg = load_config(
        data={
            "seed": seed,
            "output_dir": out,
            "rewards": [{"name": rm.name, "type": "length"} for rm in rms],  # the objects below are used
            "selector": selector,
            "train": {"n_samples": n, "batch_size": 16, "max_new_tokens": 40, "temperature": 1.0},
        },
        require_data=False,
    )
    return run_bon(cfg, policy, rms, examples, show_progress=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--per-domain", type=int, default=100, help="test prompts per domain")
    p.add_argument("--n", type=int, default=8, help="responses per prompt")
    args = p.parse_args(argv)

    import torch

    from laser.bench.policy import build_tiny_policy
    from laser.bench.rms import make_demo_rms
    from laser.bench.runs import load_sft_policy, oracle_map
    from laser.bench.tasks import make_benchmark

    torch.set_num_threads(1)
    print(f"{'seed':<6}{'method':<22}{'accuracy':>10}{'headroom %':>12}{'calls/response':>16}  routed RM per domain")
    for seed in range(args.seeds):
        policy = load_sft_policy(build_tiny_policy(seed=seed, target="v2"))
        examples = make_benchmark(args.per_domain, seed=seed, split="test", version="v2")
        rng = np.random.default_rng(seed)
        examples = [examples[i] for i in rng.permutation(len(examples))]  # domains mixed in each batch
        for method in ("reliability", "linucb"):
            rms = make_demo_rms(seed=seed, version="v2")
            with tempfile.TemporaryDirectory() as out:
                r = bon(method, seed, policy, rms, examples, args.n, out)
            m = r["methods"]
            rnd, orc = m["random"]["accuracy"], m["oracle"]["accuracy"]
            rows = {"bandit": method, "random": "random", "score_ensemble": "score_ensemble"}
            if method == "linucb":
                rows = {"bandit": "linucb (gold reward)"}
            for key, label in rows.items():
                e = m[key]
                routed = ""
                if key == "bandit" and method == "reliability":
                    routed = ", ".join(f"{g}: {v['arm']} ({v['status']})" for g, v in r["routing"].items())
                print(
                    f"{seed:<6}{label:<22}{100 * e['accuracy']:>9.1f}%"
                    f"{100 * (e['accuracy'] - rnd) / (orc - rnd):>12.0f}{e['per_response']:>16.2f}  {routed}"
                )
            if method == "reliability":
                design = oracle_map(rms)
                right = sum(r["routing"][g]["arm"] == design[g] for g in design)
                print(f"{seed:<6}{'design (oracle_map)':<22}  {design}: reliability right on {right}/{len(design)}")
                singles = {k[7:]: v["accuracy"] for k, v in m.items() if k.startswith("single:")}
                print(f"{seed:<6}{'single RMs':<22}  " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in singles.items()))
                print(f"{seed:<6}{'oracle (any correct)':<22}{100 * orc:>9.1f}%")


if __name__ == "__main__":
    main()
