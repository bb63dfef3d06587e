"""examples/trl_grpo.py end to end on a few rounds (slow: it trains or loads the tiny SFT policy and
runs GRPO twice)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("trl")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_grpo.py"


@pytest.mark.slow
def test_example_routes_every_completion_once_and_plain_trl_scores_it_k_times(capsys):
    """8 rounds x 2 prompts x 4 completions = 64 completions: the router scores each once, the
    plain set-up once per RM (5 x 64 = 320)."""
    spec = importlib.util.spec_from_file_location("trl_grpo_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--rounds", "8", "--prompts", "2", "--generations", "4"])
    assert out["router_rows"] == 64 and out["plain_rows"] == 320
    assert sum(sum(shares.values()) for shares in out["table"].values()) == pytest.approx(len(out["table"]))
    assert "selection per domain" in capsys.readouterr().out
