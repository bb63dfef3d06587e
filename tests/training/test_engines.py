"""The policy update under every engine Accelerate can run it with: DDP, FSDP2 and DeepSpeed ZeRO
1 (slow suite), 2 and 3 on 2 gloo processes equal the single-process update, step by step, when the ranks hold
different numbers of pairs (6/3, 0/3, 3/8 and 6/0) cut into several micro-batches; a checkpoint
taken under each engine resumes to the same weights; an Accelerate config asking for an engine
this machine cannot provide is refused.

The sharded engines run on CPU through tests/training/engine_force.py (Accelerate only sets them up with
CUDA devices); tests/training/engine_update_script.py is what runs, see its docstring for the steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import two_cpu_processes

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("engine_update_script.py")
PAIRS_PER_STEP = [9, 3, 11, 6]
TOL = 1e-5


def _launch(args: list[str], tmp_path: Path, processes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("ACCELERATE_USE_FSDP", None), env.pop("ACCELERATE_USE_DEEPSPEED", None)
    launch = [sys.executable] if processes == 1 else two_cpu_processes()
    proc = subprocess.run(
        [*launch, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _run(args: list[str], tmp_path: Path, processes: int) -> dict:
    _launch(args, tmp_path, processes)
    return torch.load(Path(args[1]) / "result.pt", weights_only=True)


def _maxdiff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[n].float() - b[n].float()).abs().max()) for n in a)


def _run_both(engine: str, tmp: Path, processes: int) -> dict:
    """The full-weight and the LoRA update, one after the other in the same process(es) (one start-up:
    importing torch, transformers and DeepSpeed is most of a run's time); each variant builds its own
    models from its own seeds, so its result equals that of a process running it alone."""
    _launch([engine, str(tmp), "--full-and-lora"], tmp, processes)
    return {v: torch.load(tmp / v / "result.pt", weights_only=True) for v in ("full", "lora")}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The 1-process runs every engine is compared with (full weights, and LoRA)."""
    pytest.importorskip("deepspeed")
    return _run_both("single", tmp_path_factory.mktemp("single"), 1)


@pytest.fixture(scope="module")
def zero3(tmp_path_factory):
    """The 2-process ZeRO-3 runs (full weights, and LoRA), read by the two tests below."""
    pytest.importorskip("deepspeed")
    return _run_both("zero3", tmp_path_factory.mktemp("zero3"), 2)


def _compare(one: dict, two: dict, engine: str) -> dict:
    """Step-by-step and final equality of a 2-process run with the 1-process run; returns the figures."""
    assert (one["processes"], two["processes"], two["engine"]) == (1, 2, engine)
    assert [s["n_pairs"] for s in one["steps"]] == [s["n_pairs"] for s in two["steps"]] == PAIRS_PER_STEP
    for a, b in zip(one["steps"], two["steps"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert b["loss_after"] == pytest.approx(a["loss_after"], rel=1e-6)
    figures = {
        "max_abs_w": _maxdiff(one["final"]["trainable"], two["final"]["trainable"]),
        "max_abs_w_per_step": [
            _maxdiff(a["weights"], b["weights"]) for a, b in zip(one["steps"], two["steps"], strict=True)
        ],
        "max_abs_grad_norm": max(
            abs(a["grad_norm"] - b["grad_norm"]) for a, b in zip(one["steps"], two["steps"], strict=True)
        ),
        "max_abs_reference": _maxdiff(one["final"]["reference"], two["final"]["reference"]),
        "max_abs_adam_state": max(
            _maxdiff(s, two["final"]["optimizer"]["state"][i]) for i, s in one["final"]["optimizer"]["state"].items()
        ),
    }
    print(f"{engine}: {figures}")
    assert max(figures["max_abs_w_per_step"]) < TOL and figures["max_abs_reference"] < TOL
    assert figures["max_abs_grad_norm"] < TOL * max(a["grad_norm"] for a in one["steps"])
    assert figures["max_abs_adam_state"] < TOL
    assert set(two["final"]["optimizer"]["state"]) == set(one["final"]["optimizer"]["state"])
    return figures


def _check_nonfinite(run: dict) -> None:
    """A NaN loss on some pairs (with 2 processes: on rank 1 only) is reported and no weight moves
    (DeepSpeed steps inside its engine: it must skip the step too)."""
    assert run["nan_step"]["nonfinite"] == "non-finite loss (nan)"
    assert run["nan_step"]["moved"] == 0.0


def _check_resume(run: dict) -> None:
    """Step 4 run again from the step-3 checkpoint, by a fresh model with other initial weights."""
    assert _maxdiff(run["resumed"]["trainable"], run["final"]["trainable"]) < 1e-6
    assert _maxdiff(run["resumed"]["reference"], run["final"]["reference"]) < 1e-6
    assert run["resumed_steps"][0]["loss"] == pytest.approx(run["steps"][3]["loss"], rel=1e-6)


def test_single_process_run_learns_and_its_reference_moves(single):
    """The baseline is not trivial: every step lowers its own pairs' loss, the reference of the second
    iteration is the policy after step 1 (not the initial one) and the weights move."""
    run = single["full"]
    assert all(s["loss_after"] < s["loss"] for s in run["steps"])
    assert _maxdiff(run["final"]["reference"], run["steps"][0]["weights"]) == 0.0
    assert _maxdiff(run["steps"][0]["weights"], run["final"]["trainable"]) > 1e-2
    _check_resume(run)
    _check_resume(single["lora"])
    _check_nonfinite(run)
    assert all(".lora_" in n for n in single["lora"]["final"]["trainable"])


# ZeRO-1 runs in the slow suite only: laser's DeepSpeedEngine (laser/training/engines_ds.py) branches on
# stage 3 versus not, and DeepSpeed runs stages 1 and 2 with the same optimizer class
# (DeepSpeedZeroOptimizer, partition_grads=False/True), so ZeRO-2 here covers ZeRO-1's code path.
@pytest.mark.parametrize("engine", ["ddp", "fsdp2", pytest.param("zero1", marks=pytest.mark.slow), "zero2", "zero3"])
def test_two_processes_equal_one_under_every_engine(single, engine, tmp_path, request):
    two = (
        request.getfixturevalue("zero3")["full"]
        if engine == "zero3"
        else _run([engine, str(tmp_path / engine)], tmp_path, 2)
    )
    _compare(single["full"], two, engine)
    _check_resume(two)
    _check_nonfinite(two)


@pytest.mark.parametrize("engine", [pytest.param("fsdp2", marks=pytest.mark.slow), "zero3"])
def test_lora_two_processes_equal_one(single, engine, tmp_path, request):
    """LoRA: only the adapters train; the reference is the adapters as they were at the iteration's start."""
    if engine == "zero3":
        two = request.getfixturevalue("zero3")["lora"]
    else:
        two = _run([engine, str(tmp_path / engine), "--lora"], tmp_path, 2)
    _compare(single["lora"], two, engine)
    _check_resume(two)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "zero2"])
def test_bf16_runs_and_stays_near_fp32(single, engine, tmp_path):
    """bf16 mixed precision through the Accelerate/DeepSpeed config, on CPU. Not equal to fp32 (bf16
    keeps 8 mantissa bits): the losses stay within 1% of the fp32 run's, and resume is exact."""
    two = _run([engine, str(tmp_path / engine), "--bf16"], tmp_path, 2)
    for a, b in zip(single["full"]["steps"], two["steps"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-2) and b["loss"] != a["loss"]
    _check_resume(two)


# ----- refusing what cannot run ----------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA devices Accelerate sets FSDP up")
def test_the_shipped_fsdp_config_on_this_cpu_machine_stops_with_the_reason(tmp_path, tiny_model_dir):
    """`accelerate launch --config_file examples/accelerate/fsdp.yaml ... laser train` on a machine
    without CUDA: Accelerate would quietly train with DDP; laser stops, naming the config's engine."""
    import yaml
    from helpers import write_prompts

    cfg = {
        "policy": {"model": str(tiny_model_dir)},
        "output_dir": str(tmp_path / "out"),
        "data": {"prompts": str(write_prompts(tmp_path / "prompts.jsonl", n=4))},
        "rewards": [{"name": "long", "type": "length"}],
        "selector": {"name": "lints"},
        "train": {"iterations": 1, "batch_size": 4, "n_samples": 2, "max_new_tokens": 4},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "examples/accelerate/fsdp.yaml"),
            "--num_processes",
            "2",
            "--main_process_port",
            "0",
            "-m",
            "laser.cli.main",
            "train",
            "--config",
            str(tmp_path / "run.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert (
        "error: the Accelerate config asks for distributed_type: FSDP, but Accelerate set up MULTI_CPU" in proc.stderr
    )
    assert not (tmp_path / "out" / "log.jsonl").exists()  # no step was trained with another engine


def _acc(kind: str = "MULTI_CPU", processes: int = 2):
    from accelerate.utils import DistributedType

    return SimpleNamespace(distributed_type=DistributedType[kind], device=torch.device("cpu"), num_processes=processes)


@pytest.mark.parametrize("asked", ["FSDP", "DEEPSPEED"])
def test_an_engine_accelerate_did_not_set_up_is_refused(monkeypatch, asked):
    from laser.training.engines import EngineError, check_engine

    monkeypatch.setenv(f"ACCELERATE_USE_{asked}", "true")
    with pytest.raises(EngineError, match=f"distributed_type: {asked}.*set up MULTI_CPU"):
        check_engine(_acc(), SimpleNamespace(grad_clip=1.0))
    monkeypatch.delenv(f"ACCELERATE_USE_{asked}")
    assert check_engine(_acc(), SimpleNamespace(grad_clip=1.0)) == "ddp"


def test_a_deepspeed_config_at_odds_with_the_update_is_refused():
    from laser.training.engines import EngineError, _configure_deepspeed

    train = SimpleNamespace(grad_clip=0.5)
    plugin = SimpleNamespace(
        deepspeed_config={
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "train_micro_batch_size_per_gpu": "auto",
        }
    )
    _configure_deepspeed(plugin, train)
    assert plugin.deepspeed_config == {
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.5,
        "train_micro_batch_size_per_gpu": 1,
    }
    for key, value, match in [
        ("gradient_accumulation_steps", 4, "set it to 1"),
        ("gradient_clipping", 1.0, r"train.grad_clip \(0.5\)"),
    ]:
        bad = SimpleNamespace(deepspeed_config={key: value})
        with pytest.raises(EngineError, match=f"deepspeed_config.{key} is {value}.*{match}"):
            _configure_deepspeed(bad, train)


def test_fsdp1_is_refused_with_the_key_to_change(monkeypatch):
    from laser.training.engines import EngineError, check_engine

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    acc = _acc("FSDP")
    acc.state = SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=1))
    with pytest.raises(EngineError, match="fsdp_version: 2"):
        check_engine(acc, SimpleNamespace(grad_clip=1.0))


@pytest.mark.slow
def test_gpu_check_engines_section_on_cpu(tmp_path):
    """benchmarks/gpu_check.py's ``engines`` section in its --tiny form: FSDP2 and ZeRO-2 forced on one
    CPU process against no engine (on a GPU machine: set up by accelerate launch, on CUDA)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    rec = gpu_check.main(["--tiny", "--in-process", "--sections", "engines", "--out", str(tmp_path)])["engines"]
    assert rec["ok"], rec.get("error")
    for engine in ("fsdp2", "zero2"):
        r = rec["result"][engine]
        assert r["engine_seen"] == engine and r["resume_max_abs_diff"] == 0.0
        assert r["max_abs_weight_diff"] < TOL and r["max_abs_loss_diff"] < 1e-6
