"""The one command to run on a machine with a GPU: correctness and cost figures, written to DIR.

    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR          # about 5-7 minutes on one H100
    PYTHONPATH=. python benchmarks/gpu_check.py --tiny --out DIR   # the same sections, small, on CPU

Needs no network and no pip: torch (with CUDA), transformers, accelerate, peft and this folder.
Sections, in order (each in its own subprocess with a timeout, so a CUDA error or a hang in one
cannot take the others down; ``--in-process`` runs them in this process instead; the sections
themselves are in benchmarks/gpu_sections.py):

* ``env``: versions, device, bf16 support, memory.
* ``cuda_vs_cpu``: the tiny policy on CPU (float32) and on the GPU (float32 and bfloat16):
  sequence log-probs, DPO + NLL loss, one AdamW update; the largest differences.
* ``offload``: an RM of the ``0.5b`` step_cost size, resident and offloaded: score difference,
  seconds per scoring call each way, seconds per move; the three model-backed RM types on tiny
  models, offloaded against resident.
* ``step_cost``: ``benchmarks/step_cost.py`` at about 0.5B parameters per model, K = 4 RMs,
  bfloat16, with and without offload.
* ``train``: ``laser train`` (bf16 weights, LoRA, an offloaded HF classifier RM among demo RMs)
  for one iteration with a checkpoint per step, resumed for a second iteration, against an
  uninterrupted two-iteration run: arm sequences and final adapter weights compared.
* ``generation``: sampling tokens per second of the 0.5B policy at several batch sizes.
* ``engines``: the policy update under FSDP2 and DeepSpeed ZeRO-2 (one CUDA process, set up by
  ``accelerate launch`` from examples/accelerate/*.yaml) against the same update without an
  engine: weight, loss and gradient-norm differences, checkpoint resume (benchmarks/gpu_engines.py).

After every section DIR/results.json (all figures so far) and DIR/summary.md are rewritten; each
section's output goes to DIR/<section>.log and its record to DIR/section_<section>.json;
step_cost also writes DIR/step_cost.json (after every method) and DIR/step_cost.txt. A global time
budget (``--budget-s``) bounds the run: a section gets at most its own cap and what is left.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
#: section -> its time cap in seconds (GPU run); --tiny halves each
SECTIONS = {
    "env": 60,
    "cuda_vs_cpu": 90,
    "offload": 90,
    "step_cost": 240,
    "train": 150,
    "generation": 60,
    "engines": 180,
}

from gpu_sections import SECTION_FNS, Ctx  # noqa: E402  (benchmarks/ is on the path only now)


# ----- the runner ------------------------------------------------------------------------------
def run_here(name: str, ctx: Ctx) -> dict:
    """Run one section in this process; the record holds its result or its error."""
    t0 = time.perf_counter()
    try:
        rec = {"ok": True, "result": SECTION_FNS[name](ctx)}
    except Exception as exc:  # every section reports its own failure and the run goes on
        rec = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:4000], "traceback": traceback.format_exc()}
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def run_isolated(name: str, ctx: Ctx, timeout: float) -> dict:
    """Run one section in a child process group, killed after ``timeout`` seconds."""
    import signal

    t0, rec_path = time.perf_counter(), ctx.out / f"section_{name}.json"
    rec_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--out", str(ctx.out), "--section", name, *(["--tiny"] if ctx.tiny else [])]
    with open(ctx.out / f"{name}.log", "w") as log:
        child = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the section and any `laser train` it started
            child.wait()
    wall = round(time.perf_counter() - t0, 1)
    if rec_path.exists():
        rec = json.loads(rec_path.read_text())
        return {**rec, "section_s": rec["seconds"], "seconds": wall}  # wall: with the child's start-up
    tail = (ctx.out / f"{name}.log").read_text()[-1500:]
    why = f"timed out after {timeout:.0f} s" if child.returncode == -9 else f"exited with {child.returncode}"
    rec = {"ok": False, "error": f"{why}; log tail: {tail}", "seconds": wall}
    if name == "step_cost" and (ctx.out / "step_cost.json").exists():  # written after every method
        rec["partial"] = json.loads((ctx.out / "step_cost.json").read_text())
    return rec


def _lines(value, key: str = "", depth: int = 0) -> list[str]:
    if isinstance(value, dict) and depth < 3:
        return [x for k, v in value.items() for x in _lines(v, f"{key}.{k}" if key else k, depth + 1)]
    if isinstance(value, float):
        value = f"{value:.4g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return [f"- {key}: {text[:300]}"]


def write_summary(ctx: Ctx, records: dict, started: str) -> None:
    (ctx.out / "results.json").write_text(
        json.dumps({"started": started, "tiny": ctx.tiny, "sections": records}, indent=1, default=str)
    )
    md = [f"# gpu_check {'--tiny ' if ctx.tiny else ''}started {started}", ""]
    for name, rec in records.items():
        md += [f"## {name}: {'ok' if rec['ok'] else 'FAILED'} ({rec.get('seconds', '?')} s)", ""]
        if not rec["ok"]:
            md += ["```", rec["error"][-1500:], "```", ""]
            continue
        if name == "step_cost" and (ctx.out / "step_cost.txt").exists():
            md += ["```", (ctx.out / "step_cost.txt").read_text().rstrip(), "```", ""]
            continue
        md += _lines(rec["result"]) + [""]
    (ctx.out / "summary.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="GPU correctness and cost check (see the module docstring)")
    p.add_argument("--out", required=True, help="folder for results.json, summary.md and logs")
    p.add_argument("--tiny", action="store_true", help="small sizes on CPU (what the test suite runs)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in this order")
    p.add_argument("--budget-s", type=float, default=None, help="whole-run time limit (default 450, tiny 300)")
    p.add_argument("--in-process", action="store_true", help="run sections here instead of in subprocesses")
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)  # child mode: run one, write <name>.json
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1" if a.tiny else "4")
    ctx = Ctx(out, a.tiny, a.in_process)  # in a section child, `laser train` still runs in subprocesses
    if ctx.device == "cpu" and not a.tiny:
        p.error("no CUDA device here: run with --tiny for the CPU version of the check")
    if a.section:
        rec = run_here(a.section, ctx)
        (out / f"section_{a.section}.json").write_text(json.dumps(rec, indent=1, default=str))
        return rec
    budget = a.budget_s or (300.0 if a.tiny else 450.0)
    start, started, records = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S %Z"), {}
    for name in [s for s in a.sections.split(",") if s]:
        left = budget - (time.perf_counter() - start)
        if left < 5:
            records[name] = {"ok": False, "error": f"skipped: the {budget:.0f} s budget is spent", "seconds": 0}
        else:
            cap = min(SECTIONS[name] / (2 if a.tiny else 1), left)
            records[name] = run_here(name, ctx) if a.in_process else run_isolated(name, ctx, cap)
        print(
            f"[gpu_check] {name}: {'ok' if records[name]['ok'] else 'FAILED'} ({records[name]['seconds']} s)",
            flush=True,
        )
        write_summary(ctx, records, started)
    return records


if __name__ == "__main__":
    main()
