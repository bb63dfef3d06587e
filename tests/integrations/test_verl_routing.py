"""The verl reward manager's per-row work, in-process and without verl or Ray.

``RoutedScoring.score_row`` is what ``LaserRewardManager.run_single`` runs. The rows here are built
like verl's: a one-row batch whose item has ``batch["prompts"]`` (left-padded), ``batch["responses"]``
(right-padded), ``batch["attention_mask"]`` over both, and ``non_tensor_batch`` with ``uid``,
``data_source`` and ``reward_model.ground_truth``. The only stand-in is that container (verl's
DataProto); the tokenizer is a real one, the router is the real :class:`SharedRouter` called
directly instead of through Ray. tests/integrations/test_verl_ray.py runs the same code in verl's real
RewardLoopManager with Ray.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from laser.bench.policy import make_char_tokenizer
from laser.integrations.grouped import GroupRouter, SharedRouter
from laser.integrations.routing_spec import RoutingSpec, load_spec, row_task
from laser.integrations.verl import RoutedScoring
from laser.routing import AllRewardModelsDown

try:
    from tests.verl_rms import _error, read_log, rm_spec
except ImportError:  # pytest's rootdir import mode puts tests/ itself on sys.path
    from verl_rms import _error, read_log, rm_spec

TOK = make_char_tokenizer()
OFFSETS = (0, 1, 3, 7)  # each prompt's 4 responses: the truth, then wrong by 1, 3 and 7


class Rows:
    """verl's one-row DataProto as ``run_single`` reads it: ``len(data)`` and ``data[i]``."""

    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 1

    def __getitem__(self, i):
        assert i == 0
        return self.item


def make_row(
    prompt: str, response: str, uid: str, gold: str | None = None, data_source: str = "openai/gsm8k", width: int = 40
) -> Rows:
    p = TOK(prompt, add_special_tokens=False)["input_ids"]
    r = TOK(response, add_special_tokens=False)["input_ids"] + [TOK.eos_token_id]
    prompts = torch.tensor([TOK.pad_token_id] * (width - len(p)) + p)
    responses = torch.tensor(r + [TOK.pad_token_id] * (width - len(r)))
    mask = torch.tensor([0] * (width - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width - len(r)))
    extra = {"uid": uid, "data_source": data_source}
    if gold is not None:
        extra["reward_model"] = {"ground_truth": gold, "style": "rule"}
    return Rows(
        SimpleNamespace(
            batch={"prompts": prompts, "responses": responses, "attention_mask": mask}, non_tensor_batch=extra
        )
    )


def group_rows(i: int, gold: bool = True, data_source: str = "openai/gsm8k") -> list[Rows]:
    a, b = 10 + i % 7, 3 + i % 5
    prompt = f"What is {a}+{b}?"
    return [
        make_row(prompt, f"The answer is {a + b + d}.", f"u{i}", str(a + b) if gold else None, data_source)
        for d in OFFSETS
    ]


def scoring(tmp_path, names=("good", "bad"), monkeypatch=None, **router) -> RoutedScoring:
    router.setdefault("group_size", len(OFFSETS))
    specs, spec = load_spec({"rewards": [rm_spec(n) for n in names], "router": router})
    actor = SharedRouter(list(names), asdict(spec))
    return RoutedScoring(specs, spec, actor, TOK)


def run(scorer: RoutedScoring, rows: list[Rows]) -> list[dict]:
    async def all_rows():
        return [await scorer.score_row(r) for r in rows]

    return asyncio.run(all_rows())


@pytest.fixture
def rm_log(tmp_path, monkeypatch):
    path = tmp_path / "rm_calls.tsv"
    monkeypatch.setenv("LASER_VERL_RM_LOG", str(path))
    return path


def prompt_of(row: Rows) -> str:
    ids, mask = row.item.batch["prompts"], row.item.batch["attention_mask"][: len(row.item.batch["prompts"])]
    return TOK.decode(ids[mask.bool()], skip_special_tokens=True)


def interleaved(groups: list[list[Rows]]) -> list[Rows]:
    """Rows of consecutive groups interleaved, as verl's workers return them out of order."""
    out = []
    for a, b in zip(groups[::2], groups[1::2], strict=True):
        out += [x for pair in zip(a, b, strict=True) for x in pair]
    return out


