"""Shared fixtures: tiny models built in code (no downloads)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_policy

torch.set_num_threads(1)  # tests share 2 cores; one thread each is faster and deterministic


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny policy saved with save_pretrained, loadable like a Hub model folder."""
    policy = make_tiny_policy()
    folder = tmp_path_factory.mktemp("tiny_model")
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    return folder
