"""A 2-process ``laser train`` under a sharded engine, SIGKILLed mid-run (the launcher and both
ranks), then resumed with ``--resume``: it ends with the same weights (trainable tensors), bandit
state and arm sequence as an uninterrupted 2-process run under the same engine.

The checkpoints hold full (gathered) tensors of the sharded weights, reference and AdamW state
(``PolicyUpdate.state_dict``), written by the main process through the atomic checkpoint writer;
every rank loads them back into its shards. Runs through tests/training/engine_train.py, which forces the
engine into Accelerate's state on CPU (tests/training/engine_force.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers import two_cpu_processes, write_prompts
from reliability._helpers import checkpoint_hash, read_log

from laser.training.checkpoint import find_latest

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parents[2]
WRAPPER = Path(__file__).with_name("engine_train.py")
STEPS = 6  # 8 prompts, batch 4, 3 iterations
KILL_AFTER = 3  # log records written before the kill


def _launch(engine: str, args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        *two_cpu_processes(),
        str(WRAPPER),
        engine,
        *args,
    ]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def _finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc), children before their parents' parents."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out[::-1]


def _config(root: Path, model_dir: Path) -> Path:
    cfg = {
        "seed": 5,
        "policy": {"model": str(model_dir)},
        "data": {"prompts": str(write_prompts(root / "prompts.jsonl", n=8))},
        "rewards": [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}],
        "selector": {"name": "lints"},
        "train": {
            "iterations": 3,
            "batch_size": 4,
            "n_samples": 4,
            "max_new_tokens": 6,
            "lr": 1e-2,
            "pairs_per_prompt": 2,
            "micro_batch_pairs": 2,
        },
        "checkpoint": {"every": 1, "keep_last": 2},
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("engine", ["zero3", pytest.param("fsdp2", marks=pytest.mark.slow)])
def test_sigkill_of_a_two_process_run_resumes_to_the_uninterrupted_state(tmp_path, tiny_model_dir, engine):
    pytest.importorskip("deepspeed")
    cfg = _config(tmp_path, tiny_model_dir)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _finish(
        _launch(engine, ["train", "--config", str(cfg), f"output_dir={ref}"], tmp_path / "ref.log"),
        tmp_path / "ref.log",
    )

    proc = _launch(engine, ["train", "--config", str(cfg), f"output_dir={killed}"], tmp_path / "killed.log")
    deadline = time.monotonic() + 400
    while not ((killed / "log.jsonl").exists() and (killed / "log.jsonl").read_text().count("\n") >= KILL_AFTER):
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victims = _descendants(proc.pid) + [proc.pid]
    assert len(victims) >= 3  # the launcher and (at least) the two ranks
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = read_log(killed)
    assert KILL_AFTER <= len(done) < STEPS, len(done)

    resumed = _launch(
        engine, ["train", "--config", str(cfg), f"output_dir={killed}", "--resume"], tmp_path / "resumed.log"
    )
    _finish(resumed, tmp_path / "resumed.log")
    a, b = find_latest(ref / "checkpoints")[0], find_latest(killed / "checkpoints")[0]
    assert a.name == b.name == f"ckpt-{STEPS:08d}"
    print(
        f"{engine}: killed after {len(done)} of {STEPS} steps; resumed hash {checkpoint_hash(b)[:12]}, "
        f"uninterrupted {checkpoint_hash(a)[:12]}"
    )
    assert checkpoint_hash(b) == checkpoint_hash(a)
    ref_log, log = read_log(ref), read_log(killed)
    assert [r["global_step"] for r in log] == list(range(1, STEPS + 1))
    assert [r["arm"] for r in log] == [r["arm"] for r in ref_log]
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