def test_each_row_is_scored_by_its_groups_rm_only_and_the_router_learns_the_right_one(tmp_path, rm_log):
    """40 GSM8K-style groups, gold answers in reward_model.ground_truth. ``good`` ranks the true
    answer first (pair_accuracy of a group: 3 of its 6 ranked pairs put the right response over a
    wrong one, the other 3 compare two wrong ones: (3 * 1 + 3 * 0) / 6 = 0.5); ``bad`` ranks it last
    (-0.5). One RM call per row, all rows of a uid on one arm, and the bandit ends on ``good``."""
    scorer = scoring(tmp_path, selector="epsilon_greedy", selector_options={"epsilon": 0.1})
    groups = [group_rows(i) for i in range(40)]
    out = run(scorer, interleaved(groups))
    calls = read_log(rm_log)
    assert len(calls) == len(out) == 160  # exactly one RM call per row
    arms = {}
    for row, res, (name, _, response) in zip(interleaved(groups), out, calls, strict=True):
        uid = row.item.non_tensor_batch["uid"]
        arms.setdefault(uid, set()).add(res["reward_extra_info"]["laser_arm"])
        assert name == scorer.names[res["reward_extra_info"]["laser_arm"]]  # the chosen RM, no other
        assert response == TOK.decode(row.item.batch["responses"], skip_special_tokens=True)
        err = _error(prompt_of(row), response)  # |X - (A + B)|, computed here without the RMs
        assert res["reward_score"] == (-err if name == "good" else err)
    assert all(len(a) == 1 for a in arms.values())  # one arm per prompt group
    good_rows = [r for r in out if r["reward_extra_info"]["laser_arm"] == 0]
    assert sorted({r["reward_score"] for r in good_rows}) == [-7.0, -3.0, -1.0, 0.0]  # good's own scores
    stats = scorer.router.stats()
    assert stats["learned"] == 40 and stats["pending"] == 0
    assert sum(stats["counts"]) == 40  # one bandit update per finished group
    last = [next(iter(arms[f"u{i}"])) for i in range(30, 40)]
    assert last.count(0) >= 8, last  # epsilon 0.1 explores about 1 in 10 (x 1/2 picks bad)


def test_without_gold_the_majority_answer_teaches_and_chat_prompts_teach_nothing(tmp_path, rm_log):
    """No ground_truth: majority_pair_accuracy. The 4 answers differ, so each is its own
    majority candidate and the first (the truth, offset 0) is the majority (ties: first seen): the
    same sign as against gold. A data_source with no answer format (chat) is routed and scored but
    not learned from: the bandit's counts stay 0."""
    scorer = scoring(tmp_path)
    run(scorer, [r for i in range(6) for r in group_rows(i, gold=False)])
    stats = scorer.router.stats()
    assert stats["learned"] + stats["tied"] == 6 and sum(stats["counts"]) == 6
    chat = scoring(tmp_path)
    out = run(chat, [r for i in range(3) for r in group_rows(i, gold=False, data_source="lmsys/chat")])
    assert len(out) == 12 and chat.router.stats()["unlabelled"] == 3 and sum(chat.router.stats()["counts"]) == 0


def test_state_survives_a_restart_and_decides_like_the_uninterrupted_router(tmp_path, rm_log):
    """save_every=10: saves after groups 10, 20, 30. A new actor on the same state_dir resumes from
    the newest save with the same selector state, and routes 8 new prompts exactly as the first
    actor does. Negative control: an actor on an empty folder starts from zero counts."""
    state = tmp_path / "state"
    first = scoring(tmp_path, state_dir=str(state), save_every=10, selector="linucb")
    run(first, [r for i in range(30) for r in group_rows(i)])
    assert first.router.saves == 3 and sorted(p.name for p in state.iterdir()) == ["ckpt-00000020", "ckpt-00000030"]
    again = SharedRouter(first.names, asdict(first.spec))
    assert again.resumed_from is not None and again.resumed_from.name == "ckpt-00000030"
    a, b = first.router.router.core.selector.state_dict(), again.router.core.selector.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    prompts = [f"What is {x}+{x + 2}?" for x in range(40, 48)]
    assert [first.router.route(f"n{i}", p) for i, p in enumerate(prompts)] == [
        again.route(f"n{i}", p) for i, p in enumerate(prompts)
    ]
    fresh = SharedRouter(first.names, {**asdict(first.spec), "state_dir": str(tmp_path / "empty")})
    assert fresh.resumed_from is None and sum(fresh.stats()["counts"]) == 0 < sum(again.stats()["counts"])


