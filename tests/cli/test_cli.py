"""The `laser` command: validation errors before anything loads, train/resume, two processes."""

import json
import os
import subprocess

import pytest
import yaml
from helpers import two_cpu_processes, write_prompts

from laser.cli.main import main


def write_config(tmp_path, model_dir, **extra):
    cfg = {
        "seed": 1,
        "output_dir": str(tmp_path / "run"),
        "policy": {"model": str(model_dir)},
        "data": {"prompts": str(write_prompts(tmp_path / "prompts.jsonl"))},
        "rewards": [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}],
        "selector": {"name": "linucb"},
        "train": {
            "iterations": 2,
            "batch_size": 4,
            "n_samples": 4,
            "max_new_tokens": 8,
            "lr": 1e-3,
            "pairs_per_prompt": 2,
        },
    }
    for key, value in extra.items():
        section, _, leaf = key.partition("__")
        if leaf:
            cfg.setdefault(section, {})[leaf] = value
        else:
            cfg[section] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bad_config_lists_every_problem_with_dotted_keys(tmp_path, capsys, tiny_model_dir):
    path = write_config(
        tmp_path,
        tiny_model_dir,
        train__lr=-1,
        train__beta=0,
        train__n_samples=1,
        train__bogus=3,
        selector__alpha=-0.5,
        train__iterations="ten",
    )
    assert main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    for expected in (
        "train.lr: must be > 0",
        "train.beta: must be > 0",
        "train.n_samples: must be >= 2",
        "train.bogus: unknown key",
        "selector.alpha: must be >= 0",
        "train.iterations: expected int, got 'ten'",
    ):
        assert expected in err, (expected, err)


