"""The ``engines`` section of benchmarks/gpu_check.py: the policy update under FSDP2 and DeepSpeed
ZeRO-2 on one CUDA process, set up by ``accelerate launch`` from examples/accelerate/*.yaml, against
the same update without an engine on the same GPU.

Runs tests/training/engine_update_script.py (four updates with several micro-batches, a checkpoint after
step 3 resumed by a fresh model; see its docstring) three times: ``python`` (one process, no
engine, CUDA), and ``accelerate launch --config_file examples/accelerate/fsdp.yaml`` and
``... deepspeed_zero2.yaml`` with ``--num_processes 1`` (float32, ``--mixed_precision no``, so
the comparison is exact up to reduction order). With one process nothing is sharded across GPUs:
what this checks is the engines' CUDA code paths and our use of their APIs (parameters after
``prepare``, the accumulation boundary, the reference swap, full-state checkpoints); the two-process
equality is checked on CPU by tests/training/test_engines.py.

``--tiny`` (CPU): the same comparison with the engines forced into Accelerate's state on one CPU
process (tests/training/engine_force.py), since Accelerate sets them up only with CUDA devices.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "training" / "engine_update_script.py"
CONFIGS = {"fsdp2": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml"}


def _run(cmd: list[str], log: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=300, start_new_session=True
        ).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[-4:])} exited with {rc}: {log.read_text()[-2000:]}")
    return time.perf_counter() - t0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(engine: str, tiny: bool) -> list[str]:
    common = [
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
    ]
    if tiny:  # a one-process gloo group (torchrun), the engine forced in by the script
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "1",
            "--master_port",
            str(_free_port()),
            str(SCRIPT),
            engine,
        ]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "examples" / "accelerate" / CONFIGS[engine]),
        *common,
        str(SCRIPT),
        "auto",
    ]


def section_engines(ctx) -> dict:
    import torch

    def diff(a, b):
        return max(float((a[n].float() - b[n].float()).abs().max()) for n in a)

    work = ctx.out / "engines"
    work.mkdir(parents=True, exist_ok=True)
    base_engine = "single" if ctx.tiny else "auto"
    secs = {"single": _run([sys.executable, str(SCRIPT), base_engine, str(work / "single")], work / "single.log")}
    res = {"single": torch.load(work / "single" / "result.pt", weights_only=True)}
    out = {"device": ctx.device, "processes": 1, "precision": "float32", "single_engine": res["single"]["engine"]}
    for engine in CONFIGS:
        secs[engine] = _run([*_launch(engine, ctx.tiny), str(work / engine)], work / f"{engine}.log")
        r = res[engine] = torch.load(work / engine / "result.pt", weights_only=True)
        one = res["single"]
        out[engine] = {
            "engine_seen": r["engine"],
            "max_abs_weight_diff": diff(one["final"]["trainable"], r["final"]["trainable"]),
            "max_abs_grad_norm_diff": max(
                abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(one["steps"], r["steps"], strict=True)
            ),
            "max_abs_loss_diff": max(abs(a["loss"] - b["loss"]) for a, b in zip(one["steps"], r["steps"], strict=True)),
            "resume_max_abs_diff": diff(r["resumed"]["trainable"], r["final"]["trainable"]),
            "wall_s": round(secs[engine], 1),
        }
    out["single_wall_s"] = round(secs["single"], 1)
    return out
