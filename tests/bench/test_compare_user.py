"""`laser compare` with a ``user:`` section: the user's run config and test set, end to end."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from laser.bench.compare import add_compare_parser, compare_main
from laser.build import method_config as method_overrides


def _parse(argv: list[str]):
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    add_compare_parser(sub)
    return sub._name_parser_map["compare"].parse_args(argv)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def setup(tmp_path, tiny_model_dir):
    """A run config (tiny policy, two rule RMs, 8 arithmetic prompts), a 6-prompt test set, a compare YAML."""
    train = _jsonl(
        tmp_path / "train.jsonl",
        [{"id": f"t{k}", "prompt": f"{k}+0=", "answer": str(k), "task": "gsm8k"} for k in range(8)],
    )
    test = _jsonl(
        tmp_path / "test.jsonl",
        [{"id": f"e{k}", "prompt": f"{k}+0=", "answer": str(k), "task": "gsm8k"} for k in range(6)],
    )
    run = {
        "policy": {"model": str(tiny_model_dir)},
        "data": {"prompts": str(train)},
        "rewards": [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}],
        "train": {"iterations": 1, "batch_size": 4, "n_samples": 4, "max_new_tokens": 8, "pairs_per_prompt": 2},
        "checkpoint": {"every": 0},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    cmp = {
        "out": str(tmp_path / "out"),
        "seeds": 2,
        "methods": ["laser", "random", "single:ones"],
        "n_boot": 200,
        "user": {
            "run": str(tmp_path / "run.yaml"),
            "test": {"task": "jsonl", "path": str(test)},
            "max_new_tokens": 4,
            "batch_size": 8,
        },
    }
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cmp))
    return tmp_path, cmp


def test_user_compare_end_to_end_and_rerun_skips(setup, capsys):
    tmp, cmp = setup
    assert compare_main(_parse(["--config", str(tmp / "cmp.yaml")])) == 0
    out = tmp / "out"
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == cmp["methods"]
    assert res["rms"] == ["ones", "long"] and res["n_test"] == 6 and res["seeds"] == [0, 1]
    for m, e in res["methods"].items():
        a = e["accuracy"]["average"]
        assert 0.0 <= a["ci_low"] <= a["mean"] <= a["ci_high"] <= 1.0
        assert a["n"] == 2 * 6  # seeds x test prompts, pooled
        assert e["responses_scored"] > 0
        assert ("vs_laser" in e) == (m != "laser")
    files = {
        m: [out / "runs" / "user" / m.replace(":", "_") / f"seed{s}" / "result.json" for s in (0, 1)]
        for m in cmp["methods"]
    }
    for m, paths in files.items():
        for s, p in enumerate(paths):
            r = json.loads(p.read_text())
            assert r["method"] == m and r["seed"] == s and len(r["correct"]) == 6
            # the stored accuracy is the mean of the kept per-example correctness (one group: gsm8k)
            assert r["accuracy"]["average"] == pytest.approx(sum(r["correct"]) / 6)
            assert (p.parent / "run" / "final").is_dir()  # trained with output_dir under the job folder
    # the pooled mean is the mean over both seeds' per-example correctness
    for m, paths in files.items():
        pooled = [c for p in paths for c in json.loads(p.read_text())["correct"]]
        assert res["methods"][m]["accuracy"]["average"]["mean"] == pytest.approx(sum(pooled) / 12)
    # single:ones always scores with the fixed RM; random's seeds each picked arms
    single = json.loads(files["single:ones"][0].read_text())
    assert {a for s in single["steps"] for a in s["arms"]} == {0}
    assert res["selection"]["single:ones"]["by_domain"]["gsm8k"] == {"ones": 1.0, "long": 0.0}
    report = (out / "report.md").read_text()
    assert "user set-up" in report and "single:ones" in report and "Not in this report" in report
    # a rerun trains nothing: result files untouched, same numbers
    mtimes = {p: p.stat().st_mtime_ns for ps in files.values() for p in ps}
    capsys.readouterr()
    assert compare_main(_parse(["--config", str(tmp / "cmp.yaml")])) == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    again = json.loads((out / "results.json").read_text())
    assert {m: e["accuracy"] for m, e in again["methods"].items()} == {
        m: e["accuracy"] for m, e in res["methods"].items()
    }


def test_bad_user_configs_exit_2_and_name_the_key(setup, capsys):
    tmp, cmp = setup
    bad = {
        **cmp,
        "methods": ["laser", "nonsense", "single:nope"],
        "user": {**cmp["user"], "test": {"task": "squad", "path": str(tmp / "test.jsonl")}},
    }
    (tmp / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert compare_main(_parse(["--config", str(tmp / "bad.yaml")])) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nonsense'" in err
    assert "single:nope: unknown reward model 'nope' (valid: ones, long)" in err
    assert "user.test.task: 'squad' is not one of" in err
    bad = {**cmp, "user": {**cmp["user"], "run": str(tmp / "missing.yaml"), "extra": 1}}
    (tmp / "bad2.yaml").write_text(yaml.safe_dump(bad))
    assert compare_main(_parse(["--config", str(tmp / "bad2.yaml")])) == 2
    err = capsys.readouterr().err
    assert "user.run: run config not found" in err and "user.extra: unknown key" in err
    assert not (tmp / "out").exists()  # nothing ran


def test_method_overrides_map_names_to_selector_and_feedback():
    base_sel, base_tr = {"name": "linucb", "alpha": 0.3, "kwargs": {"x": 1}}, {"feedback": "pair_accuracy", "lr": 1e-5}
    sel, tr = method_overrides("single:long", base_sel, base_tr)
    assert sel == {"name": "fixed", "alpha": 0.3, "arm": "long", "per_prompt": False} and tr == base_tr
    sel, tr = method_overrides("laser:neg_loss", base_sel, base_tr)
    assert sel == {**base_sel, "arm": None, "per_prompt": False} and tr == {"feedback": "neg_loss", "lr": 1e-5}
    sel, _ = method_overrides("laser_per_prompt", base_sel, base_tr)
    assert sel["name"] == "linucb" and sel["per_prompt"] is True and sel["kwargs"] == {"x": 1}
    sel, _ = method_overrides("laser@exp3", base_sel, base_tr)
    assert sel["name"] == "exp3" and "kwargs" not in sel
    assert method_overrides("round_robin", None, None)[0] == {"name": "round_robin", "arm": None, "per_prompt": False}
    assert base_sel["name"] == "linucb" and "arm" not in base_sel  # inputs not mutated
