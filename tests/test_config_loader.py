"""The typed config loader shared by `laser train` (RunConfig), `laser compare` (CompareConfig with
its ``settings`` and ``user`` sections): every problem named by its dotted key, before any work."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from laser.bench.compare import add_compare_parser, compare_main
from laser.bench.compare.runner import CompareConfig, load_compare_config
from laser.bench.compare.user import UserConfig
from laser.bench.runs import DemoSettings
from laser.cli.main import main
from laser.config import ConfigError, RunConfig, check_fields, explain, load_config, validate


def _compare(*argv):
    parser = argparse.ArgumentParser()
    add_compare_parser(parser.add_subparsers(dest="command"))
    return compare_main(parser.parse_args(["compare", *argv]))


def test_compare_type_errors_are_named_before_any_work(tmp_path, monkeypatch, capsys):
    """seeds: "3" (a string) and settings.iterations: "2" used to end in a TypeError traceback, the
    second only after the SFT start was built. Now: exit 2, both keys named, several problems in one
    message, and nothing runs (run_compare is never called, the out folder is not created)."""
    import laser.bench.compare.runner as runner

    called = []
    monkeypatch.setattr(runner, "run_compare", lambda cfg: called.append(cfg))
    (tmp_path / "c.yaml").write_text(
        f'out: {tmp_path / "out"}\nseeds: "3"\nsettings: {{iterations: "2", '
        "n_samples: 1, pairing: nope}\nnoise: [0, -0.3]\nmethods: [laser, bogus]\n"
    )
    assert _compare("--config", str(tmp_path / "c.yaml")) == 2
    err = capsys.readouterr().err
    for line in (
        "seeds: expected int, got '3'",
        "settings.iterations: expected int, got '2'",
        "settings.n_samples: must be >= 2 to form a pair, got 1",
        "settings.pairing: 'nope' is not one of top_vs_rest, best_vs_worst, topk_vs_bottomk",
        "noise[1]: must be >= 0, got -0.3",
        "methods: unknown method 'bogus'",
        "(6 problem(s))",
    ):
        assert line in err, line
    assert "Traceback" not in err and called == [] and not (tmp_path / "out").exists()


def test_compare_flags_and_dotted_overrides_share_the_loader():
    """The named flags map to CompareConfig keys; `laser train`-style dotted overrides reach nested
    sections and are type-checked the same way."""
    cfg = load_compare_config(None, ["settings.iterations=2", "settings.lr=1e-3"], seeds=2, methods=["laser"])
    assert (cfg.seeds, cfg.methods, cfg.settings.iterations, cfg.settings.lr) == (2, ["laser"], 2, 1e-3)
    assert cfg.settings.n_samples == DemoSettings().n_samples  # untouched keys keep their defaults
    with pytest.raises(ConfigError, match=r"settings\.iterations: expected int, got 'two'"):
        load_compare_config(None, ["settings.iterations=two"])
    with pytest.raises(ConfigError, match=r"settings\.iters: unknown key"):
        load_compare_config(None, ["settings.iters=2"])


def test_user_section_is_typed(tmp_path):
    """user.batch_size: "8" and user.test.limit: 0 are caught by the loader with their dotted keys."""
    with pytest.raises(ConfigError) as exc:
        load_compare_config(None, user={"run": "", "test": {"task": "jsonl", "limit": 0}, "batch_size": "8"})
    text = str(exc.value)
    assert "user.batch_size: expected int, got '8'" in text
    assert "user.test.limit: must be >= 1, got 0" in text
    assert "user.run: missing" in text and "user.test.path: required for task jsonl" in text


def test_choices_and_ranges_are_checked_on_a_config_built_in_code():
    """The field declarations (Literal, option ranges) are checked by validate() on any RunConfig,
    not only on parsed YAML."""
    cfg = RunConfig(rewards=[{"name": "a", "type": "length"}])
    cfg.train.on_nonfinite, cfg.policy.dtype, cfg.train.top_p = "maybe", "int8", 1.5
    problems = validate(cfg, require_data=False)
    assert "train.on_nonfinite: 'maybe' is not one of stop, skip" in problems
    assert "policy.dtype: 'int8' is not one of float32, bfloat16, float16, auto" in problems
    assert "train.top_p: must be in (0, 1], got 1.5" in problems
    assert check_fields(RunConfig()) == [] and check_fields(CompareConfig()) == []


def _fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sub = next(
            (a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if dataclasses.is_dataclass(a)), None
        )
        yield f"{prefix}{f.name}", f
        if sub is not None:
            yield from _fields(sub, f"{prefix}{f.name}.")


@pytest.mark.parametrize("cls", [RunConfig, CompareConfig, DemoSettings, UserConfig])
def test_every_field_has_help_and_explain_lists_it(cls):
    keys = dict(_fields(cls))
    missing = [k for k, f in keys.items() if not f.metadata.get("help")]
    assert missing == []
    shown = {line.split(":")[0] for line in explain(cls)}
    assert shown == set(keys)


def test_validate_explain_prints_every_key(capsys):
    assert main(["validate", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "train.lr: float = 5e-06 (> 0)  AdamW learning rate" in out
    assert "train.on_nonfinite: stop | skip = 'stop'" in out
    assert main(["validate"]) == 2 and "--config" in capsys.readouterr().err
    assert _compare("--explain") == 0
    assert "settings.iterations: int = 5 (>= 1)" in capsys.readouterr().out


def test_sft_target_choices_are_the_tiny_policy_presets():
    """DemoSettings declares the SFT recipes as a Literal (laser.bench.runs loads no torch); they must
    stay the keys of laser.bench.policy.PRESETS."""
    from laser.bench.policy import PRESETS

    hint = typing.get_type_hints(DemoSettings)["sft_target"]
    assert set(typing.get_args(hint)) == set(PRESETS)


def test_top_level_not_a_mapping_is_a_config_error(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="<root>: expected a mapping, got list"):
        load_config(tmp_path / "list.yaml")


def test_per_prompt_with_the_oracle_is_not_called_an_ensemble():
    """The oracle is a strategy but not an ensemble: it already picks each prompt's RM by its group."""
    base = {"rewards": [{"name": "a", "type": "length"}], "selector": {"per_prompt": True}}
    with pytest.raises(ConfigError) as exc:
        load_config(
            data={**base, "selector": {"name": "oracle", "per_prompt": True, "kwargs": {"arms_by_group": {"x": "a"}}}},
            require_data=False,
        )
    assert "not meaningful with the oracle (it picks each prompt's RM by its group)" in str(exc.value)
    assert "ensemble" not in str(exc.value)
    with pytest.raises(ConfigError, match="not meaningful with an ensemble"):
        load_config(data={**base, "selector": {"name": "score_ensemble", "per_prompt": True}}, require_data=False)
