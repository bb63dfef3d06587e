"""Experiment trackers through Accelerate (``log_with``: tensorboard, wandb, mlflow, trackio, ...).

``log.jsonl`` stays the full record of a run; a tracker gets the per-step scalars a person plots:
the bandit reward, the loss terms, the picked arm, each arm's selection count and UCB score.
Tracker packages are optional and imported by Accelerate only when configured.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: the tracker extra that installs each backend
EXTRAS = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "trackio": "trackio",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
}


def tracker_names(log_with: list[str] | str) -> list[str]:
    """``log_with`` as a list (``"tensorboard"`` and ``"tensorboard,wandb"`` are accepted too)."""
    if isinstance(log_with, str):
        return [x.strip() for x in log_with.split(",") if x.strip()]
    return list(log_with)


def check_installed(names: list[str]) -> list[str]:
    """Problems with configured trackers: unknown to Accelerate, or its package is missing."""
    import importlib.util

    problems = []
    for name in names:
        if name not in EXTRAS:
            problems.append(f"log_with: unknown tracker {name!r} (valid: {', '.join(sorted(EXTRAS))})")
        elif importlib.util.find_spec(EXTRAS[name]) is None:
            problems.append(
                f"log_with: tracker {name!r} needs its package: pip install {EXTRAS[name]} "
                f"(or pip install 'laser-rm[trackers]')"
            )
    return problems


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def step_scalars(record: dict, names: list[str], counts: np.ndarray) -> dict[str, float]:
    """The tracker scalars of one log record (non-finite values left out)."""
    values = {f"loss/{k}": record.get(k) for k in ("loss", "dpo", "nll", "loss_after")}
    rewards = [r for r in (record.get("reward") or []) if r is not None]
    raws = [r for r in (record.get("raw_reward") or []) if r is not None]
    values["reward/normalised"] = float(np.mean(rewards)) if rewards else None
    values["reward/raw"] = float(np.mean(raws)) if raws else None
    values["train/grad_norm"] = record.get("grad_norm")
    values["train/pair_accuracy"] = record.get("pair_accuracy")
    values["train/score_mean"] = record.get("score_mean")
    values["arm/index"] = record.get("arm")
    for k, name in enumerate(names):
        values[f"arm_count/{name}"] = float(counts[k])
        ucb = record.get("ucb")
        if ucb is not None and k < len(ucb):
            values[f"ucb/{name}"] = ucb[k]
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(float(v))}


class Trackers:
    """Accelerate's trackers for one run: started with the resolved config, one log call per step."""

    def __init__(self, accelerator, cfg):
        self.acc, self.on = accelerator, bool(tracker_names(cfg.log_with))
        self.counts: np.ndarray | None = None
        if self.on:
            project = cfg.tracker_project or "laser"
            self.acc.init_trackers(project, config=_flat(dataclasses.asdict(cfg)))

    def log(self, record: dict, names: list[str]) -> None:
        if not self.on:
            return
        if self.counts is None:
            self.counts = np.zeros(len(names))
        for arm in set(record["prompt_arms"]):
            if arm >= 0:
                self.counts[arm] += record["prompt_arms"].count(arm)
        self.acc.log(step_scalars(record, names, self.counts), step=record["global_step"])

    def finish(self) -> None:
        if self.on:
            self.acc.end_training()
