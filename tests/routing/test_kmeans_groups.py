"""k-means groups of the reliability router (laser.routing.kmeans, ``selector.kwargs.groups: kmeans``)."""

import json

import numpy as np
import pytest

from laser.routing.kmeans import ContextGroups, kmeans, kmeans_pp, lloyd, prompt_key, purity
from laser.routing.reliability import ReliabilityRouter


def blobs(n_per=20, k=4, d=6, spread=0.05, seed=0):
    """k well-separated Gaussian blobs (centres 3 units apart on the axes) and their labels."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * np.eye(d)[:k]
    x = np.vstack([c + spread * rng.standard_normal((n_per, d)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


def test_lloyd_equals_scipy_kmeans2_from_the_same_start():
    """Lloyd's iterations from one k-means++ start == scipy.cluster.vq.kmeans2(minit='matrix') from
    that start (an independent implementation), on overlapping blobs where the iterations matter."""
    vq = pytest.importorskip("scipy.cluster.vq")
    x, _ = blobs(n_per=40, k=3, spread=1.2, seed=3)
    start = kmeans_pp(x, 3, np.random.default_rng(1))
    centres, labels, _ = lloyd(x, start, iters=300)
    ref_c, ref_l = vq.kmeans2(x, start.copy(), iter=300, minit="matrix")
    assert np.array_equal(labels, ref_l)
    np.testing.assert_allclose(centres, ref_c, atol=1e-10)


def test_kmeans_recovers_separated_blobs_and_purity_is_the_majority_share():
    x, truth = blobs()
    _, labels = kmeans(x, 4, seed=0)
    assert purity(labels, truth) == 1.0
    # purity by hand: clusters {0,0,1} and {1,1,1,2}: majorities 2 + 3 of 7 rows
    assert purity([0, 0, 0, 1, 1, 1, 1], ["a", "a", "b", "b", "b", "b", "c"]) == pytest.approx(5 / 7)
    with pytest.raises(ValueError, match="k = 5"):
        kmeans(x[:4], 5)


def test_context_groups_refit_as_prompts_double_and_names_follow_the_earliest_member():
    """Prompts of 2 blobs arrive 4 at a time, each batch from one blob: the first fit (4 rows, all
    one blob) is refitted at 8 and 16 distinct prompts; after that the two blobs are two groups,
    named by the blob seen first (c0), and a second pass changes nothing."""
    x, truth = blobs(n_per=8, k=2)
    order = np.r_[0:4, 8:12, 4:8, 12:16]  # blob 0, blob 1, blob 0, blob 1
    prompts = [f"p{i}" for i in range(16)]
    g = ContextGroups(2, seed=0)
    refits = []
    for j in range(0, 16, 4):
        idx = order[j : j + 4]
        _, refit = g.assign([prompts[i] for i in idx], x[idx])
        refits.append(refit)
    assert refits == [True, True, False, True]  # fits at 4, 8 and 16 distinct prompts
    names = [g.group_of_key(prompt_key(p)) for p in prompts]
    assert names == ["c0" if t == 0 else "c1" for t in truth]
    again, refit = g.assign(prompts, [None] * 16)  # seen prompts need no context
    assert again == names and not refit
    g2 = ContextGroups(2, seed=0)
    g2.load_state_dict({k: np.array(v) for k, v in g.state_dict().items()})
    assert g2.assign(prompts, [None] * 16) == (names, False)
    with pytest.raises(ValueError, match="no context for a new prompt"):
        g.assign(["unseen"], [None])


def vote_matrix(acc, n, rng):
    y = rng.choice([-1, 1], n)
    return np.where(rng.random((len(acc), n)) < np.asarray(acc)[:, None], y, -y).astype(np.int8)


def test_regroup_equals_observing_into_the_final_groups():
    """Votes first filed under wrong groups, then regrouped == the same votes observed directly
    under the right groups (same windows, same fits)."""
    rng = np.random.default_rng(0)
    accs = {"a": [0.95, 0.1, 0.75, 0.5, 0.45], "b": [0.1, 0.95, 0.75, 0.5, 0.45]}
    records = [(g, vote_matrix(accs[g], 24, rng)) for g in ["a", "b"] * 8]
    direct, moved = ReliabilityRouter(5, anchor=2, seed=0), ReliabilityRouter(5, anchor=2, seed=0)
    for g, v in records:
        direct.observe(g, v)
        moved.observe("all", v)  # before the clusters were known: one group
    for g in accs:
        direct.refit(g)
    moved.refit("all")
    moved.regroup([(g, v, "all") for g, v in records])
    assert set(moved.groups_) == {"a", "b"}
    for g in accs:
        assert moved.groups_[g].votes == direct.groups_[g].votes
        assert moved.groups_[g].acc == pytest.approx(direct.groups_[g].acc)
        assert moved.groups_[g].probes == 8
    assert moved.best("a") == (0, "estimate") and moved.best("b") == (1, "estimate")


# ----- the strategy on a tiny training run ----------------------------------------------------
def kmeans_setup(tmp_path, iterations=2, **kwargs):
    from helpers import make_tiny_policy

    from laser.config import load_config
    from laser.rewards.rules import LengthRM, RegexRM
    from laser.tasks.base import Example

    examples = [Example(id=f"p{i}", prompt=f"{i}+{i}=", answer=str(2 * i), task="gsm8k") for i in range(8)]
    specs = [
        {"name": "ones", "type": "regex", "pattern": "1"},
        {"name": "long", "type": "length"},
        {"name": "twos", "type": "regex", "pattern": "2"},
    ]
    sel = {"anchor": "long", "warmup": 2, "min_votes": 2, "groups": "kmeans", "n_groups": 2, **kwargs}
    cfg = load_config(
        data={
            "output_dir": str(tmp_path),
            "seed": 3,
            "rewards": specs,
            "selector": {"name": "reliability", "kwargs": sel},
            "train": {
                "iterations": iterations,
                "batch_size": 4,
                "n_samples": 6,
                "max_new_tokens": 10,
                "lr": 1e-2,
                "pairs_per_prompt": 3,
            },
        },
        require_data=False,
    )
    return cfg, make_tiny_policy(), [RegexRM("ones", "1"), LengthRM("long"), RegexRM("twos", "2")], examples


def test_kmeans_strategy_groups_by_the_runs_context_and_resumes_exactly(tmp_path):
    """cluster_context=run: the policy's last-token states are clustered into c0/c1 (the log's
    routing keys); one iteration + a resumed second == two uninterrupted iterations, clusters
    and kept votes included."""
    from laser.training.loop import Trainer

    cfg, policy, rms, ex = kmeans_setup(tmp_path / "ref", cluster_context="run")
    ref = Trainer(cfg, policy, rms, ex, show_progress=False)
    assert ref.strategy.needs_context
    ref.run()
    log = [json.loads(line) for line in open(tmp_path / "ref" / "log.jsonl")]
    assert {g for r in log for g in r["routing"]} <= {"c0", "c1"} and any(r["routing"] for r in log)
    cfg1, policy1, rms1, _ = kmeans_setup(tmp_path / "cut", iterations=1, cluster_context="run")
    Trainer(cfg1, policy1, rms1, ex, show_progress=False).run()
    cfg2, policy2, rms2, _ = kmeans_setup(tmp_path / "cut", iterations=2, cluster_context="run")
    resumed = Trainer(cfg2, policy2, rms2, ex, show_progress=False)
    resumed.run()
    arms = [
        [json.loads(line)["prompt_arms"] for line in open(p / "log.jsonl")]
        for p in (tmp_path / "ref", tmp_path / "cut")
    ]
    assert arms[0] == arms[1]
    a, b = ref.strategy.state_dict(), resumed.strategy.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"groups": "tree"}, "is not 'column' or 'kmeans'"),
        ({"cluster_context": "x"}, "is not 'auto', 'encoder' or 'run'"),
        ({"n_groups": 0}, "positive integer"),
        ({"groups": "column", "n_groups": 3}, "apply only with groups: kmeans"),
    ],
)
def test_grouping_config_errors(tmp_path, kwargs, match):
    """The strategy checks its own kwargs when the config loads (laser.routing.strategies.check_strategy),
    so a bad grouping option is a ConfigError before any model is built."""
    from laser.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        kmeans_setup(tmp_path, **kwargs)


def test_regroup_passes_the_sign_only_to_the_group_that_inherits_most_of_the_old_one():
    """The anchor (RM 2) is at chance in both new groups, so only sign continuity can orient their
    fits. The old group's trusted fit says RM 0 is right: group "a" (10 of the old group's 13
    prompts) inherits it and routes to RM 0 by continuity; group "b" (3 prompts, carved out of
    the old group) inherits nothing and falls back to the anchor."""
    from laser.routing.reliability import GroupFit

    rng = np.random.default_rng(1)
    acc = [0.95, 0.1, 0.5, 0.7, 0.65]
    records = [(g, vote_matrix(acc, 24, rng), "old") for g in ["a"] * 10 + ["b"] * 3]
    r = ReliabilityRouter(5, anchor=2, seed=0)
    r.groups_["old"] = GroupFit(acc=[0.9, 0.2, 0.6, 0.6, 0.6], ok=True, reason="")
    r.regroup(records)
    assert r.groups_["a"].sign_source == "continuity" and r.best("a") == (0, "estimate")
    arm, status = r.best("b")
    assert arm == 2 and "near chance" in status