def test_a_failing_rm_is_masked_and_its_rows_go_to_another(tmp_path, rm_log):
    scorer = scoring(tmp_path, names=("broken", "good"), selector="round_robin")
    out = run(scorer, group_rows(0))
    assert [r["reward_extra_info"]["laser_arm"] for r in out] == [1, 1, 1, 1]
    assert [r["reward_score"] for r in out] == [0.0, -1.0, -3.0, -7.0]
    assert [n for n, _, _ in read_log(rm_log)] == ["broken", "good", "good", "good", "good"]
    assert "broken" in scorer.router.stats()["down"]
    assert scorer.router.stats()["skipped"] == 0 and scorer.router.stats()["learned"] == 1
    dead = scoring(tmp_path, names=("broken", "unscorable"), selector="fixed", selector_options={"arm": 0})
    dead.router.router.fail("x", 1, "ConnectionError: down too")
    with pytest.raises(
        AllRewardModelsDown, match=r"every reward model is down: broken: .*ConnectionError.*; unscorable: "
    ):
        run(dead, group_rows(0)[:1])


def test_an_unscorable_response_is_an_error_unless_a_reward_is_configured(tmp_path, rm_log):
    scorer = scoring(tmp_path, names=("unscorable", "good"), selector="fixed", selector_options={"arm": 0})
    with pytest.raises(ValueError, match="reward model 'unscorable' could not score a response of prompt uid u0"):
        run(scorer, group_rows(0)[:1])
    lenient = scoring(
        tmp_path, names=("unscorable", "good"), selector="fixed", selector_options={"arm": 0}, unscorable=-1.0
    )
    assert [r["reward_score"] for r in run(lenient, group_rows(0))] == [-1.0] * 4


def test_load_spec_names_every_problem_at_once():
    bad = {
        "rewards": [rm_spec("good"), {"name": "x", "type": "nope"}],
        "bogus": 3,
        "router": {"selector": "best", "group_size": 1, "task": "poetry", "colour": "red", "unscorable": "zero"},
    }
    with pytest.raises(ValueError) as err:
        load_spec(bad)
    msg = str(err.value)
    for part in (
        "bogus: unknown top-level key",
        "rewards[1].type: 'nope'",
        "router.colour: unknown key",
        "router.selector: 'best'",
        "router.group_size: 1",
        "router.task: 'poetry'",
        "router.unscorable: 'zero'",
    ):
        assert part in msg, part
    specs, spec = load_spec({"rewards": [rm_spec("good"), rm_spec("bad")]}, group_size=8, state_dir="/ckpt")
    assert spec.group_size == 8 and spec.state_dir == "/ckpt" and len(specs) == 2
    assert isinstance(GroupRouter(["good", "bad"], spec).core.selector.state_dict(), dict)
    assert (row_task("auto", "openai/gsm8k"), row_task("auto", "lmsys/chat"), row_task("mmlu", "x")) == (
        "gsm8k",
        None,
        "mmlu",
    )
    assert RoutingSpec().feedback == "auto"


# ---------------------------------------------------------------- selector: reliability (label-free)
EXPERTS = ("alpha_expert", "beta_expert", "generalist", "noise")  # tests/verl_rms.py derives their accuracies


def domain_rows(i: int, gold: bool, data_source: str, repeat: bool = False) -> list[Rows]:
    """Group i of domain alpha (even i) or beta (odd i): prompt ``<domain>: What is A+B?``, a
    ``domain`` column, the 4 answers A+B+{0, 1, 3, 7}; ``repeat``: the second response repeats the
    first answer in other words (A+B+{0, 0, 3, 7})."""
    domain, a, b = ("alpha", "beta")[i % 2], 10 + i % 7, 3 + i % 5
    texts = [f"The answer is {a + b + d}." for d in OFFSETS]
    if repeat:
        texts[1] = f"Surely the answer is {a + b}."
    rows = [
        make_row(f"{domain}: What is {a}+{b}?", t, f"d{i}", str(a + b) if gold else None, data_source, width=48)
        for t in texts
    ]
    for r in rows:
        r.item.non_tensor_batch["domain"] = domain
    return rows


def reliability_scoring(tmp_path, **router) -> RoutedScoring:
    options = {"anchor": "generalist", "warmup": 8}
    return scoring(tmp_path, names=EXPERTS, selector="reliability", selector_options=options, **router)