def test_reward_model_problems(tmp_path, capsys, tiny_model_dir):
    path = write_config(
        tmp_path,
        tiny_model_dir,
        rewards=[
            {"name": "a", "type": "length", "colour": "red"},
            {"name": "a", "type": "length"},
            {"name": "b", "type": "warp_drive"},
        ],
    )
    assert main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "rewards[1].name: duplicate reward model name 'a'" in err
    path = write_config(
        tmp_path,
        tiny_model_dir,
        rewards=[{"name": "a", "type": "length", "colour": "red"}, {"name": "b", "type": "warp_drive"}],
    )
    assert main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "rewards[0].colour: unknown argument for type length" in err
    assert "rewards[1].type: 'warp_drive' is not one of" in err
    path = write_config(tmp_path, tiny_model_dir, rewards=[])
    assert main(["validate", "--config", str(path)]) == 2
    assert "rewards: at least one reward model is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,expected",
    [
        ("", "empty"),
        ('{"prompt": "a"}\n{"prompt": "b"}\n{not json\n', "prompts.jsonl:3"),
        ('{"id": 1, "text": "a"}\n', 'prompts.jsonl:1: field "prompt" missing'),
    ],
)
def test_bad_prompt_file_names_file_line_and_field(tmp_path, capsys, tiny_model_dir, content, expected):
    path = write_config(tmp_path, tiny_model_dir)
    (tmp_path / "prompts.jsonl").write_text(content)
    assert main(["validate", "--config", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_train_then_resume_refusal_and_resume(tmp_path, capsys, tiny_model_dir):
    path = write_config(tmp_path, tiny_model_dir)
    assert main(["validate", "--config", str(path)]) == 0
    assert main(["train", "--config", str(path), "train.iterations=1"]) == 0
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert len(log) == 2 and log[-1]["global_step"] == 2
    assert main(["train", "--config", str(path)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--resume"]) == 0  # 2 iterations now: 2 more steps
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert [r["global_step"] for r in log] == [1, 2, 3, 4]


def test_two_processes_apply_the_same_broadcast_arm(tmp_path, tiny_model_dir):
    """Two CPU processes under `accelerate launch` (gloo): each rank samples its shard of the
    batch, the main process decides, and every rank applies the same arm at every step.

    accelerate 1.x runs `--cpu` as a single process unless MPI is configured; `--multi_gpu` on a
    machine without CUDA starts torchrun with the gloo backend (DistributedType.MULTI_CPU)."""
    pytest.importorskip("accelerate")
    path = write_config(tmp_path, tiny_model_dir, selector__per_prompt=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    cmd = [
        *two_cpu_processes(),  # a free port: two suites at once do not collide on 29500
        "-m",
        "laser.cli.main",
        "train",
        "--config",
        str(path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert len(log) == 4
    for r in log:
        assert len(r["arms_by_rank"]) == 2
        assert r["arms_by_rank"][0] == r["arms_by_rank"][1] == r["prompt_arms"]


def test_cli_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "validate", "demo", "eval", "bon", "compare", "serve-rm"):
        assert command in out


def test_train_with_the_online_ensemble(tmp_path, tiny_model_dir):
    path = write_config(tmp_path, tiny_model_dir, selector={"name": "online_ensemble", "kwargs": {"eta": 1.0}})
    assert main(["train", "--config", str(path), "train.iterations=1"]) == 0
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert all(r["arm_name"] == "online_ensemble" and abs(sum(r["weights"]) - 1) < 1e-9 for r in log)
    assert log[-1]["responses_scored"] == [2 * 4 * 4, 2 * 4 * 4]  # every RM scores every response


def test_lora_initialisation_is_seeded_by_the_run_seed(tmp_path, tiny_model_dir):
    """Two policies built from one config start from the same LoRA adapters (a third, other seed, does not)."""
    import torch

    from laser.build import load_policy
    from laser.config import load_config

    def adapters(seed):
        cfg = load_config(
            data={
                "seed": seed,
                "policy": {
                    "model": str(tiny_model_dir),
                    "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                },
                "rewards": [{"name": "l", "type": "length"}],
            },
            require_data=False,
        )
        torch.manual_seed(1000 + seed * 7)  # whatever the global RNG held before
        return {n: p.detach().clone() for n, p in load_policy(cfg).model.named_parameters() if "lora_A" in n}

    a, b, c = adapters(0), adapters(0), adapters(1)
    assert a and all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_readme_ten_line_example_runs_through_the_builder(tmp_path, tiny_model_dir):
    """The README's Python example with the tiny model and a prompt file in place of the Hub model."""
    from helpers import write_prompts

    from laser.build import build
    from laser.config import load_config

    cfg = load_config(
        data={
            "policy": {"model": str(tiny_model_dir)},
            "data": {"prompts": str(write_prompts(tmp_path / "p.jsonl"))},
            "rewards": [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}],
            "selector": {"name": "linucb"},
            "output_dir": str(tmp_path / "run"),
            "train": {"iterations": 1, "batch_size": 4, "n_samples": 3, "max_new_tokens": 6, "pairs_per_prompt": 1},
        }
    )
    summary = build(cfg, show_progress=False).run()
    assert summary["global_step"] == 2 and sum(summary["responses_scored"]) == 8 * 3
    assert (tmp_path / "run" / "final" / "laser_policy.json").exists()


def test_feedback_the_prompts_cannot_support_is_refused_before_loading(tmp_path, capsys):
    """pair_accuracy on prompts without gold answers, and a per-run feedback with the online
    ensemble, are config errors naming train.feedback (exit 2, no model loaded)."""
    import yaml
    from helpers import write_prompts

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"{i}+1="}) + "\n" for i in range(4)))
    base = {
        "policy": {"model": "/nonexistent/model"},
        "data": {"prompts": str(prompts)},
        "rewards": [{"name": "l", "type": "length"}],
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**base, "train": {"feedback": "pair_accuracy"}}))
    assert main(["train", "--config", str(path)]) == 2
    assert "train.feedback: train.feedback=pair_accuracy needs a gold answer" in capsys.readouterr().err
    path.write_text(
        yaml.safe_dump(
            {
                **base,
                "data": {"prompts": str(write_prompts(tmp_path / "q.jsonl"))},
                "selector": {"name": "online_ensemble"},
                "train": {"feedback": "loss_decrease"},
            }
        )
    )
    assert main(["validate", "--config", str(path)]) == 2
    assert "train.feedback: loss_decrease is not computed per pair" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_demo_workers_must_be_a_positive_integer(value, capsys, tmp_path):
    """`laser demo --workers` is checked by argparse before anything is built: exit 2, the flag named."""
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--quick", "--out", str(tmp_path), "--workers", value])
    assert exc.value.code == 2
    assert "argument --workers: expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
