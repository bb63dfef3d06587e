"""benchmarks/gpu_check.py in its ``--tiny`` CPU mode: every section runs and reports, failures and
timeouts are recorded instead of ending the run, and the figures that are exact on CPU are exact.

The fast tests run the sections in this process (``--in-process``; step_cost with two methods);
the slow test runs the whole command as a user does, each section in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402
import gpu_sections  # noqa: E402

STEP_COST_METHODS = [
    "linucb",
    "score_ensemble",
    "agreement_ensemble",
    "linucb/offload",
    "score_ensemble/offload",
    "agreement_ensemble/offload",
]


SMOKE = ["cuda_vs_cpu", "offload", "train", "generation"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    return out, gpu_check.main(["--tiny", "--in-process", "--out", str(out), "--sections", ",".join(SMOKE)])


def test_every_section_runs_and_is_written(tiny_run):
    out, records = tiny_run
    assert list(records) == SMOKE
    failed = {k: v.get("error") for k, v in records.items() if not v["ok"]}
    assert not failed, failed
    saved = json.loads((out / "results.json").read_text())
    assert saved["tiny"] is True and list(saved["sections"]) == SMOKE
    summary = (out / "summary.md").read_text()
    assert all(f"## {name}: ok" in summary for name in SMOKE)


def test_cpu_against_cpu_is_exact_and_bf16_is_close(tiny_run):
    """--tiny compares CPU with CPU: same kernels on the same inputs give bit-equal float32 results.
    bfloat16 (8 mantissa bits, relative step 2^-8 = 0.4%) moves the log-probs, by little."""
    res = tiny_run[1]["cuda_vs_cpu"]["result"]
    assert res["compared"] == "cpu float32 vs cpu"
    assert all(v == 0.0 for k, v in res["float32"].items() if k.startswith("max_abs"))
    bf16 = res["bfloat16"]
    assert 0 < bf16["max_abs_logp_diff"] < 0.05 * bf16["logp_scale"]


def test_offload_and_resume_figures(tiny_run):
    records = tiny_run[1]
    off = records["offload"]["result"]
    assert off["max_abs_score_diff"] == 0.0 and set(off["tiny_rm_types"].values()) == {0.0}
    train = records["train"]["result"]
    assert train["steps"] == {"resumed": [1, 2, 3, 4], "whole": [1, 2, 3, 4]}
    assert train["same_arms"] and train["max_abs_adapter_diff"] == 0.0  # CPU resume is bit-identical
    assert records["generation"]["result"]["batch_4_tokens_per_s"] > 0


def check_step_cost(res: dict, methods: list[str]) -> None:
    assert res["k"] == 4 and res["device"].startswith("cpu")
    assert list(res["methods"]) == methods
    for name, m in res["methods"].items():
        assert set(m["phases"]) == {"context", "sample", "score", "update", "other"}
        assert m["step_s"] == pytest.approx(sum(m["phases"].values()), abs=1e-3)  # one measured step
        # 4 prompts x 4 samples = 16 responses a step, scored by one RM or by all 4
        assert m["responses_scored_per_step"] == 16 * (1 if name.startswith("linucb") else 4)
    assert set(res["ratios"]) == set(methods) - {"linucb", "linucb/offload"}


def test_step_cost_json_has_the_promised_schema(tmp_path):
    import step_cost

    path = tmp_path / "cost.json"
    step_cost.main(
        [
            "--size",
            "tiny",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--warmup",
            "1",
            "--memory",
            "none",
            "--offload",
            "on",
            "--methods",
            "linucb,score_ensemble",
            "--json",
            str(path),
        ]
    )
    check_step_cost(json.loads(path.read_text()), ["linucb/offload", "score_ensemble/offload"])


def test_a_failing_section_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("CUDA error: device-side assert triggered (injected)")

    monkeypatch.setitem(gpu_sections.SECTION_FNS, "env", broken)
    records = gpu_check.main(["--tiny", "--in-process", "--out", str(tmp_path), "--sections", "env,generation"])
    assert not records["env"]["ok"] and "device-side assert triggered (injected)" in records["env"]["error"]
    assert records["generation"]["ok"]
    assert "## env: FAILED" in (tmp_path / "summary.md").read_text()


def test_a_spent_budget_skips_the_rest(tmp_path):
    records = gpu_check.main(
        ["--tiny", "--in-process", "--out", str(tmp_path), "--sections", "env,generation", "--budget-s", "1"]
    )
    assert all(not r["ok"] and "budget is spent" in r["error"] for r in records.values())


def test_a_section_past_its_time_is_killed_and_reported(tmp_path):
    ctx = gpu_sections.Ctx(tmp_path, tiny=True, in_process=False)
    rec = gpu_check.run_isolated("env", ctx, timeout=0.2)  # the child cannot even import torch by then
    assert not rec["ok"] and rec["error"].startswith("timed out after 0 s")


@pytest.mark.slow
def test_the_tiny_command_as_a_user_runs_it(tmp_path):
    """Each section in its own process, ``laser train`` through the CLI in subprocesses."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert {k: v["ok"] for k, v in saved.items()} == dict.fromkeys(gpu_check.SECTIONS, True)
    assert saved["train"]["result"]["same_arms"] and saved["train"]["result"]["max_abs_adapter_diff"] == 0.0
    check_step_cost(json.loads((tmp_path / "step_cost.json").read_text()), STEP_COST_METHODS)
