"""Item 4: bad input. Each bad dataset or config gives ONE clear error (exit status 2) naming
file:line and field, or the dotted config key, before any model loads: the model path points at a
folder that does not exist and the model/RM loaders are replaced by ones that fail if called.
A config error lists every problem at once."""

from __future__ import annotations

import pytest
import yaml

from laser.cli.main import main
from laser.training.checkpoint import ResumeError, check_resume_config

pytestmark = pytest.mark.reliability
ITEM = "4 bad input"


class ModelLoaded(AssertionError):
    pass


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load a model or build an RM fails the test."""
    import laser.policy.model
    import laser.rewards.factory

    def refuse(*a, **k):
        raise ModelLoaded("a model or RM was loaded before the input was validated")

    monkeypatch.setattr(laser.policy.model, "load_model_and_tokenizer", refuse)
    monkeypatch.setattr(laser.rewards.factory, "build_reward_models", refuse)


def base_config(tmp_path, model="/nonexistent/model-folder") -> dict:
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text('{"id": "a", "prompt": "1+1="}\n{"id": "b", "prompt": "2+2="}\n')
    return {
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "policy": {"model": model},
        "data": {"prompts": str(prompts)},
        "rewards": [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}],
        "selector": {"name": "linucb"},
        "train": {"iterations": 1, "batch_size": 2, "n_samples": 4, "max_new_tokens": 6, "lr": 0.01},
    }


def write(tmp_path, cfg: dict):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_error(capsys, argv) -> str:
    """Run the CLI, expect exit status 2 and exactly one `error:` message (no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    return err


DATASETS = {  # name: (file content, what the error must say; {f} = the file)
    "empty file": ("", "{f}: file is empty"),
    "only blank lines": ("\n  \n\n", "{f}: only blank lines"),
    "invalid JSON on line 3": ('{"prompt": "a"}\n{"prompt": "b"}\n{not json\n', "{f}:3: invalid JSON"),
    "missing prompt field": ('{"prompt": "a"}\n{"id": "b", "text": "x"}\n', '{f}:2: field "prompt" missing'),
    "non-string prompt": ('{"prompt": 5}\n', '{f}:1: field "prompt" must be a string'),
    "empty prompt": ('{"prompt": "  "}\n', '{f}:1: field "prompt" is empty'),
    "duplicate ids": (
        '{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{"id": "a", "prompt": "z"}\n',
        '{f}:3: duplicate id "a" (first at {f}:1)',
    ),
}


@pytest.mark.parametrize("command", ["validate", "train"])
@pytest.mark.parametrize("case", list(DATASETS))
def test_bad_dataset_one_error_naming_file_line_field(tmp_path, capsys, no_loading, figures, case, command):
    content, expected = DATASETS[case]
    with figures.case(ITEM, "bad datasets rejected, one error naming file:line + field (validate, train)"):
        (tmp_path / "prompts.jsonl").write_text(content)
        path = write(tmp_path, base_config(tmp_path))
        err = one_error(capsys, [command, "--config", str(path)])
        assert expected.format(f=tmp_path / "prompts.jsonl") in err, err


def test_bom_and_crlf_are_accepted(tmp_path, capsys, no_loading, figures):
    (tmp_path / "prompts.jsonl").write_bytes(
        '\ufeff{"id": "a", "prompt": "1+1="}\r\n{"id": "b", "prompt": "x"}\r\n'.encode("utf-8")
    )
    path = write(tmp_path, base_config(tmp_path))
    assert main(["validate", "--config", str(path)]) == 0
    assert "OK (2 prompts" in capsys.readouterr().out
    from laser.tasks.datasets import read_prompts_jsonl

    assert [(e.id, e.prompt) for e in read_prompts_jsonl(tmp_path / "prompts.jsonl")] == [("a", "1+1="), ("b", "x")]
    figures.set(ITEM, "BOM + CRLF prompt file accepted", "yes")


def set_key(cfg: dict, dotted: str, value):
    node = cfg
    *parents, leaf = dotted.split(".")
    for k in parents:
        node = node[k]
    node[leaf] = value


CONFIGS = {  # name: (dotted key, bad value, expected text)
    "unknown key": ("train.bogus", 3, "train.bogus: unknown key"),
    "wrong type (int)": ("train.iterations", "ten", "train.iterations: expected int, got 'ten'"),
    "wrong type (float)": ("train.beta", [0.1], "train.beta: expected float, got [0.1]"),
    "wrong type (bool)": ("data.shuffle", "maybe", "data.shuffle: expected bool, got 'maybe'"),
    "lr = 0": ("train.lr", 0, "train.lr: must be > 0, got 0"),
    "lr < 0": ("train.lr", -1e-3, "train.lr: must be > 0, got -0.001"),
    "beta = 0": ("train.beta", 0, "train.beta: must be > 0, got 0"),
    "alpha < 0": ("selector.alpha", -0.5, "selector.alpha: must be >= 0, got -0.5"),
    "n_samples < 2": ("train.n_samples", 1, "train.n_samples: must be >= 2 to form a pair, got 1"),
    "no reward models": ("rewards", [], "rewards: at least one reward model is required"),
    "duplicate RM names": (
        "rewards",
        [{"name": "a", "type": "length"}, {"name": "a", "type": "length"}],
        "rewards[1].name: duplicate reward model name 'a'",
    ),
}


@pytest.mark.parametrize("command", ["validate", "train"])
@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_config_one_error_naming_the_key(tmp_path, capsys, no_loading, figures, case, command):
    key, value, expected = CONFIGS[case]
    with figures.case(ITEM, "bad configs rejected, one error naming the dotted key (validate, train)"):
        cfg = base_config(tmp_path)
        set_key(cfg, key, value)
        err = one_error(capsys, [command, "--config", str(write(tmp_path, cfg))])
        assert expected in err and "(1 problem(s))" in err and str(tmp_path / "run.yaml") in err, err


def test_config_error_lists_every_problem_at_once(tmp_path, capsys, no_loading, figures):
    cfg = base_config(tmp_path)
    faults = [
        "unknown key",
        "wrong type (int)",
        "lr < 0",
        "beta = 0",
        "alpha < 0",
        "n_samples < 2",
        "duplicate RM names",
    ]
    for case in faults:
        set_key(cfg, *CONFIGS[case][:2])
    (tmp_path / "prompts.jsonl").write_text("{not json\n")  # a data error too: the config's come first
    err = one_error(capsys, ["train", "--config", str(write(tmp_path, cfg))])
    assert f"({len(faults)} problem(s))" in err
    assert all(CONFIGS[c][2] in err for c in faults), err
    figures.set(ITEM, "config with 7 faults: problems listed in one error", f"all {len(faults)} named")


def test_override_errors_name_the_key(tmp_path, capsys, no_loading):
    path = write(tmp_path, base_config(tmp_path))
    err = one_error(capsys, ["train", "--config", str(path), "train.lr=-1", "selector.alpha=-2", "nokey"])
    assert "nokey: overrides must look like key.sub=value" in err


def test_exponent_without_dot_is_a_float(tmp_path, capsys, no_loading):
    cfg = base_config(tmp_path)
    cfg["train"]["lr"] = "1e-5"  # what yaml.safe_load gives for `lr: 1e-5`
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg).replace("lr: '1e-5'", "lr: 1e-5"))
    assert "lr: 1e-5\n" in path.read_text()
    assert main(["validate", "--config", str(path)]) == 0


