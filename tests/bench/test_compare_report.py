"""The compare report's statistics from hand-made job results (no training): the test named for
every p-value, the hierarchical bootstrap as the primary test, seed counts that cannot reach
significance shown as n/a, and the headroom column when `random` and `oracle` ran."""

from types import SimpleNamespace

import numpy as np
import pytest

from laser.bench.compare import analyses as A
from laser.bench.compare.markdown import render
from laser.bench.compare.report import build_results, format_table
from laser.bench.compare.stats import HIERARCHICAL_TEST, headroom_share, hierarchical_bootstrap
from laser.bench.runs import DemoSettings

DOMAINS = ("arith", "count")
RMS = ["r1", "r2"]


def _runs(p: float, seeds: int, n: int = 20, crossed: bool = False, salt: int = 0) -> list[dict]:
    """One fake job result per seed: n items per domain, correct with probability p."""
    out = []
    for s in range(seeds):
        rng = np.random.default_rng([s, salt])
        ids = [f"{d}-{'x' if crossed else s}-{i}" for d in DOMAINS for i in range(n)]
        correct = (rng.uniform(size=len(ids)) < p).astype(int).tolist()
        out.append(
            {
                "seed": s,
                "ids": ids,
                "domains": [d for d in DOMAINS for _ in range(n)],
                "correct": correct,
                "accuracy_by_iteration": [{"average": 0.3}, {"average": float(np.mean(correct))}],
                "responses_scored": 100,
                "wall_time_s": 1.0,
                "feedback": "pair_accuracy",
                "steps": [{"iteration": 0, "global_step": 1, "arms": [0, 1], "domains": list(DOMAINS)}],
            }
        )
    return out


def _results(methods: dict[str, float], seeds: int = 5, crossed: bool = False):
    main = {m: _runs(p, seeds, crossed=crossed, salt=k) for k, (m, p) in enumerate(methods.items())}
    sft = _runs(0.3, seeds, crossed=crossed, salt=99)
    data = {
        s: SimpleNamespace(
            sft={k: sft[s][k] for k in ("ids", "domains", "correct")},
            agreement={"agree": np.eye(3).tolist(), "total": np.ones((3, 3)).tolist()},
        )
        for s in range(seeds)
    }
    cfg = SimpleNamespace(settings=DemoSettings(), n_boot=300, analysis_methods=[], noise_rm="all")
    return build_results(cfg, {"main": main}, data, RMS, wall_time_s=1.0), main


def test_seed_item_matrices_align_items_and_tell_the_design():
    nested, crossed = _runs(0.5, 3), _runs(0.5, 3, crossed=True)
    (m,), design = A.seed_item_matrices([nested])
    assert design == "nested" and m.shape == (3, 40)
    assert m[1].tolist() == nested[1]["correct"]
    (m, m2), design = A.seed_item_matrices([crossed, crossed], "count")
    assert design == "crossed" and m.shape == (3, 20) and np.array_equal(m, m2)
    assert m[2].tolist() == crossed[2]["correct"][20:]
    ragged = _runs(0.5, 2)
    ragged[1] = {**ragged[1], **{k: ragged[1][k][:-1] for k in ("ids", "correct", "domains")}}  # one item fewer
    assert A.seed_item_matrices([ragged]) is None


def test_paired_test_primary_is_the_hierarchical_bootstrap_with_named_tests():
    """The primary numbers are hierarchical_bootstrap on the (seed, item) grid built here by hand;
    5 seeds cannot make a signed-rank test over seeds significant (min p 2/32 = 0.0625)."""
    a, b = _runs(0.6, 5, salt=1), _runs(0.4, 5, salt=2)
    v = A.paired_test(a, b, n_boot=2000)
    ref = hierarchical_bootstrap(
        np.array([r["correct"] for r in a], float),
        np.array([r["correct"] for r in b], float),
        n_boot=2000,
        design="nested",
    )
    assert v["test"] == HIERARCHICAL_TEST and v["design"] == "nested" and v["n_seeds"] == 5
    for k_v, k_ref in (("diff", "mean_diff"), ("ci_low", "ci_low"), ("ci_high", "ci_high"), ("p_value", "p_value")):
        assert v[k_v] == pytest.approx(ref[k_ref], abs=1e-12)
    assert v["seeds_wilcoxon_note"] == "n/a (5 seeds: min p 0.0625)"
    assert "p_note" not in v and v["n"] == 200 and "p_wilcoxon" in v and len(v["ci_item"]) == 2


