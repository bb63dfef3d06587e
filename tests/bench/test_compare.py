"""A reduced `laser compare` (seconds): complete report, resumability, config errors, the judge."""

import argparse
import json

import numpy as np
import pytest

from laser.bench.compare import add_compare_parser, compare_main
from laser.bench.compare.analyses import agreement_counts, selection_shares
from laser.bench.compare.judged import QualityJudge, strip_gold

SMALL = """\
seeds: 1
methods: [laser, random, online_ensemble, classifier, "laser@exp3", "single:generalist"]
analysis_methods: [laser, random]
n_label_per_domain: 4
settings: {n_train_per_domain: 4, n_test_per_domain: 4, iterations: 2, batch_size: 8, n_samples: 4,
           max_new_tokens: 24, pairs_per_prompt: 2, sft_target: smoke}
"""


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_compare_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", *argv])


def test_reduced_compare_writes_a_complete_report_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LASER_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "exp.yaml").write_text(SMALL)
    out = tmp_path / "out"
    argv = [
        "--config",
        str(tmp_path / "exp.yaml"),
        "--out",
        str(out),
        "--noise",
        "0,0.3",
        "--add-rm",
        "math_expert",
        "--add-at",
        "2",
        "--judged",
    ]
    assert compare_main(_args(*argv)) == 0
    printed = capsys.readouterr().out
    assert "laser - m" in printed and "online_ensemble" in printed and "LASeR selection" in printed

    res = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    expected_plots = {
        "accuracy_per_iteration.png",
        "selection_per_iteration.png",
        "selection_per_domain.png",
        "rm_agreement.png",
        "training_time.png",
        "noise_robustness.png",
    }
    assert set(res["plots"]) == expected_plots
    for name in expected_plots:
        assert (out / name).stat().st_size > 1000, name
        assert f"({name})" in report, name
    assert list(res["methods"]) == [
        "laser",
        "random",
        "online_ensemble",
        "classifier",
        "laser@exp3",
        "single:generalist",
    ]
    for m, e in res["methods"].items():
        assert set(e["accuracy"]) == {"arith", "choice", "compare", "count", "average"}
        assert len(e["accuracy_curve"]["mean"]) == 3  # SFT start + 2 iterations
        a = e["accuracy"]["average"]
        assert 0 <= a["ci_low"] <= a["mean"] <= a["ci_high"] <= 1 and a["n"] == 16
        assert (m == "laser") == ("vs_laser" not in e)
    calls = {m: e["responses_scored"] for m, e in res["methods"].items()}
    assert calls["online_ensemble"] == 5 * calls["random"] and calls["random"] < calls["laser"]  # laser probes
    # mechanism figures: responses_scored over the responses generated; random scores each response
    # with one RM (1.0), the online ensemble with all 5 (5.0), laser's probe prompts with every RM
    mech = {m: e["mechanism"] for m, e in res["methods"].items()}
    assert mech["random"]["calls_per_response"] == 1.0 and mech["online_ensemble"]["calls_per_response"] == 5.0
    assert 1.0 < mech["laser"]["calls_per_response"] < 5.0
    assert mech["laser"]["label_model_ms"] is not None and mech["random"]["label_model_ms"] is None
    assert all(-1 <= k["pair_gold"] <= 1 for k in mech.values())  # the gold reference is logged for every method
    assert "best-RM share" in printed
    assert 0.99 < sum(res["online_ensemble_weights"].values()) < 1.01
    assert set(res["selection"]) == {"laser", "random", "classifier", "laser@exp3", "single:generalist"}
    assert res["selection"]["single:generalist"]["by_domain"]["arith"]["generalist"] == 1.0
    assert np.asarray(res["agreement"]["matrix"]).shape == (6, 6)
    assert res["agreement"]["labels"][-1] == "correct"
    assert set(res["noise"]["methods"]) == {"laser", "random"} and res["noise"]["sigmas"] == [0.0, 0.3]
    add = res["add_rm"]["methods"]["laser"]
    assert add["share_before"]["math_expert"] == 0.0  # it had not joined yet at step 1
    assert 0 <= res["judged"]["win_rate"] <= 1 and res["judged"]["n"] == 16
    assert "## Noise robustness" in report and "## Adding an RM mid-run" in report and "judged" in report

    # A rerun skips every finished job (their result files are not rewritten) and reports again.
    finished = sorted((out / "runs").rglob("result.json"))
    assert len(finished) == 6 + 2 + 2 + 2
    stamps = [p.stat().st_mtime_ns for p in finished]
    (out / "report.md").unlink()
    assert compare_main(_args(*argv)) == 0
    assert [p.stat().st_mtime_ns for p in finished] == stamps and (out / "report.md").exists()


def test_bad_config_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("seedz: 2\nsettings: {iters: 3}\nmethods: [laser, bogus]\n")
    assert compare_main(_args("--config", str(tmp_path / "bad.yaml"))) == 2
    err = capsys.readouterr().err
    assert "seedz: unknown key" in err and "settings.iters: unknown key" in err
    assert compare_main(_args("--methods", "laser,single:nobody", "--add-rm", "noise")) == 2
    err = capsys.readouterr().err
    assert "single:nobody" in err and "add_rm / add_at" in err


