"""Step time of the policy update under DDP, FSDP2 and DeepSpeed ZeRO-2 on 2 CPU processes, as a
ratio against DDP measured in the same run.

    PYTHONPATH=. python benchmarks/engine_step_time.py [--engines ddp,fsdp2,zero2] [--steps 8]

Each engine runs as its own ``accelerate launch --num_processes 2`` (gloo), the sharded ones forced
into Accelerate's state by tests/training/engine_force.py (Accelerate sets them up only with CUDA devices).
Every rank runs ``PolicyUpdate.run`` on the same fixed samples each step (16 pairs per rank, 2
micro-batches, reference and after-update passes included); the main process records the median
wall time of the timed steps after 2 warm-up steps. The model is the character-level tiny Llama
(hidden 64, 2 layers): on CPU at this size the step is dominated by per-pass overheads and
collectives, not by arithmetic, so the ratios say what the engines' bookkeeping costs here and
nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N, PAIRS = 8, [(0, 1), (2, 3), (4, 5), (6, 7)]  # responses per prompt; pairs per prompt


class Train:
    lr, weight_decay, beta, nll_weight, grad_clip, micro_batch_pairs = 1e-3, 0.0, 0.1, 1.0, 1.0, 8


def worker(engine: str, out: str, steps: int) -> None:
    """One rank: ``steps`` + 2 updates on fixed samples; the main process writes the step times."""
    import torch

    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "training")]
    torch.set_num_threads(1)
    from engine_force import cpu_engine_accelerator

    from laser.bench.policy import make_char_tokenizer, make_tiny_model
    from laser.policy.model import Policy, Samples
    from laser.training.dist import Dist
    from laser.training.update import PolicyUpdate

    acc = cpu_engine_accelerator(engine)
    tok = make_char_tokenizer("left")
    policy = Policy(make_tiny_model(tok, hidden=64, layers=2, heads=4, seed=0), tok)
    update = PolicyUpdate(Train, policy, acc)
    update.freeze_reference()
    prompts = [f"{i}*{i + 3}=" for i in range(4 * acc.process_index, 4 * acc.process_index + 4)]
    responses = [tok(str(7 * i + j) * (j + 2))["input_ids"] + [policy.eos_id] for i in range(4) for j in range(N)]
    samples = Samples(
        [i for i in range(4) for _ in range(N)], tok.batch_decode(responses), responses, policy.encode_prompts(prompts)
    )
    flat = [(i, i * N + c, i * N + r) for i in range(4) for c, r in PAIRS]
    times = []
    for _ in range(steps + 2):
        acc.wait_for_everyone()
        t0 = time.perf_counter()
        update.run(samples, flat, 4, Dist(acc), after=True)
        times.append(time.perf_counter() - t0)
    if acc.is_main_process:
        Path(out).write_text(json.dumps({"engine": update.engine.name, "step_s": times[2:]}))
    acc.wait_for_everyone()


def launch(engine: str, out: Path, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--multi_gpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        __file__,
        "--worker",
        engine,
        "--out",
        str(out),
        "--steps",
        str(steps),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engines", default="ddp,fsdp2,zero2")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker, a.out, a.steps)
        return {}
    engines = a.engines.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        res = {e: launch(e, Path(tmp) / f"{e}.json", a.steps) for e in engines}
    base = statistics.median(res[engines[0]]["step_s"])
    print(
        f"{'engine':8} {'median step s':>14} {'ratio vs ' + engines[0]:>14}   (2 CPU processes, gloo, {a.steps} steps)"
    )
    for e in engines:
        med = statistics.median(res[e]["step_s"])
        res[e]["median_s"], res[e]["ratio"] = med, med / base
        print(f"{e:8} {med:14.4f} {med / base:14.2f}")
    return res


if __name__ == "__main__":
    main()
