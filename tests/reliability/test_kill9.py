"""Item 1b: `laser train` in a subprocess, SIGKILLed at 10 seeded moments (some inside a checkpoint
write), then resumed: every run ends with the uninterrupted run's final state hash, and no broken
checkpoint is ever chosen for resume.

Also the checkpoint files themselves: corrupt, truncated, half-written and half-replaced
checkpoints are skipped (or kept) as documented, and a log line cut by a kill does not block resume.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_prompts

from laser.cli.main import main
from laser.routing import checkpoint
from laser.routing.checkpoint import find_latest, verify, write_checkpoint
from laser.training.checkpoint import REQUIRED_FILES

from ._helpers import checkpoint_hash, independent_verify, read_log

pytestmark = pytest.mark.reliability
ITEM = "1 crash/resume"
REPO = Path(__file__).resolve().parents[2]
WRAPPER = Path(__file__).with_name("_train_paused.py")
TOTAL = 8  # 8 prompts, batch 4, 4 iterations
REQUIRED = REQUIRED_FILES + ("selector.npz",)
# where each of the 10 kills aims: a random moment of training, inside the writing of a checkpoint's
# files, or between its manifest and its rename; the step, file count and delay are drawn from a seed
KINDS = ["step", "files", "step", "rename", "step", "files", "step", "files", "step", "rename"]
SEED = 20241
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("kill9")
    cfg = {
        "seed": 5,
        "output_dir": str(root / "ref"),
        "policy": {"model": str(tiny_model_dir)},
        "data": {"prompts": str(write_prompts(root / "prompts.jsonl", n=8))},
        "rewards": [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}],
        "selector": {"name": "lints"},
        "train": {
            "iterations": 4,
            "batch_size": 4,
            "n_samples": 4,
            "max_new_tokens": 6,
            "lr": 1e-2,
            "pairs_per_prompt": 2,
        },
        "checkpoint": {"every": 1, "keep_last": 2},
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path)]) == 0
    ref_folder, _ = find_latest(root / "ref" / "checkpoints")
    ref = {"hash": checkpoint_hash(ref_folder), "arms": [r["arm"] for r in read_log(root / "ref")]}
    assert len(ref["arms"]) == TOTAL
    return root, path, ref


def test_checkpointing_never_gives_the_same_final_hash(run_setup, figures):
    root, path, ref = run_setup
    out = root / "never"
    assert main(["train", "--config", str(path), f"output_dir={out}", "checkpoint.every=0"]) == 0
    folders = sorted((out / "checkpoints").glob("ckpt-*"))
    assert [f.name for f in folders] == [f"ckpt-{TOTAL:08d}"]  # only the end-of-run checkpoint
    assert checkpoint_hash(folders[0]) == ref["hash"]
    figures.set(ITEM, "CLI run, checkpoint every step vs never: final hash", f"identical ({ref['hash'][:12]})")


def plan(i: int) -> dict:
    """Kill i's seeded moment: after `target` log records plus `delay` s ("step"), or inside the
    checkpoint write of step `target`: after `files` files ("files") or before the rename ("rename")."""
    rng = np.random.default_rng([SEED, i])
    kind = KINDS[i]
    if kind == "step":
        return {"kind": kind, "target": int(rng.integers(1, TOTAL - 1)), "delay": float(rng.uniform(0.0, 0.15))}
    return {
        "kind": kind,
        "target": int(rng.integers(2, TOTAL + 1)),
        "delay": 0.0,
        "files": int(rng.integers(1, 8)) if kind == "files" else None,
    }


PLAIN = (0, 2, 4)  # kills of a fresh `python -m laser.cli.main train`; the others are forked (see below)


class Run:
    """A training process to kill: a plain subprocess, or a child forked by the fork server."""

    def __init__(self, popen=None, pid=None):
        self.popen, self.pid = popen, popen.pid if popen is not None else pid

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def kill_and_wait(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        if self.popen is not None:
            assert self.popen.wait(timeout=30) == -signal.SIGKILL
            return
        deadline = time.monotonic() + 30
        while self.alive():
            assert time.monotonic() < deadline, f"pid {self.pid} survived SIGKILL"
            time.sleep(0.005)


def wait_and_kill(run: Run, out: Path, p: dict) -> bool:
    """Wait for the planned moment and SIGKILL; returns whether a checkpoint write was interrupted."""
    ck, target = out / "checkpoints", p["target"]

    def ready() -> bool:
        if p["kind"] == "step":
            log = out / "log.jsonl"
            return log.exists() and log.read_text().count("\n") >= target
        tmps = list(ck.glob(f"{checkpoint.TMP_PREFIX}{target:08d}-*"))
        if not tmps:
            return False
        names = {f.name for f in tmps[0].iterdir()}
        return checkpoint.MANIFEST in names if p["kind"] == "rename" else len(names) >= p["files"]

    deadline = time.monotonic() + 180
    while not ready():
        assert run.alive(), f"the run ended before the kill {p}; see {out}.stderr"
        assert time.monotonic() < deadline, f"the kill moment never came {p}"
        time.sleep(0.005)
    time.sleep(p["delay"])
    assert run.alive(), f"the run ended before the kill {p}"
    run.kill_and_wait()
    return bool(list(ck.glob(f"{checkpoint.TMP_PREFIX}*")))


class ForkServer:
    """tests/reliability/_train_paused.py --fork-server: forks `laser train` children on demand."""

    def __init__(self, env: dict):
        self.proc = subprocess.Popen(
            [sys.executable, str(WRAPPER), "--fork-server"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lock = threading.Lock()

    def start(self, argv: list[str], env: dict, stderr: Path) -> Run:
        with self.lock:
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "stderr": str(stderr)}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"fork server answered {line!r}"
        return Run(pid=int(line))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def killed_run(server: ForkServer, path: Path, out: Path, i: int) -> dict:
    """Start `laser train` for kill i, SIGKILL it at its planned moment; returns the plan and outcome."""
    p = plan(i)
    env = {"LASER_KILLTEST_STEP": str(p["target"]), "LASER_KILLTEST_PAUSE": "0.15", "LASER_KILLTEST_WHERE": p["kind"]}
    argv = ["train", "--config", str(path), f"output_dir={out}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    err = out.parent / f"{out.name}.stderr"
    if i in PLAIN:
        with open(err, "w") as f:
            run = Run(
                subprocess.Popen(
                    [sys.executable, "-m", "laser.cli.main", *argv],
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=f,
                    env={**os.environ, **ENV},
                )
            )
    else:  # the same main(argv) in a child forked from a process that has done the imports
        run = server.start(argv, env, err)
    try:
        p["in_write"] = wait_and_kill(run, out, p)
    except BaseException:
        if run.alive():
            os.kill(run.pid, signal.SIGKILL)
        raise
    p["process"] = "python -m laser.cli.main" if i in PLAIN else "forked main()"
    return p


@pytest.fixture(scope="module")
def kills(run_setup):
    """The 10 killed runs, two at a time (each kill is timed by its own run's files, so running them
    side by side changes no kill's landing place)."""
    from concurrent.futures import ThreadPoolExecutor

    root, path, _ = run_setup
    server = ForkServer({**os.environ, **ENV})
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(killed_run, server, path, root / f"kill{i}", i) for i in range(10)]
    finally:
        server.close()
    return [f.result() if f.exception() is None else f.exception() for f in futures]