def test_compare_without_scipy_names_the_stats_extra(monkeypatch, capsys):
    """scipy hidden (sys.modules entry None makes its import fail): exit 2 with the extra named,
    before the config is read (the config file does not exist, and no error names it)."""
    import sys

    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.delitem(sys.modules, "laser.bench.compare.stats", raising=False)
    assert compare_main(_args("--config", "no_such_file.yaml")) == 2
    err = capsys.readouterr().err
    assert "laser-rm[stats]" in err and "no_such_file" not in err


def test_quality_judge_cancels_its_position_bias():
    """One presentation favours the first response (sigmoid(beta) = 0.731 for equal quality with
    beta = 1); averaged over both orders equal responses get exactly 0.5, and the better response
    (the right answer, quality 1, against a wrong one) wins."""
    j = QualityJudge(temperature=0.1, position_bias=1.0)
    p, right, wrong = ["12+6*3=?\n"], ["6*3=18. 12+18=30. The answer is 30"], ["6*3=18. 12+18=31. The answer is 31"]
    assert j.prefer_one_order(p, right, right)[0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert j.prefer(p, right, right)[0] == pytest.approx(0.5, abs=1e-15)
    assert j.prefer(p, right, wrong)[0] > 0.99 and j.prefer(p, wrong, right)[0] < 0.01
    assert np.isnan(j.prefer(["not a benchmark prompt"], ["a"], ["b"])[0])


def test_strip_gold_keeps_only_prompts():
    from laser.bench.tasks import make_benchmark

    ex = make_benchmark(1, seed=0)[0]
    bare = strip_gold([ex])[0]
    assert (bare.id, bare.prompt, bare.answer, bare.domain, bare.task) == (ex.id, ex.prompt, "", "", "")


def test_agreement_counts_by_hand():
    """One prompt, three responses (pairs 01, 02, 12). RM a scores (3, 2, 1): orders all three
    pairs as 'first better'. RM b scores (1, 2, 3): the reverse. Correctness (1, 0, 0): only pairs
    01 and 02 are ordered (right first). So a agrees with correct on 2/2, b on 0/2, a with b 0/3."""
    scores = np.array([[[3.0, 2.0, 1.0]], [[1.0, 2.0, 3.0]]])
    c = agreement_counts(scores, np.array([[1.0, 0.0, 0.0]]))
    assert c["total"] == [[3, 3, 2], [3, 3, 2], [2, 2, 2]]
    assert c["agree"] == [[3, 0, 2], [0, 3, 0], [2, 0, 2]]


def test_selection_shares_before_and_after_a_step():
    run = {
        "steps": [
            {"global_step": 1, "iteration": 0, "arms": [0, 0], "domains": ["x", "x"]},
            {"global_step": 2, "iteration": 1, "arms": [1, 2], "domains": ["x", "y"]},
        ]
    }
    s = selection_shares([run], ["a", "b", "c"], split_step=2)
    assert s["by_iteration"] == [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]
    assert s["by_domain"] == {"x": {"a": 2 / 3, "b": 1 / 3, "c": 0.0}, "y": {"a": 0.0, "b": 0.0, "c": 1.0}}
    assert s["before"] == {"a": 1.0, "b": 0.0, "c": 0.0} and s["after"] == {"a": 0.0, "b": 0.5, "c": 0.5}


@pytest.mark.parametrize("method", ["classifier", "online_ensemble"])
def test_iteration_by_iteration_equals_one_run(tmp_path, monkeypatch, method):
    """The accuracy curve trains one iteration at a time (resume with iterations + 1); the final
    weights and the logged decisions must equal an uninterrupted 2-iteration run. The second
    call gets an unfitted classifier / a fresh ensemble: their state must come from the checkpoint."""
    import dataclasses

    import torch

    from laser.bench.compare import methods as M
    from laser.bench.demo import QUICK
    from laser.bench.policy import build_tiny_policy
    from laser.bench.rms import make_demo_rms
    from laser.bench.tasks import make_benchmark

    monkeypatch.setenv("LASER_CACHE_DIR", str(tmp_path / "cache"))
    policy_dir = build_tiny_policy(seed=0, target="smoke")
    train = make_benchmark(4, seed=0, split="train")
    rms = make_demo_rms(0)
    names = [rm.name for rm in rms]
    clf = M.fit_classifier(policy_dir, rms, QUICK, 4, 0)[0] if method == "classifier" else None
    s2 = dataclasses.replace(QUICK, iterations=2)
    _, p_once, d_once = M.train(method, 0, policy_dir, train, names, s2, tmp_path / "once", rms, None, clf)
    if clf is not None:
        clf = M.fit_classifier(policy_dir, rms, QUICK, 4, 0)[0]
    M.train(method, 0, policy_dir, train, names, QUICK, tmp_path / "steps", rms, None, clf)
    empty = M.empty_classifier(policy_dir, len(rms), 0) if clf is not None else None
    _, p_steps, d_steps = M.train(method, 0, policy_dir, train, names, s2, tmp_path / "steps", rms, None, empty)
    for (n, a), (_, b) in zip(p_once.model.state_dict().items(), p_steps.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    if empty is not None:
        assert empty.fitted_ and np.array_equal(empty.W_, clf.W_)

    def decisions(d):
        return [(r["prompt_arms"], r.get("weights"), r["loss"]) for r in map(json.loads, open(d / "log.jsonl"))]

    assert decisions(d_once) == decisions(d_steps) and len(decisions(d_once)) == 8  # 4 domain batches x 2
