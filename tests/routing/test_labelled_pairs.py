"""Labelled preference pairs (laser/routing/labelled.py): the JSONL loader's errors, the one
validator, the scoring (once per RM, failures masked, several processes), and the training loop
with ``selector.kwargs.labelled_pairs`` on the embedded benchmark (no anchor)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from laser.routing.labelled import (
    LabelledPairsError,
    add_labelled_pairs,
    check_labelled,
    labelled_pairs_of,
    load_labelled_pairs,
)


def write_lines(path, lines: list) -> str:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


PAIR = {"prompt": "p", "chosen": "good", "rejected": "bad"}


# ----- the loader ---------------------------------------------------------------------------
def test_loader_groups_pairs_in_file_order_with_the_default_group(tmp_path):
    path = write_lines(
        tmp_path / "pairs.jsonl",
        [{**PAIR, "group": "math"}, "", {**PAIR, "chosen": "g2", "extra": 1}, {**PAIR, "group": "math", "prompt": "q"}],
    )
    assert load_labelled_pairs(path, default_group="all") == {
        "math": [("p", "good", "bad"), ("q", "good", "bad")],
        "all": [("p", "g2", "bad")],
    }
    assert load_labelled_pairs(path, default_group="")[""] == [("p", "g2", "bad")]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "p", "chosen": "a"', r"pairs.jsonl:2: invalid JSON"),
        ('["p", "a", "b"]', r"pairs.jsonl:2: expected a JSON object with prompt, chosen, rejected, got list"),
        ({"prompt": "p", "chosen": "a"}, r"pairs.jsonl:2: field 'rejected' is missing"),
        ({"chosen": "a", "rejected": "b"}, r"pairs.jsonl:2: field 'prompt' is missing"),
        ({**PAIR, "chosen": 3}, r"pairs.jsonl:2: field 'chosen' must be a string, got int"),
        ({**PAIR, "group": ["math"]}, r"pairs.jsonl:2: field 'group' must be a string, got list"),
        ({**PAIR, "rejected": "good"}, r"pairs.jsonl:2: field 'rejected' equals 'chosen'"),
    ],
)
def test_loader_names_file_line_and_field_of_each_kind_of_bad_line(tmp_path, line, message):
    path = write_lines(tmp_path / "pairs.jsonl", [PAIR, line, PAIR])
    with pytest.raises(LabelledPairsError, match=message) as info:
        load_labelled_pairs(path)
    assert len(info.value.problems) == 1  # the good lines 1 and 3 raise nothing


def test_loader_reports_every_bad_line_at_once_and_an_empty_or_missing_file(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", ["{", {"prompt": 1, "chosen": "a", "rejected": "a"}])
    with pytest.raises(LabelledPairsError) as info:
        load_labelled_pairs(path)
    assert [p.split(": ", 1)[0].rsplit(":", 1)[1] for p in info.value.problems] == ["1", "2"]
    assert "field 'prompt' must be a string" in str(info.value)
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(LabelledPairsError, match=r"empty.jsonl: no labelled pair \(the file is empty\)"):
        load_labelled_pairs(tmp_path / "empty.jsonl")
    with pytest.raises(LabelledPairsError, match=r"nope.jsonl: cannot read the labelled pairs"):
        load_labelled_pairs(tmp_path / "nope.jsonl")


def test_one_validator_for_the_mapping_form():
    assert check_labelled({"a": [("p", "x", "y")]}) == []
    assert check_labelled([("p", "x", "y")]) == [
        "labelled_pairs must map a group to [(prompt, chosen, rejected), ...], got list"
    ]
    (msg,) = check_labelled({"a": [("p", "x", "y"), ("p", "x", "x"), ("p", 1, "y")], "b": [("p", "x")]})
    assert msg.startswith("labelled_pairs['a'][1], labelled_pairs['a'][2], labelled_pairs['b'][0]: ")
    assert check_labelled({"a": "pxy"}) == ["labelled_pairs['a']: expected a list of pairs, got str"]
    assert check_labelled({"a": []}) == ["labelled_pairs: no labelled pair"]
    with pytest.raises(LabelledPairsError, match=r"labelled_pairs\['a'\]\[0\]"):
        labelled_pairs_of({"a": [("p", "x", "x")]})
    assert labelled_pairs_of({"a": [["p", "x", "y"]], "b": []}) == {"a": [("p", "x", "y")]}


# ----- the scoring --------------------------------------------------------------------------
class Table:
    """An RM scoring from a table (response -> score); ``fail``: raises on every call."""

    def __init__(self, name, table, fail=False):
        self.name, self.table, self.fail, self.calls = name, table, fail, []

    def score(self, prompts, responses):
        self.calls.append(list(responses))
        if self.fail:
            raise RuntimeError("server down")
        return np.array([self.table.get(r, np.nan) for r in responses], float)


def core_of(rms, coll=None):
    from laser.routing import Router
    from laser.routing.collectives import Local
    from laser.routing.reliability import ReliabilityRouter
    from laser.routing.strategies.reliability import ReliabilityStrategy

    strategy = ReliabilityStrategy([rm.name for rm in rms], ReliabilityRouter(len(rms)))
    return Router(strategy, rms, feedback=None, collectives=coll or Local())


def test_every_rm_up_scores_each_pair_once_a_failing_rm_is_masked_and_abstains():
    """Votes are sign(score(chosen) - score(rejected)) per RM: "up" prefers a, "down" b, "tie" scores
    both 1 (abstains), "nan" cannot score b (abstains); "broken" raises: masked, its row 0."""
    table = {"up": {"a": 2, "b": 1, "c": 0}, "down": {"a": 0, "b": 1, "c": 2}, "tie": {"a": 1, "b": 1, "c": 1}}
    rms = [Table(n, t) for n, t in table.items()] + [Table("nan", {"a": 1, "c": 1}), Table("broken", {}, fail=True)]
    core = core_of(rms)
    pairs = {"g": [("p", "a", "b"), ("q", "b", "c")], "h": [("p", "c", "a")]}
    summary = add_labelled_pairs(core, pairs)
    groups = core.strategy.selector.groups_
    assert groups["g"].labelled == [[1, 1], [-1, -1], [0, 0], [0, 0], [0, 0]]
    assert groups["h"].labelled == [[-1], [1], [0], [0], [0]]
    assert [len(c) for rm in rms[:4] for c in rm.calls] == [4, 2] * 4  # one call per group and RM: 2 L texts
    assert rms[4].calls == [["a", "b", "b", "c"]]  # tried once, then masked: never asked for group h
    assert 4 in core.pool.down and core.pool.responses_scored.tolist() == [6, 6, 6, 6, 4]
    assert summary["pairs"] == {"g": 2, "h": 1}
    assert summary["scored"] == {"up": 6, "down": 6, "tie": 6, "nan": 6, "broken": 4}
    assert list(summary["failed"]) == ["broken"] and "server down" in summary["failed"]["broken"]


def test_every_rm_failing_on_the_pairs_is_all_rms_down_after_the_broadcast():
    """Every RM raises: each is tried once; the error is raised once the failures are shared (every
    process masks together), naming every RM."""
    from laser.routing.pool import AllRewardModelsDown

    sent = []
    rms = [Table(n, {}, fail=True) for n in ("x", "y", "z")]
    coll = SimpleNamespace(is_main=True, rank=0, world=2, broadcast=lambda obj: sent.append(obj) or obj)
    with pytest.raises(AllRewardModelsDown, match="x.*y.*z"):
        add_labelled_pairs(core_of(rms, coll), {"g": [("p", "a", "b")], "h": [("q", "a", "b")]})
    assert len(sent) == 1 and sorted(sent[0][1]) == [0, 1, 2]  # broadcast before raising
    assert [len(rm.calls) for rm in rms] == [1, 1, 1]


def test_a_non_main_process_scores_nothing_and_takes_the_main_process_votes():
    """The second rank of two: no RM call, the broadcast votes (what rank 0 sent) added, an RM that
    failed on rank 0 masked here too (a stand-in for the collectives: its broadcast returns rank 0's)."""
    rms = [Table(n, {"a": 1, "b": 0}) for n in ("x", "y", "z")]
    sent = ({"g": [[1], [-1], [0]]}, {2: "RewardModelError: z: boom"}, {0: 2, 1: 2, 2: 2})
    coll = SimpleNamespace(is_main=False, rank=1, world=2, broadcast=lambda obj: sent)
    core = core_of(rms, coll)
    summary = add_labelled_pairs(core, {"g": [("p", "a", "b")]})
    assert all(not rm.calls for rm in rms) and core.pool.responses_scored.tolist() == [0, 0, 0]
    assert core.strategy.selector.groups_["g"].labelled == [[1], [-1], [0]]
    assert core.pool.down == {2} and summary["failed"] == {"z": "RewardModelError: z: boom"}


# ----- the training loop on the embedded benchmark ------------------------------------------
class Logged:
    """A demo RM that records every (prompt, response) it scores."""

    def __init__(self, rm, calls: list):
        self.rm, self.name, self.calls = rm, rm.name, calls

    def score(self, prompts, responses):
        self.calls += [(self.name, p, r) for p, r in zip(prompts, responses, strict=True)]
        return self.rm.score(prompts, responses)


def benchmark_run(tmp_path, iterations: int, calls: list, pairs_file: str, **selector):
    """The embedded benchmark (v2, 2 training prompts per domain, its 5 demo RMs, no anchor), on the
    tiny policy whose samples are replaced by the benchmark's worked responses (one right, three
    wrong per prompt) so the probes' pairs differ in their answers and vote."""
    from helpers import make_tiny_policy

    from laser.bench.rms import make_demo_rms
    from laser.bench.tasks import make_benchmark, worked_response, wrong_response
    from laser.config import load_config
    from laser.policy.model import Samples
    from laser.training.loop import Trainer

    examples = make_benchmark(2, seed=0, split="train", version="v2")
    by_prompt = {ex.prompt: ex for ex in examples}
    policy = make_tiny_policy()

    def sample(prompts, n, temperature, top_p, max_new_tokens, seed):
        rng = np.random.default_rng(seed)
        texts = [worked_response(p) if j == 0 else wrong_response(by_prompt[p], rng) for p in prompts for j in range(n)]
        ids = [policy.tokenizer(t, add_special_tokens=False)["input_ids"] + [policy.eos_id] for t in texts]
        index = [i for i in range(len(prompts)) for _ in range(n)]
        return Samples(index, texts, ids, policy.encode_prompts(prompts))

    policy.sample = sample
    rms = [Logged(rm, calls) for rm in make_demo_rms(seed=0, version="v2")]
    kwargs = {"warmup": 2, "min_votes": 2, "labelled_pairs": pairs_file, **selector}
    cfg = load_config(
        data={
            "output_dir": str(tmp_path / "run"),
            "seed": 1,
            "rewards": [{"name": rm.name, "type": "length"} for rm in rms],
            "selector": {"name": "reliability", "kwargs": kwargs},
            "train": {"iterations": iterations, "batch_size": 4, "n_samples": 4, "max_new_tokens": 8},
        },
        require_data=False,
    )
    return Trainer(cfg, policy, rms, examples, show_progress=False)


def labelled_file(tmp_path, per_domain: int = 2, extra_group: str | None = None) -> tuple[str, list]:
    """Pairs on the benchmark's test prompts (never trained on): the worked response first, a wrong one second."""
    from laser.bench.tasks import make_benchmark, worked_response, wrong_response

    rng, rows = np.random.default_rng(7), []
    for ex in make_benchmark(per_domain, seed=0, split="test", version="v2"):
        rows.append({"prompt": ex.prompt, "chosen": worked_response(ex.prompt), "rejected": wrong_response(ex, rng)})
        rows[-1]["group"] = ex.domain
    if extra_group:
        rows.append({"prompt": "2+2=", "chosen": "4", "rejected": "5", "group": extra_group})
    return write_lines(tmp_path / "pairs.jsonl", rows), rows


def test_loop_scores_the_labelled_pairs_once_they_fix_the_sign_and_a_resume_does_not_rescore(tmp_path, caplog):
    """No anchor: every group's fit takes its sign from the labelled pairs (``sign == "labels"`` in
    the step log and the router state). Each RM scores each labelled text exactly once (2 L = 16
    responses per RM, L = 2 pairs x 4 domains), before the first batch; the votes kept are
    sign(score(chosen) - score(rejected)) of each demo RM, recomputed here. A resumed second
    iteration scores none of them again and keeps the L votes per RM."""
    from laser.bench.rms import make_demo_rms

    path, rows = labelled_file(tmp_path, extra_group="nowhere")
    calls: list = []
    with caplog.at_level(logging.INFO, logger="laser"):
        tr = benchmark_run(tmp_path, 1, calls, path)
        summary = tr.run()
    assert "'nowhere' never appear in the prompts' groups" in caplog.text
    assert "labelled pairs: 9 in 5 group(s)" in caplog.text
    texts = {(r["prompt"], r["chosen"]) for r in rows} | {(r["prompt"], r["rejected"]) for r in rows}
    labelled = [c for c in calls if (c[1], c[2]) in texts]
    names = tr.pool.names
    assert sorted(labelled) == sorted((n, p, r) for n in names for p, r in texts)  # each RM, each text, once
    first_batch = next(i for i, c in enumerate(calls) if (c[1], c[2]) not in texts)
    assert first_batch == len(labelled)  # all before the first batch
    assert summary["responses_scored"] == [sum(c[0] == n for c in calls) for n in names]

    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    signs = {g: r["routing"][g]["sign"] for r in log for g in r["routing"] if r["routing"][g]["acc"] is not None}
    groups = tr.strategy.selector.groups_
    assert set(signs) == {"arith", "compare", "choice", "count"} and set(signs.values()) == {"labels"}
    assert {g: groups[g].sign_source for g in signs} == dict.fromkeys(signs, "labels")
    for g, st in groups.items():
        if g == "nowhere":
            continue
        mine = [r for r in rows if r["group"] == g]
        expected = [
            [int(np.sign(np.subtract(*rm.score([r["prompt"]] * 2, [r["chosen"], r["rejected"]])))) for r in mine]
            for rm in make_demo_rms(seed=0, version="v2")
        ]
        assert st.labelled == expected, g

    calls.clear()
    resumed = benchmark_run(tmp_path, 2, calls, path)
    summary2 = resumed.run()
    assert not [c for c in calls if (c[1], c[2]) in texts]  # the checkpoint's router holds the votes
    assert resumed.strategy.selector.groups_["arith"].labelled == tr.strategy.selector.groups_["arith"].labelled
    assert [a - b for a, b in zip(summary2["responses_scored"], summary["responses_scored"], strict=True)] == [
        sum(c[0] == n for c in calls) for n in names
    ]


def test_config_reads_the_file_at_load_naming_key_file_and_line(tmp_path):
    from laser.config import ConfigError, load_config

    bad = write_lines(tmp_path / "bad.jsonl", [PAIR, {"prompt": "p", "chosen": "x"}])
    rewards = [{"name": n, "type": "length"} for n in ("a", "b", "c")]

    def load(**kwargs):
        data = {"rewards": rewards, "selector": {"name": "reliability", "kwargs": kwargs}}
        return load_config(data=data, require_data=False)

    with pytest.raises(
        ConfigError, match=r"selector.kwargs.labelled_pairs: .*bad.jsonl:2: field 'rejected' is missing"
    ):
        load(labelled_pairs=bad)
    with pytest.raises(ConfigError, match=r"selector.kwargs.labelled_pairs: .*missing.jsonl: cannot read"):
        load(labelled_pairs=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match=r"selector.kwargs.labelled_pairs: needs groups from the prompts' group"):
        load(labelled_pairs=write_lines(tmp_path / "ok.jsonl", [PAIR]), groups="kmeans", cluster_context="encoder")
    with pytest.raises(ConfigError, match=r"selector.kwargs.labelled_pairs: the path of a JSONL file"):
        load(labelled_pairs=3)
    cfg = load(labelled_pairs=str(tmp_path / "ok.jsonl"))
    from laser.routing.strategies import make_strategy

    assert make_strategy(cfg, ["a", "b", "c"], lambda: 1).labelled_pairs == {"": [("p", "good", "bad")]}


@pytest.mark.slow
def test_two_processes_score_the_pairs_on_the_main_one_and_hold_the_same_router(tmp_path):
    """The loop test's run as 2 gloo processes (labelled_two_process_run.py): rank 0 scores every
    labelled text once per RM, rank 1 none; both ranks hold the same router, whose labelled votes
    are those of one process (the same run in this process)."""
    import os
    import subprocess
    from pathlib import Path

    from helpers import two_cpu_processes

    script = Path(__file__).with_name("labelled_two_process_run.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [*two_cpu_processes(), str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["router"] == r1["router"]
    assert len(r0["labelled_calls"]) == 5 * 16 and r1["labelled_calls"] == []
    (tmp_path / "one").mkdir()
    path, _ = labelled_file(tmp_path / "one")
    one = benchmark_run(tmp_path / "one", 1, [], path)
    one.score_labelled()
    assert r0["labelled"] == {g: st.labelled for g, st in one.strategy.selector.groups_.items()}
    assert set(r0["signs"].values()) == {"labels"}