@pytest.mark.parametrize("i", range(10))
def test_sigkill_then_resume_ends_with_the_uninterrupted_hash(run_setup, kills, figures, i):
    root, path, ref = run_setup
    out, p = root / f"kill{i}", kills[i]
    with figures.case(ITEM, "SIGKILL at a seeded moment, --resume: final hash = uninterrupted run's"):
        if isinstance(p, BaseException):
            raise p
        figures.count(
            ITEM,
            "kills of a fresh `python -m laser.cli.main train` (others: forked main())",
            p["process"].startswith("python"),
        )
        figures.count(ITEM, "kills that landed inside a checkpoint write", p["in_write"])
        assert p["in_write"] or p["kind"] == "step"
        # what resume will choose: the newest checkpoint whose manifest verifies
        chosen, skipped = find_latest(out / "checkpoints", REQUIRED)
        assert not list((out / "checkpoints").glob(f"{checkpoint.TMP_PREFIX}*"))  # leftovers removed
        figures.count(ITEM, "broken checkpoints skipped by resume", len(skipped))
        with figures.case(ITEM, "checkpoint chosen after a kill verifies independently"):
            assert chosen is not None, p
            assert independent_verify(chosen) is None
            step = json.loads((chosen / "state.json").read_text())["global_step"]
            if p["kind"] != "step":
                assert step == p["target"] - 1  # the interrupted write is never used
            newer = [f for f in (out / "checkpoints").glob("ckpt-*") if f.name > chosen.name]
            assert sorted(newer) == sorted(f for f, _ in skipped)
        assert main(["train", "--config", str(path), f"output_dir={out}", "--resume"]) == 0
        final, _ = find_latest(out / "checkpoints", REQUIRED)
        assert independent_verify(final) is None
        assert checkpoint_hash(final) == ref["hash"], p
        log = read_log(out)
        assert [r["global_step"] for r in log] == list(range(1, TOTAL + 1))
        assert [r["arm"] for r in log] == ref["arms"]


# ---- the checkpoint files themselves ---------------------------------------------------------------