def test_report_with_random_and_oracle_has_the_headroom_column():
    """oracle's own share is (o - r) / (o - r) = 1 in every draw and random's 0, whatever the draw;
    the method in between gets headroom_share on the same grids."""
    res, main = _results({"laser": 0.5, "random": 0.3, "oracle": 0.8, "single:r2": 0.35})
    assert res["methods"]["oracle"]["headroom"]["share"] == pytest.approx(1.0)
    assert res["methods"]["oracle"]["headroom"]["ci_low"] == pytest.approx(1.0)
    assert res["methods"]["random"]["headroom"]["share"] == pytest.approx(0.0)
    assert res["methods"]["random"]["headroom"]["ci_high"] == pytest.approx(0.0)
    grid = lambda m: np.array([r["correct"] for r in main[m]], float)  # noqa: E731
    ref = headroom_share(grid("laser"), grid("random"), grid("oracle"), design="nested")
    got = res["methods"]["laser"]["headroom"]
    assert got["share"] == pytest.approx(ref["share"]) and got["ci_low"] == pytest.approx(ref["ci_low"])
    assert "headroom" in res["sft"] and res["oracle_vs_random"]["test"] == HIERARCHICAL_TEST

    table = format_table(res)
    assert "headroom % [CI]" in table and "oracle - random:" in table
    assert f"p: {HIERARCHICAL_TEST}" in table
    oracle_row = next(line for line in table.splitlines() if line.startswith("oracle "))
    assert "100 [100, 100]" in oracle_row
    md = render(res)
    assert "## Headroom captured" in md and f"p: {HIERARCHICAL_TEST}" in md
    assert "p: Wilcoxon over per-seed accuracies" in md and "n/a (5 seeds: min p 0.0625)" in md
    assert "two-level bootstrap over seeds and items" in md


def test_report_without_oracle_has_no_headroom_column():
    res, _ = _results({"laser": 0.5, "random": 0.3})
    assert "oracle_vs_random" not in res and all("headroom" not in e for e in res["methods"].values())
    table = format_table(res)
    assert "headroom" not in table and "oracle - random" not in table
    assert "## Headroom captured" not in render(res)


def test_two_seeds_print_no_p_value_as_evidence():
    """With 2 seeds the seed-to-seed variance is hardly estimated: the p column says n/a and the
    reason is printed below the table; the markdown cell carries the reason."""
    res, _ = _results({"laser": 0.6, "random": 0.3}, seeds=2)
    v = res["methods"]["random"]["vs_laser"]
    assert v["p_note"].startswith("n/a (2 seeds")
    table = format_table(res)
    row = next(line for line in table.splitlines() if line.startswith("random "))
    assert "n/a*" in row and f"* {v['p_note']}" in table
    assert v["p_note"] in render(res)


def test_crossed_test_set_and_a_user_style_result():
    """A user's set-up has one test set for every seed (crossed) and no settings/plots; the
    terminal table still works."""
    res, _ = _results({"laser": 0.6, "random": 0.4}, seeds=3, crossed=True)
    assert res["methods"]["random"]["vs_laser"]["design"] == "crossed"
    user = {k: res[k] for k in ("seeds", "rms", "domains", "sft", "methods", "selection")}
    assert "laser - m" in format_table(user)


def test_step_cost_table_divides_by_laser_with_the_same_placement():
    from laser.bench.compare.markdown import step_cost_table

    def m(step, score):
        return {"step_s": step, "phases": {"score": score}, "peak_bytes": 2**20 * 100}

    sc = {
        "k": 4,
        "size": "s",
        "dtype": "float32",
        "device": "cpu",
        "memory_measure": "RSS",
        "methods": {
            "linucb": m(0.2, 0.02),
            "score_ensemble": m(0.3, 0.08),
            "linucb/offload": m(0.4, 0.03),
            "score_ensemble/offload": m(0.5, 0.1),
        },
    }
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ") for line in step_cost_table(sc) if line.startswith("| ")
    }
    assert rows["score_ensemble"][3] == "1.50"  # 0.3 / 0.2
    assert rows["score_ensemble/offload"][3] == "1.25"  # 0.5 / 0.4, not / 0.2
    assert step_cost_table(None) == []


def test_paired_tests_use_laser_reliability_when_laser_is_listed_by_that_name():
    """On the embedded benchmark `laser` runs as `laser:reliability`; a comparison that lists the
    method by that name still gets the paired "LASeR against each baseline" tests, and they equal
    the ones computed with the same runs named `laser` (same resampling seeds)."""
    named, _ = _results({"laser:reliability": 0.6, "random": 0.4}, seeds=3)
    plain, _ = _results({"laser": 0.6, "random": 0.4}, seeds=3)
    v, w = named["methods"]["random"]["vs_laser"], plain["methods"]["random"]["vs_laser"]
    assert "vs_laser" not in named["methods"]["laser:reliability"]
    assert v["n"] == w["n"] > 0 and v["diff"] == pytest.approx(w["diff"]) and v["diff"] > 0
    assert "## LASeR against each baseline" in render(named)
