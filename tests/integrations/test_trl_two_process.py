"""The router under two real processes: ``accelerate launch --multi_gpu --num_processes 2`` of
tests/integrations/trl_two_process_run.py (CPU, gloo). Both ranks must hold identical routers after every
round: the same arms, feedback, rewards and selector state, while each rank scored only its own
rows. Slow (two processes importing TRL and training 8 GRPO steps): run with ``pytest -m slow``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from helpers import two_cpu_processes

pytest.importorskip("trl")
pytest.importorskip("accelerate")

SCRIPT = Path(__file__).with_name("trl_two_process_run.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["round", "prompt", "reliability"])
def test_two_ranks_hold_identical_routers(tmp_path, granularity):
    """``reliability``: the label-free router on chat prompts (16 rounds: warm-up, then estimates);
    the ranks gather the groups to decide and each round's probe scores to learn."""
    steps = 16 if granularity == "reliability" else 8
    cmd = [
        *two_cpu_processes(port=free_port()),
        str(SCRIPT),
        str(tmp_path),
        granularity,
        str(steps),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["num_processes"] for r in ranks] == [2, 2] and "MULTI_CPU" in ranks[0]["distributed_type"]
    h0, h1 = ranks[0]["history"], ranks[1]["history"]
    assert len(h0) == steps and h0 == h1  # identical arms, feedback and rewards every round
    assert ranks[0]["selector"] == ranks[1]["selector"]
    if granularity == "reliability":  # probes: every RM scores them, each rank its own rows
        probes = sum(r["probes"] for r in h0)
        assert probes >= 8 and sum(r["votes"][g] for r in h0 for g in r["votes"]) > 0
        assert sum(ranks[0]["rows_scored"]) == 12 * steps + 3 * 4 * probes
        assert [a + b for a, b in zip(ranks[0]["local_rows"], ranks[1]["local_rows"], strict=True)] == ranks[0][
            "rows_scored"
        ]
        assert ranks[0]["reliability"] == ranks[1]["reliability"] and set(ranks[0]["reliability"]) == {"advice", "code"}
        return
    assert ranks[0]["embedder"] == "PolicyEmbedder"
    # 12 rows per round (6 per device), every row scored by exactly one RM, split between the ranks
    assert sum(ranks[0]["rows_scored"]) == 12 * steps
    assert [sum(r["local_rows"]) for r in ranks] == [6 * steps, 6 * steps]
    pairs = zip(ranks[0]["local_rows"], ranks[1]["local_rows"], strict=True)
    assert [a + b for a, b in pairs] == ranks[0]["rows_scored"]
    if granularity == "prompt":  # 3 groups per round, the middle one on both ranks
        assert all(len(r["arms"]) == 3 for r in h0)
