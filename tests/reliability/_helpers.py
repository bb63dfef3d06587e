"""Shared pieces of the reliability suite: tiny runs, state hashes, independent checkpoint checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from laser.config import load_config
from laser.rewards.rules import LengthRM, RegexRM
from laser.tasks.base import Example
from laser.training.loop import Trainer

EXAMPLES = [Example(id=f"p{i}", prompt=f"{i}+{i % 7}=") for i in range(20)]  # 20 prompts, batch 4: 5 steps


def rms():
    return [RegexRM("ones", "1"), LengthRM("long")]


def make_cfg(out, selector: str = "linucb", iterations: int = 4, every: int = 1, seed: int = 3, rewards=None, **train):
    """A tiny run: 20 prompts, batch 4 (5 steps per iteration), 4 samples, 6 new tokens."""
    specs = rewards or [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}]
    tr = {
        "iterations": iterations,
        "batch_size": 4,
        "n_samples": 4,
        "max_new_tokens": 6,
        "lr": 1e-2,
        "pairs_per_prompt": 2,
        **train,
    }
    sel = {"name": selector, **({"arm": specs[0]["name"]} if selector == "fixed" else {})}
    return load_config(
        data={
            "output_dir": str(out),
            "seed": seed,
            "rewards": specs,
            "selector": sel,
            "train": tr,
            "checkpoint": {"every": every, "keep_last": 2},
        },
        require_data=False,
    )


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in open(Path(out) / "log.jsonl")]


def tensors_hash(named: dict) -> str:
    """sha256 over name, dtype, shape and bytes of every array, in name order."""
    h = hashlib.sha256()
    for name in sorted(named):
        a = named[name]
        a = a.detach().cpu().contiguous().numpy() if isinstance(a, torch.Tensor) else np.ascontiguousarray(a)
        h.update(f"{name}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def checkpoint_hash(folder: Path) -> str:
    """The run's final state hash: trainable weights + selector state of a checkpoint folder."""
    weights = load_file(str(folder / "trainable.safetensors"))
    with np.load(folder / "selector.npz", allow_pickle=False) as z:
        selector = {f"selector.{k}": z[k] for k in z.files}
    return tensors_hash({**weights, **selector})


def trainer_hash(tr: Trainer) -> str:
    return tensors_hash({**tr.params, **{f"selector.{k}": v for k, v in tr.selector.state_dict().items()}})


def independent_verify(folder: Path) -> str | None:
    """Check a checkpoint without laser's own verify(): every file hashed against the manifest, the
    manifest covering every file, the state loadable, and arm counts summing to the steps done.
    Returns None when sound, else the first problem."""
    manifest = json.loads((folder / "manifest.json").read_text())
    on_disk = {p.name for p in folder.iterdir()} - {"manifest.json"}
    if on_disk != set(manifest["files"]):
        return f"files {sorted(on_disk)} vs manifest {sorted(manifest['files'])}"
    for name, info in manifest["files"].items():
        data = (folder / name).read_bytes()
        if len(data) != info["size"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
            return f"{name} does not match the manifest"
    state = json.loads((folder / "state.json").read_text())
    load_file(str(folder / "trainable.safetensors"))
    torch.load(folder / "optimizer.pt", weights_only=True)
    if (folder / "selector.npz").exists():
        with np.load(folder / "selector.npz", allow_pickle=False) as z:
            if int(z["counts"].sum()) != state["global_step"]:
                return f"arm counts sum {int(z['counts'].sum())} != global step {state['global_step']}"
    if manifest["global_step"] != state["global_step"]:
        return "manifest and state disagree on the step"
    return None