def calls_per_row(rows: list[Rows], calls: list) -> list[list[str]]:
    """The RMs that scored each row, from the RM log: rows are scored one after another, so each
    row's calls are the next run of log lines with its response. Two consecutive rows never share
    a response here (within a group the answers differ; the next group's first answer A'+B' is never
    the last one's A+B+7, since A+B changes by +2, -3, -5 or -10 between groups)."""
    out, pos = [], 0
    for row in rows:
        response = TOK.decode(row.item.batch["responses"], skip_special_tokens=True)
        names = []
        while pos < len(calls) and calls[pos][2] == response and len(names) < len(EXPERTS):
            names.append(calls[pos][0])
            pos += 1
        out.append(names)
    assert pos == len(calls)
    return out


def test_reliability_learns_each_domains_best_rm_from_agreement_alone(tmp_path, rm_log):
    """80 GSM8K-style groups grouped by the ``domain`` column, alpha and beta alternating. Each
    domain's expert orders about 0.99 of the pairs, the other domain's expert about 0.01, the
    anchor (generalist) 0.83, noise 0.5 (tests/verl_rms.py): the label model must name each domain's
    expert, and the groups that are not probes must be scored by it alone. Votes: a probe group's
    pairs with different extracted answers: 6 for 4 distinct answers, 5 for group 0 whose two first
    responses give the same answer in other words (the rule of routing/reliability.py). The gold
    answers are not used: the same rows without them leave the same state."""
    scorer = reliability_scoring(tmp_path, group_key="domain")
    rows = [r for i in range(80) for r in domain_rows(i, True, "openai/gsm8k", repeat=i == 0)]
    out = run(scorer, rows)
    stats = scorer.router.stats()
    assert stats["rows"] == 320 and stats["pending"] == 0 and stats["learned"] + stats["routed"] == 80
    for domain, other in (("alpha", "beta"), ("beta", "alpha")):
        g = stats["groups"][domain]
        assert (g["rm"], g["status"], g["sign"]) == (f"{domain}_expert", "estimate", "anchor"), g
        acc = g["acc"]
        assert acc[f"{domain}_expert"] > acc["generalist"] > acc["noise"] > acc[f"{other}_expert"], acc
    assert stats["votes"] == 6 * stats["learned"] - 1

    per_row = calls_per_row(rows, read_log(rm_log))
    probes = sum(len(names) == 4 for names in per_row)
    assert probes == 4 * stats["learned"] and all(len(names) in (1, 4) for names in per_row)
    assert stats["calls_per_response"] == round(sum(map(len, per_row)) / 320, 4)  # the cost, counted twice
    tail = list(zip(rows, out, per_row, strict=True))[-80:]  # the last 20 groups
    assert sum(len(names) == 1 for _, _, names in tail) >= 60  # at most 5 of them are probes
    for row, res, names in tail:
        expert = f"{row.item.non_tensor_batch['domain']}_expert"
        assert EXPERTS[res["reward_extra_info"]["laser_arm"]] == expert and names[0] == expert
        err = _error(prompt_of(row), TOK.decode(row.item.batch["responses"], skip_special_tokens=True))
        assert -err <= res["reward_score"] < -err + 1.5  # the expert's own score: -|err| + 1.5 u

    label_free = reliability_scoring(tmp_path / "b", group_key="domain")
    run(label_free, [r for i in range(80) for r in domain_rows(i, False, "openai/gsm8k", repeat=i == 0)])
    a, b = scorer.router.state_dict()["strategy"], label_free.router.state_dict()["strategy"]
    assert str(a["router"]) == str(b["router"])  # gold answers changed nothing


def test_reliability_learns_from_chat_prompts_grouped_by_data_source(tmp_path, rm_log):
    """Chat rows (a data_source with no answer format, no ground truth): the bandit path learns
    nothing from them; the reliability router votes on every pair of distinct texts (the free-form
    rule: 6 votes per probe group, group 0's reworded answer included) and finds each data
    source's expert. Groups default to the ``data_source`` column."""
    scorer = reliability_scoring(tmp_path)
    rows = [r for i in range(80) for r in domain_rows(i, False, f"chat/{('alpha', 'beta')[i % 2]}", repeat=i == 0)]
    run(scorer, rows)
    stats = scorer.router.stats()
    assert stats["learned"] >= 16 and stats["votes"] == 6 * stats["learned"]
    assert {g: v["rm"] for g, v in stats["groups"].items()} == {
        "chat/alpha": "alpha_expert",
        "chat/beta": "beta_expert",
    }


