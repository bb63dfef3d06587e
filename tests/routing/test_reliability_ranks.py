"""The reliability strategy on 2 gloo processes holds the same router on every rank, equal to one
process's on the same whole batches (votes gathered in whole-batch order)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("reliability_ranks_script.py")
ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, mode: str, world: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    dist = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(out), mode],
            env={**env, **(dist if world > 1 else {}), "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.parametrize("mode", ["column", "kmeans"])
def test_two_ranks_hold_the_single_process_router(tmp_path, mode):
    pytest.importorskip("torch")
    (one,) = launch(tmp_path / "one", mode, 1)
    r0, r1 = launch(tmp_path / "two", mode, 2)
    assert (one["world"], r0["world"]) == (1, 2)
    assert r0["arms"] == r1["arms"] == one["arms"]
    assert r0["state"] == r1["state"] == one["state"]
    # the work is split, not repeated: the ranks' RM scorings add up to one process's
    assert [a + b for a, b in zip(r0["scored"], r1["scored"], strict=True)] == one["scored"]
    router = json.loads(one["state"]["router"])
    assert sum(len(g["votes"][0]) for g in router["groups"].values()) > 0  # votes were observed
    assert any(g["acc"] is not None for g in router["groups"].values())  # and fitted
    if mode == "kmeans":
        assert set(router["groups"]) == {"c0", "c1"}