# ---- resuming into another set-up -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A finished 1-step run on the tiny model, to resume from with changed settings."""
    root = tmp_path_factory.mktemp("resume")
    cfg = base_config(root, model=str(tiny_model_dir))
    assert main(["train", "--config", str(write(root, cfg))]) == 0
    return root, cfg


@pytest.fixture
def other_model(tmp_path_factory):
    from helpers import make_tiny_policy

    folder = tmp_path_factory.mktemp("wider_model")
    make_tiny_policy(hidden=48).model.save_pretrained(folder)
    make_tiny_policy().tokenizer.save_pretrained(folder)
    return folder


def changed(trained, what: str, other_model=None) -> dict:
    _, cfg = trained
    cfg = yaml.safe_load(yaml.safe_dump(cfg))
    if what == "rewards":
        cfg["rewards"][1]["name"] = "short"
    else:
        cfg["policy"]["model"] = str(other_model)
    return cfg


@pytest.mark.parametrize("what", ["rewards", "policy.model"])
def test_resume_refuses_another_setup(trained, other_model, what, figures):
    """What holds today: the trainer refuses (after the model loaded) with a ResumeError naming the
    difference, and check_resume_config names the config key without loading anything."""
    from pathlib import Path

    from laser.build import load_run
    from laser.policy.model import Policy, load_model_and_tokenizer
    from laser.rewards.factory import build_reward_models
    from laser.routing.checkpoint import find_latest
    from laser.training.loop import Trainer

    root, _ = trained
    cfg_dict = changed(trained, what, other_model)
    with figures.case(ITEM, "resume into other RMs / other model shape refused, key named"):
        cfg, examples = load_run(str(_write(root, cfg_dict)), [])
        tr = Trainer(
            cfg,
            Policy(*load_model_and_tokenizer(cfg.policy)),
            build_reward_models(cfg.rewards),
            examples,
            show_progress=False,
        )
        expected = {
            "rewards": r"reward models \['ones', 'long'\] in the checkpoint, \['ones', 'short'\] configured",
            "policy.model": "model shape differs from the checkpoint's",
        }[what]
        with pytest.raises(ResumeError, match=expected):
            tr.resume()
        folder, _ = find_latest(Path(cfg_dict["output_dir"]) / "checkpoints")
        problems = check_resume_config(folder, cfg)
        assert len(problems) == 1 and problems[0].startswith(f"{what}: the checkpoint"), problems


def _write(root, cfg: dict):
    path = root / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("what", ["rewards", "policy.model"])
def test_resume_into_another_setup_is_one_error_before_loading(trained, other_model, capsys, no_loading, what):
    root, _ = trained
    err = one_error(capsys, ["train", "--config", str(_write(root, changed(trained, what, other_model))), "--resume"])
    assert f"{what}: the checkpoint" in err


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("selector", "linucb", "selector: expected a mapping, got str"),
        ("rewards", {"name": "a", "type": "length"}, "rewards: expected list"),
    ],
)
def test_a_section_of_the_wrong_shape_is_one_problem_named_by_its_key(
    tmp_path, capsys, no_loading, key, value, expected
):
    cfg = base_config(tmp_path)
    cfg[key] = value
    err = one_error(capsys, ["validate", "--config", str(write(tmp_path, cfg))])
    assert expected in err and "(1 problem(s))" in err, err