def test_reliability_state_is_restored_and_routes_like_the_uninterrupted_router(tmp_path, rm_log):
    """save_every=10: the newest save is after group 40. A new actor on the same state_dir has the
    same estimates and counters, and plans 8 new groups (probe or not, arms) as the first one does;
    other selector options are refused naming the option."""
    state = tmp_path / "state"
    first = reliability_scoring(tmp_path, group_key="domain", state_dir=str(state), save_every=10)
    run(first, [r for i in range(40) for r in domain_rows(i, False, "openai/gsm8k")])
    again = SharedRouter(first.names, asdict(first.spec))
    assert again.resumed_from is not None and again.resumed_from.name == "ckpt-00000040"
    before, after = first.router.stats(), again.stats()
    for key in ("groups", "rows_scored", "learned", "routed", "votes", "rows"):
        assert before[key] == after[key], key
    assert before["groups"]["alpha"]["acc"] is not None
    new = [(f"n{i}", f"{('alpha', 'beta')[i % 2]}: What is {i}+{i + 2}?", ("alpha", "beta")[i % 2]) for i in range(8)]
    assert [first.router.plan(*x) for x in new] == [again.plan(*x) for x in new]
    other = {**asdict(first.spec), "selector_options": {"anchor": "generalist", "warmup": 9}}
    with pytest.raises(ValueError, match="hyper-parameters differ.*warmup"):
        SharedRouter(first.names, other)


def test_reliability_config_problems_are_named():
    rewards = [rm_spec(n) for n in EXPERTS]
    bad = {
        "rewards": rewards[:2],
        "router": {
            "selector": "reliability",
            "selector_options": {"anchor": "oracle", "alpha": 1},
            "feedback": "pair_accuracy",
            "group_key": "",
        },
    }
    with pytest.raises(ValueError) as err:
        load_spec(bad, group_size=4)
    for part in (
        "router.selector_options.alpha: unknown option of selector reliability",
        "router.selector_options.anchor: 'oracle' is not a reward model name",
        "rewards: selector reliability needs at least three reward models",
        "router.feedback: 'pair_accuracy'",
        "router.group_key: ''",
    ):
        assert part in str(err.value), part
    with pytest.raises(ValueError, match=r"router.selector_options: probe_share: must be in \[0, 1\]"):
        load_spec(
            {"rewards": rewards, "router": {"selector": "reliability", "selector_options": {"probe_share": 2}}}, 4
        )


def test_reliability_probe_goes_on_without_an_rm_that_fails(tmp_path, rm_log):
    """A warm-up probe group with ``broken`` among the RMs: broken is called once, masked, and the
    group's other rows skip it; the reward is the anchor's score (the arm before any estimate)."""
    scorer = scoring(
        tmp_path, names=(*EXPERTS, "broken"), selector="reliability", selector_options={"anchor": "generalist"}
    )
    out = run(scorer, domain_rows(0, False, "openai/gsm8k"))
    names = [n for n, _, _ in read_log(rm_log)]
    assert names.count("broken") == 1 and names.count("generalist") == 4 and len(names) == 17
    assert {r["reward_extra_info"]["laser_arm"] for r in out} == {2}
    stats = scorer.router.stats()
    assert "broken" in stats["down"] and stats["learned"] == 1 and stats["votes"] == 6


def test_verl_refuses_labelled_pairs_by_key(tmp_path):
    """verl's routing actor holds no RM (they run in the reward workers), so it cannot score
    ``router.selector_options.labelled_pairs`` at start: refused by key when the manager reads its
    config, and a SharedRouter given the key without RMs refuses too (a routed serve-rm passes its RMs)."""
    import yaml

    from laser.integrations.verl import _verl_spec

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        '{"prompt": "alpha: What is 1+1?", "chosen": "The answer is 2.", "rejected": "The answer is 3."}\n'
    )
    router = {"selector": "reliability", "selector_options": {"labelled_pairs": str(pairs)}}
    path = tmp_path / "laser_verl.yaml"
    path.write_text(yaml.safe_dump({"rewards": [rm_spec(n) for n in EXPERTS], "router": router}))

    class Node(dict):  # verl's config: attribute access and get()
        __getattr__ = dict.__getitem__

    config = Node(
        reward=Node(reward_kwargs={"laser": str(path)}),
        actor_rollout_ref=Node(rollout=Node(n=4)),
        trainer=Node(default_local_dir=str(tmp_path / "ckpt")),
    )
    with pytest.raises(ValueError, match=r"router.selector_options.labelled_pairs is not supported under verl"):
        _verl_spec(config)
    _, spec = load_spec(str(path), group_size=4)  # the key itself is valid (serve-rm takes it)
    with pytest.raises(ValueError, match=r"labelled_pairs: the routing state holds no reward model"):
        SharedRouter([s["name"] for s in [rm_spec(n) for n in EXPERTS]], asdict(spec))
