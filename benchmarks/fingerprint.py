"""Behaviour fingerprint of the training loop, for refactors that must not change results.

Hashes of ``laser demo --quick``'s results.json (with and without its wall times) and of every
method's per-step arms, rewards and losses, and of seven short ``laser train`` runs (LinUCB per
batch and per prompt, the three ensembles, random, the paper's neg_loss): arm sequence, rewards,
final weights. Run it before and after a change and compare the JSON:

    python benchmarks/fingerprint.py OUT_DIR      # writes OUT_DIR/fingerprint.json

Used for the loop redesign (issue 10): every hash but the raw results.json (wall times) was equal.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RMS = ["math_expert", "logic_expert", "generalist", "length_lover", "noise"]
VARIANTS = {
    "linucb": {"name": "linucb"},
    "per_prompt": {"name": "linucb", "per_prompt": True},
    "score_ens": {"name": "score_ensemble"},
    "agree_ens": {"name": "agreement_ensemble"},
    "online_ens": {"name": "online_ensemble"},
    "random": {"name": "random"},
    "neg_loss": {"name": "linucb"},
}


def h(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def strip_walls(o):
    if isinstance(o, dict):
        return {k: strip_walls(v) for k, v in o.items() if k not in ("wall_time_s",)}
    if isinstance(o, list):
        return [strip_walls(v) for v in o]
    return o


def demo_hashes(out: Path, py: str) -> dict:
    """``laser demo --quick``: results.json with and without wall times, each method's arms/rewards/losses."""
    res = {}
    t = time.time()
    subprocess.run(
        [py, "-m", "laser.cli.main", "demo", "--quick", "--out", str(out / "demo")],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    res["demo_quick_secs"] = round(time.time() - t, 1)
    raw = (out / "demo" / "results.json").read_bytes()
    res["demo_results_sha_raw"] = h(raw)
    res["demo_results_sha_nowall"] = h(json.dumps(strip_walls(json.loads(raw)), sort_keys=True).encode())
    for log in sorted((out / "demo").glob("seed*/*/log.jsonl")):
        recs = [json.loads(line) for line in open(log)]
        res[f"demo_log:{log.parent.name}"] = h(
            json.dumps([[r["prompt_arms"], r["reward"], r["loss"]] for r in recs]).encode()
        )
    return res


def train_hashes(out: Path, py: str) -> dict:
    """Seven short ``laser train`` runs: arm sequence, rewards, final weights."""
    import yaml  # after OMP_NUM_THREADS is set: laser.bench.policy loads torch
    from safetensors.torch import load_file

    from laser.bench.policy import build_tiny_policy
    from laser.bench.tasks import make_benchmark

    pol = build_tiny_policy(seed=0, target="smoke")
    with open(out / "prompts.jsonl", "w") as f:
        for e in make_benchmark(4, seed=0, split="train"):
            f.write(
                json.dumps({"id": e.id, "prompt": e.prompt, "answer": e.answer, "task": e.task, "group": e.group})
                + "\n"
            )
    base = {
        "seed": 1,
        "policy": {"model": pol},
        "data": {"prompts": str(out / "prompts.jsonl"), "group_batches": True},
        "rewards": [{"name": n, "type": "demo", "seed": 1} for n in RMS],
        "train": {
            "iterations": 2,
            "batch_size": 8,
            "n_samples": 4,
            "max_new_tokens": 16,
            "pairs_per_prompt": 2,
            "lr": 1e-3,
        },
        "checkpoint": {"every": 2, "keep_last": 1},
    }
    res = {}
    for name, sel in VARIANTS.items():
        cfg = dict(base, selector=sel, output_dir=str(out / f"train_{name}"))
        if name == "neg_loss":
            cfg = dict(cfg, train=dict(base["train"], feedback="neg_loss"))
        p = out / f"{name}.yaml"
        p.write_text(yaml.safe_dump(cfg))
        t = time.time()
        r = subprocess.run([py, "-m", "laser.cli.main", "train", "--config", str(p)], capture_output=True, text=True)
        if r.returncode:
            res[f"train:{name}"] = "FAILED " + r.stderr[-300:]
            continue
        recs = [json.loads(line) for line in open(out / f"train_{name}" / "log.jsonl")]
        arms = [r_["prompt_arms"] for r_ in recs]
        w = sorted((out / f"train_{name}" / "final").glob("*.safetensors"))
        sd = load_file(str(w[0]))
        wh = h(b"".join(sd[k].numpy().tobytes() for k in sorted(sd)))
        res[f"train:{name}"] = {
            "arms": h(json.dumps(arms).encode()),
            "rewards": h(json.dumps([r_["reward"] for r_ in recs]).encode()),
            "weights": wh,
            "secs": round(time.time() - t, 1),
            "first_arms": arms[:3],
        }
    return res


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(sys.argv[1])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    res = {**demo_hashes(out, sys.executable), **train_hashes(out, sys.executable)}
    print(json.dumps(res, indent=1))
    (out / "fingerprint.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
