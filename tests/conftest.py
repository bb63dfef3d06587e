"""Shared fixtures: tiny models built in code (no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

torch.set_num_threads(1)  # tests share 2 cores; one thread each is faster and deterministic


def make_tiny_policy(seed: int = 0, hidden: int = 32, layers: int = 1):
    """A randomly initialised character-level Llama policy (left padding for generation)."""
    from laser.policy.model import Policy
    from laser.policy.tiny import make_char_tokenizer, make_tiny_model

    tok = make_char_tokenizer("left")
    return Policy(make_tiny_model(tok, hidden=hidden, layers=layers, heads=2, seed=seed), tok)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny policy saved with save_pretrained, loadable like a Hub model folder."""
    policy = make_tiny_policy()
    folder = tmp_path_factory.mktemp("tiny_model")
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    return folder


def write_prompts(path, n: int = 8):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "prompt": f"{i}+{i % 3}=", "answer": str(i + i % 3)}) + "\n")
    return path
