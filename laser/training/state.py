"""What a trainer checkpoint holds, and how a run resumes from it.

Contents: trainable weights (all weights, or only the LoRA adapters), the iteration's frozen
reference weights, optimizer state, torch RNG states, selector and normaliser state (flat
numpy arrays, no pickle), data position and counters, and the resolved config. Saving and
loading consume no randomness, so checkpointing never changes the run.
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

from laser.training.checkpoint import find_latest, write_checkpoint

log = logging.getLogger("laser")


REQUIRED_FILES = ("trainable.safetensors", "reference.safetensors", "optimizer.pt", "rng.pt",
                  "normalizer.npz", "state.json", "config.json")


class ResumeError(RuntimeError):
    """The checkpoint does not belong to this run's set-up (other RMs, other model shape)."""


def required_files(tr) -> tuple[str, ...]:
    """Files a checkpoint of trainer ``tr`` must hold to be resumed from."""
    return REQUIRED_FILES + (("selector.npz",) if tr.selector is not None else ())


def model_signature(params: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {n: list(p.shape) for n, p in params.items()}


def _state_json(tr) -> dict:
    return {
        "iteration": tr.iteration, "step_in_iter": tr.step_in_iter, "global_step": tr.global_step,
        "skipped_steps": tr.skipped_steps, "skipped_prompts": tr.skipped_prompts,
        "rm_names": tr.pool.names, "rm_calls": tr.pool.calls.tolist(), "rm_down": sorted(tr.pool.down),
        "rm_errors": {str(k): v for k, v in tr.pool.last_errors.items()},
        "model_signature": model_signature(tr.params), "selector": tr.cfg.selector.name,
    }


def save(tr) -> Path | None:
    """Write a checkpoint of trainer ``tr`` (main process only; all processes synchronise)."""
    tr.acc.wait_for_everyone()
    folder = None
    if tr.acc.is_main_process:
        def tensors(d):
            return {n: t.detach().to("cpu").contiguous() for n, t in d.items()}

        writers = {
            "trainable.safetensors": lambda p: save_file(tensors(tr.params), str(p)),
            "reference.safetensors": lambda p: save_file(tensors(tr.ref_state), str(p)),
            "optimizer.pt": lambda p: torch.save(tr.optimizer.state_dict(), p),
            "rng.pt": lambda p: torch.save({"cpu": torch.get_rng_state(),
                                            "cuda": torch.cuda.get_rng_state_all()
                                            if torch.cuda.is_available() else []}, p),
            "normalizer.npz": lambda p: _savez(p, tr.normalizer.state_dict()),
            "state.json": lambda p: p.write_text(json.dumps(_state_json(tr), indent=1)),
            "config.json": lambda p: p.write_text(json.dumps(dataclasses.asdict(tr.cfg), indent=1)),
        }
        if tr.selector is not None:
            writers["selector.npz"] = lambda p: _savez(p, tr.selector.state_dict())
        folder = write_checkpoint(tr.out / "checkpoints", tr.global_step, writers, tr.cfg.checkpoint.keep_last)
    tr.acc.wait_for_everyone()
    return folder


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object keeps np.savez from appending ".npz"
        np.savez(f, **arrays)


def _loadz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def maybe_resume(tr) -> bool:
    """Restore trainer ``tr`` from the newest verified checkpoint, if any. Returns whether it did."""
    folder, skipped = find_latest(tr.out / "checkpoints", required_files(tr))
    for bad, reason in skipped:
        log.warning("skipping broken checkpoint %s: %s", bad, reason)
    if folder is None:  # starting over: records of steps never checkpointed go too
        if tr.acc.is_main_process:
            _truncate_log(tr.out / "log.jsonl", 0)
        return False
    state = json.loads((folder / "state.json").read_text())
    check_compatible(state, tr)
    with torch.no_grad():
        for name, t in load_file(str(folder / "trainable.safetensors")).items():
            tr.params[name].copy_(t)
    tr.ref_state = {n: t.to(tr.params[n].device) for n, t in load_file(str(folder / "reference.safetensors")).items()}
    tr.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    tr.normalizer.load_state_dict(_loadz(folder / "normalizer.npz"))
    if tr.selector is not None:
        tr.selector.load_state_dict(_loadz(folder / "selector.npz"))
    tr.iteration, tr.step_in_iter = state["iteration"], state["step_in_iter"]
    tr.global_step, tr.skipped_steps = state["global_step"], state["skipped_steps"]
    tr.skipped_prompts = state["skipped_prompts"]
    tr.pool.calls = np.asarray(state["rm_calls"], dtype=np.int64)
    tr.pool.down = set(state["rm_down"])
    tr.pool.last_errors = {int(k): v for k, v in state["rm_errors"].items()}
    if tr.acc.is_main_process:  # the log is the main process's
        _truncate_log(tr.out / "log.jsonl", tr.global_step)
    log.info("resumed from %s at iteration %d, step %d", folder, tr.iteration, tr.step_in_iter)
    return True


def check_compatible(state: dict, tr) -> None:
    """Refuse to resume into a different set of RMs, selector or model shape."""
    problems = []
    if state["rm_names"] != tr.pool.names:
        problems.append(f"reward models {state['rm_names']} in the checkpoint, {tr.pool.names} configured")
    if state.get("selector") != tr.cfg.selector.name:
        problems.append(f"selector {state.get('selector')!r} in the checkpoint, {tr.cfg.selector.name!r} configured")
    sig = model_signature(tr.params)
    if state["model_signature"] != sig:
        diff = [n for n in set(sig) | set(state["model_signature"])
                if sig.get(n) != state["model_signature"].get(n)][:3]
        problems.append(f"model shape differs from the checkpoint's (e.g. {', '.join(sorted(diff))})")
    if problems:
        raise ResumeError(f"cannot resume from {tr.out / 'checkpoints'}: " + "; ".join(problems))


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
        problems.append(f"rewards: the checkpoint {folder} was trained with reward models {state['rm_names']}, "
                        f"the config lists {names}")
    if state.get("selector") != cfg.selector.name:
        problems.append(f"selector.name: the checkpoint {folder} was trained with {state.get('selector')!r}, "
                        f"the config says {cfg.selector.name!r}")
    policy = saved.get("policy", {})
    if policy.get("model") != cfg.policy.model:
        problems.append(f"policy.model: the checkpoint {folder} was trained from {policy.get('model')!r}, "
                        f"the config says {cfg.policy.model!r}")
    if policy.get("lora") != dataclasses.asdict(cfg.policy.lora):
        problems.append(f"policy.lora: differs from the checkpoint {folder}'s ({policy.get('lora')})")
    return problems


def _truncate_log(path: Path, global_step: int) -> None:
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
