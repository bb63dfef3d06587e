"""log_with: Accelerate's trackers get the per-step scalars; TensorBoard's event file reads back."""

import json

import pytest
from helpers import make_tiny_policy

from laser.config import ConfigError, load_config
from laser.rewards.rules import LengthRM, RegexRM
from laser.tasks.base import Example
from laser.training.loop import Trainer
from laser.training.trackers import check_installed, tracker_names

EXAMPLES = [Example(id=f"p{i}", prompt=f"{i}+{i}=") for i in range(8)]


def _cfg(out, **extra):
    specs = [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}]
    return load_config(
        data={
            "output_dir": str(out),
            "seed": 3,
            "rewards": specs,
            "selector": {"name": "linucb"},
            "train": {
                "iterations": 1,
                "batch_size": 4,
                "n_samples": 4,
                "max_new_tokens": 8,
                "lr": 1e-2,
                "pairs_per_prompt": 2,
            },
            **extra,
        },
        require_data=False,
    )


def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, log_with="tensorboard", tracker_project="tb")
    Trainer(cfg, make_tiny_policy(), [RegexRM("ones", "1"), LengthRM("long")], EXAMPLES, show_progress=False).run()
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/loss", "loss/dpo", "reward/raw", "arm/index", "arm_count/ones", "ucb/ones", "ucb/long"} <= tags
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [e.step for e in acc.Scalars("arm/index")] == [r["global_step"] for r in log] == [1, 2]
    finite = [r for r in log if r["loss"] is not None]  # a step without pairs has no loss to plot
    loss = acc.Scalars("loss/loss")
    assert finite and [e.step for e in loss] == [r["global_step"] for r in finite]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in finite], rel=1e-6)
    counts = acc.Scalars("arm_count/ones")[-1].value + acc.Scalars("arm_count/long")[-1].value
    assert counts == sum(len(r["prompt_arms"]) for r in log)  # every prompt scored by one arm


def test_log_with_accepts_a_string_and_refuses_unknown_trackers(tmp_path):
    assert tracker_names("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert check_installed(["nosuch"]) == [
        "log_with: unknown tracker 'nosuch' (valid: aim, clearml, comet_ml, "
        "dvclive, mlflow, swanlab, tensorboard, trackio, wandb)"
    ]
    with pytest.raises(ConfigError, match="log_with: unknown tracker 'nosuch'"):
        _cfg(tmp_path, log_with=["nosuch"])
