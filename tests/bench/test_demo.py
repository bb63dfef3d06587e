"""A reduced `laser demo` (seconds): a complete results.json with every method."""

import json

import pytest

from laser.bench.demo import aggregate, format_table, method_names, run_demo
from laser.bench.rms import make_demo_rms


def test_quick_demo_writes_complete_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LASER_CACHE_DIR", str(tmp_path / "cache"))
    run_demo(out=str(tmp_path / "out"), seeds=1, quick=True)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    names = [rm.name for rm in make_demo_rms()]
    assert res["rms"] == names and len(names) >= 5 and res["seeds"] == [0]
    expected = {
        "laser",
        "laser_per_prompt",
        "laser:pair_accuracy",
        "random",
        "oracle",
        "verifier",
        "round_robin",
        "score_ensemble",
        "agreement_ensemble",
        *[f"single:{n}" for n in names],
    }
    assert set(res["methods"]) == expected
    domains = {"arith", "compare", "choice", "count"}
    assert set(res["sft"]["accuracy"]) == domains | {"average"}
    for m, e in res["methods"].items():
        assert set(e["accuracy"]) == domains | {"average"}
        assert all(0.0 <= v <= 1.0 for v in e["accuracy"].values()), m
        assert e["responses_scored"] > 0 and e["wall_time_s"] > 0
    calls = {m: e["responses_scored"] for m, e in res["methods"].items()}
    assert calls["score_ensemble"] == calls["agreement_ensemble"] == len(names) * calls["random"]
    # laser is the reliability router: probe prompts are scored by every RM, the others by one
    assert calls["random"] < calls["laser"] <= calls["score_ensemble"]
    assert set(res["selection"]) == domains
    for row in res["selection"].values():
        assert set(row) == set(names) and abs(sum(row.values()) - 1.0) < 1e-9
    out = capsys.readouterr().out
    assert "LASeR selection" in out and "score_ensemble" in out


def test_aggregate_reports_mean_and_std_over_seeds():
    """Two seeds with averages 0.2 and 0.4: mean 0.3, population std 0.1."""

    def run(a):
        acc = {"arith": a, "average": a}
        return {
            "sft": acc,
            "methods": {"laser": {"accuracy": acc, "responses_scored": 10, "wall_time_s": 1.0}},
            "selection": {"laser": {"arith": {"x": 1.0}}},
        }

    res = aggregate([run(0.2), run(0.4)], ["x"], [0, 1])
    assert abs(res["methods"]["laser"]["accuracy"]["average"] - 0.3) < 1e-12
    assert abs(res["methods"]["laser"]["accuracy_std"]["average"] - 0.1) < 1e-12
    assert res["selection"] == {"arith": {"x": 1.0}}
    assert "±" in format_table(res)


def test_method_names_include_feedback_variants():
    names = method_names(["a", "b"], ["neg_loss", "loss_decrease"])
    assert names[:5] == ["laser", "laser_per_prompt", "laser:pair_accuracy", "laser:neg_loss", "laser:loss_decrease"]
    assert method_names(["a"], ["auto_label_free"])[:4] == [
        "laser",
        "laser_per_prompt",
        "laser:pair_accuracy",
        "random",
    ]
    assert names[-2:] == ["single:a", "single:b"]


def test_headroom_share_is_the_place_between_random_and_oracle():
    """random 0.40, oracle 0.60, laser 0.45: (0.45 - 0.40) / (0.60 - 0.40) = 0.25."""
    from laser.bench.demo import headroom_shares

    res = {
        "methods": {m: {"accuracy": {"average": a}} for m, a in (("random", 0.40), ("oracle", 0.60), ("laser", 0.45))}
    }
    shares = headroom_shares(res)
    assert shares["laser"] == pytest.approx(0.25) and shares["random"] == 0.0 and shares["oracle"] == 1.0
    assert headroom_shares({"methods": {"laser": {"accuracy": {"average": 0.5}}}}) == {}


def test_demo_on_two_worker_processes_equals_one_process(tmp_path, monkeypatch):
    """`--workers 2` trains methods in two spawned processes; every method seeds itself, so each
    method's accuracies, RM counts and selection equal the one-process run's (only wall times
    differ), and the table keeps the methods' order."""
    monkeypatch.setenv("LASER_CACHE_DIR", str(tmp_path / "cache"))
    methods = ["laser", "random", "single:generalist"]
    one = run_demo(out=str(tmp_path / "one"), quick=True, methods=methods, workers=1)
    two = run_demo(out=str(tmp_path / "two"), quick=True, methods=methods, workers=2)
    assert list(two["methods"]) == methods
    for m in methods:
        a, b = one["methods"][m], two["methods"][m]
        assert a["accuracy"] == b["accuracy"] and a["responses_scored"] == b["responses_scored"], m
    assert one["selection"] == two["selection"] and one["selection_by_method"] == two["selection_by_method"]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_demo(out=str(tmp_path / "zero"), quick=True, methods=methods, workers=0)