def write_steps(root: Path, steps, keep_last: int = 5) -> None:
    for s in steps:
        write_checkpoint(
            root,
            s,
            {
                "a.json": lambda p, s=s: p.write_text(json.dumps({"step": s})),
                "b.bin": lambda p, s=s: p.write_bytes(bytes(range(256)) * s),
            },
            keep_last,
        )


def corrupt(folder: Path, how: str) -> None:
    if how == "bit flip":
        data = bytearray((folder / "b.bin").read_bytes())
        data[100] ^= 1
        (folder / "b.bin").write_bytes(bytes(data))
    elif how == "truncated file":
        (folder / "b.bin").write_bytes((folder / "b.bin").read_bytes()[:-7])
    elif how == "missing file":
        (folder / "a.json").unlink()
    elif how == "missing manifest":
        (folder / "manifest.json").unlink()
    elif how == "empty manifest":
        (folder / "manifest.json").write_text("{}")
    elif how == "manifest of another step":
        shutil.copy(folder.with_name("ckpt-00000002") / "manifest.json", folder / "manifest.json")


@pytest.mark.parametrize(
    "how",
    ["bit flip", "truncated file", "missing file", "missing manifest", "empty manifest", "manifest of another step"],
)
def test_a_broken_newest_checkpoint_is_skipped_and_reported(tmp_path, figures, how):
    with figures.case(ITEM, "corrupted newest checkpoint skipped, previous one chosen"):
        write_steps(tmp_path, [1, 2, 3])
        (tmp_path / f"{checkpoint.TMP_PREFIX}00000004-999").mkdir()  # a write killed before its rename
        corrupt(tmp_path / "ckpt-00000003", how)
        chosen, skipped = find_latest(tmp_path)
        assert chosen == tmp_path / "ckpt-00000002" and verify(chosen) is None
        assert [f.name for f, _ in skipped] == ["ckpt-00000003"] and skipped[0][1]
        assert not list(tmp_path.glob(f"{checkpoint.TMP_PREFIX}*"))


def test_required_files_are_checked(tmp_path):
    write_steps(tmp_path, [1])
    assert find_latest(tmp_path, ["a.json"])[0] is not None
    chosen, skipped = find_latest(tmp_path, ["a.json", "state.json"])
    assert chosen is None and "manifest lacks state.json" in skipped[0][1]


def test_rewriting_a_step_killed_between_the_renames_keeps_a_complete_copy(tmp_path, monkeypatch, figures):
    """keep_last=1 and the end-of-run save rewrites the last step's checkpoint: the old copy is moved
    aside, not deleted, until the new one is in place. The kill is simulated by failing the rename
    of the new folder."""
    write_steps(tmp_path, [1, 2], keep_last=1)
    real = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(checkpoint.TMP_PREFIX):
            raise KeyboardInterrupt("killed between the renames")
        return real(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        write_steps(tmp_path, [2], keep_last=1)
    monkeypatch.setattr(checkpoint.os, "rename", real)
    chosen, _ = find_latest(tmp_path)
    assert chosen is not None and chosen.name == "ckpt-00000002.replaced" and verify(chosen) is None
    write_steps(tmp_path, [3], keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000003"]
    figures.set(ITEM, "kill between the renames of a step's re-write (keep_last=1)", "old copy kept, resumable")


def test_a_log_line_cut_by_a_kill_does_not_block_resume(tmp_path):
    from laser.training.checkpoint import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"global_step": s}) + "\n" for s in (1, 2, 3)) + '{"global_step": 4, "lo')
    truncate_log(log, 2)
    assert [json.loads(x)["global_step"] for x in log.read_text().splitlines()] == [1, 2]
    log.write_text('{"global_step": 1}\n{"glo\n{"global_step": 3}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: log record is not valid JSON"):
        truncate_log(log, 3)


def test_a_crash_in_the_first_checkpoint_write_leaves_no_duplicate_log_records(tmp_path, monkeypatch):
    """Step 1 is logged, then its checkpoint write dies: resume finds no checkpoint and starts over,
    so the log must start over too (each step logged once)."""
    from helpers import make_tiny_policy

    from laser.training import checkpoint as trainer_checkpoint
    from laser.training.loop import Trainer

    from ._helpers import EXAMPLES, make_cfg, rms

    def dies(*a, **k):
        raise KeyboardInterrupt("killed inside the first checkpoint write")

    monkeypatch.setattr(trainer_checkpoint, "write_checkpoint", dies)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_cfg(tmp_path, iterations=1), make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    assert [r["global_step"] for r in read_log(tmp_path)] == [1]
    monkeypatch.undo()
    Trainer(make_cfg(tmp_path, iterations=1), make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    assert [r["global_step"] for r in read_log(tmp_path)] == [1, 2, 3, 4, 5]
