"""Checkpoint files: what a trainer checkpoint holds, written and read back.

This module only writes and reads files: what goes in is ``Trainer.state_dict()``, what comes
out is handed to ``Trainer.load_state_dict()``. Contents: trainable weights (all weights, or
only the LoRA adapters), the iteration's frozen reference weights, optimizer state, torch RNG
states, the strategy's and the normaliser's state (flat numpy arrays, no pickle), data position
and counters, and the resolved config. Saving and loading consume no randomness, so
checkpointing never changes the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from laser.routing.checkpoint import find_latest, write_checkpoint

log = logging.getLogger("laser")


REQUIRED_FILES = (
    "trainable.safetensors",
    "reference.safetensors",
    "optimizer.pt",
    "rng.pt",
    "normalizer.npz",
    "state.json",
    "config.json",
)


class ResumeError(RuntimeError):
    """The checkpoint does not belong to this run's set-up (other RMs, other model shape)."""


def model_signature(params: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {n: list(getattr(p, "ds_shape", p.shape)) for n, p in params.items()}  # ZeRO-3: the full shape


def _tensors(d: dict) -> dict:
    return {n: t.detach().to("cpu").contiguous() for n, t in d.items()}


def save(root: Path, step: int, sd: dict, keep_last: int) -> Path:
    """Write a trainer's :meth:`~laser.training.loop.Trainer.state_dict` as checkpoint ``step`` under ``root``."""
    writers = {
        "trainable.safetensors": lambda p: save_file(_tensors(sd["trainable"]), str(p)),
        "reference.safetensors": lambda p: save_file(_tensors(sd["reference"]), str(p)),
        "optimizer.pt": lambda p: torch.save(sd["optimizer"], p),
        "rng.pt": lambda p: torch.save(sd["rng"], p),
        "normalizer.npz": lambda p: _savez(p, sd["normalizer"]),
        "state.json": lambda p: p.write_text(json.dumps(sd["counters"], indent=1)),
        "config.json": lambda p: p.write_text(json.dumps(dataclasses.asdict(sd["config"]), indent=1)),
    }
    if sd.get("strategy") is not None:
        writers["selector.npz"] = lambda p: _savez(p, sd["strategy"])
    return write_checkpoint(Path(root), step, writers, keep_last)


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object keeps np.savez from appending ".npz"
        np.savez(f, **arrays)


def _loadz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load(folder: Path) -> dict:
    """Read a checkpoint folder back into the shape of ``Trainer.state_dict()`` (config as a dict)."""
    folder = Path(folder)
    selector = folder / "selector.npz"
    return {
        "trainable": load_file(str(folder / "trainable.safetensors")),
        "reference": load_file(str(folder / "reference.safetensors")),
        "optimizer": torch.load(folder / "optimizer.pt", weights_only=True),
        "rng": torch.load(folder / "rng.pt", weights_only=True),
        "normalizer": _loadz(folder / "normalizer.npz"),
        "strategy": _loadz(selector) if selector.exists() else None,
        "counters": json.loads((folder / "state.json").read_text()),
        "config": json.loads((folder / "config.json").read_text()),
    }


def load_latest(root: Path, with_strategy: bool) -> tuple[dict | None, Path | None]:
    """The newest checkpoint under ``root`` whose manifest verifies, read by :func:`load`; (None, None) if none."""
    required = REQUIRED_FILES + (("selector.npz",) if with_strategy else ())
    folder, skipped = find_latest(Path(root), required)
    for bad, reason in skipped:
        log.warning("skipping broken checkpoint %s: %s", bad, reason)
    return (None, None) if folder is None else (load(folder), folder)


def check_compatible(state: dict, rm_names: list[str], strategy: str, params: dict, out: Path) -> None:
    """Refuse to resume into a different set of RMs, selector or model shape.

    Raises:
        ResumeError: naming every difference.
    """
    problems = []
    if state["rm_names"] != rm_names:
        problems.append(f"reward models {state['rm_names']} in the checkpoint, {rm_names} configured")
    if state.get("selector") != strategy:
        problems.append(f"selector {state.get('selector')!r} in the checkpoint, {strategy!r} configured")
    sig = model_signature(params)
    if state["model_signature"] != sig:
        diff = [n for n in set(sig) | set(state["model_signature"]) if sig.get(n) != state["model_signature"].get(n)][
            :3
        ]
        problems.append(f"model shape differs from the checkpoint's (e.g. {', '.join(sorted(diff))})")
    if problems:
        raise ResumeError(f"cannot resume from {Path(out) / 'checkpoints'}: " + "; ".join(problems))


def check_resume_config(folder: str | Path, cfg) -> list[str]:
    """Problems resuming run config ``cfg`` from checkpoint ``folder``, found without loading a model.

    Compares what the checkpoint was trained with (its ``state.json`` and ``config.json``) with
    the configured reward models (``rewards``, by name and order), ``selector.name``,
    ``policy.model`` and ``policy.lora``. The model's parameter shapes are compared again after
    it loads (:func:`check_compatible`).

    Returns:
        ``dotted.key: message`` lines, empty when the run may resume.
    """
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    saved = json.loads((folder / "config.json").read_text())
    names = [spec.get("name") for spec in cfg.rewards if isinstance(spec, dict)]
    problems = []
    if state["rm_names"] != names:
        problems.append(
            f"rewards: the checkpoint {folder} was trained with reward models {state['rm_names']}, "
            f"the config lists {names}"
        )
    if state.get("selector") != cfg.selector.name:
        problems.append(
            f"selector.name: the checkpoint {folder} was trained with {state.get('selector')!r}, "
            f"the config says {cfg.selector.name!r}"
        )
    policy = saved.get("policy", {})
    if policy.get("model") != cfg.policy.model:
        problems.append(
            f"policy.model: the checkpoint {folder} was trained from {policy.get('model')!r}, "
            f"the config says {cfg.policy.model!r}"
        )
    if policy.get("lora") != dataclasses.asdict(cfg.policy.lora):
        problems.append(f"policy.lora: differs from the checkpoint {folder}'s ({policy.get('lora')})")
    return problems


def truncate_log(path: Path, global_step: int) -> None:
    """Drop log records of steps after the checkpoint (they will be run again).

    A last line cut short by a kill is dropped too; the file is replaced atomically so a kill
    during the rewrite leaves either the old or the new log.
    """
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # the write of the last record was interrupted
                break
            raise ValueError(f"{path}:{i + 1}: log record is not valid JSON") from None
        if record["global_step"] <= global_step:
            keep.append(line)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in keep))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
