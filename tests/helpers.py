"""Helpers shared by the tests (import with ``from helpers import ...``; tests/ is on sys.path under
pytest, and scripts run from tests/ put it there themselves). Fixtures stay in conftest.py."""

from __future__ import annotations

import json


def make_tiny_policy(seed: int = 0, hidden: int = 32, layers: int = 1):
    """A randomly initialised character-level Llama policy (left padding for generation)."""
    from laser.bench.policy import make_char_tokenizer, make_tiny_model
    from laser.policy.model import Policy

    tok = make_char_tokenizer("left")
    return Policy(make_tiny_model(tok, hidden=hidden, layers=layers, heads=2, seed=seed), tok)


def write_prompts(path, n: int = 8):
    """``n`` arithmetic prompts with gold answers as a JSONL prompt file (``p0``: "0+0=", answer "0")."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "prompt": f"{i}+{i % 3}=", "answer": str(i + i % 3)}) + "\n")
    return path
