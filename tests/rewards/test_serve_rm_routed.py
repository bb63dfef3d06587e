"""``laser serve-rm`` with a ``router:`` section: its RMs served as one routed reward.

RMs (tests/verl_rms.py): prompts ``What is A+B?``, responses ``The answer is X.``; ``good`` scores
``-|X - (A+B)|`` and ranks the true answer first, ``bad`` scores ``+|X - (A+B)|`` and ranks it
last. Over a group of the 4 answers A+B+{0, 1, 3, 7}, every one of the 6 pairs is ranked; the 3
pairs with the true answer count +1 for good (-1 for bad), the 3 between wrong answers 0: the
group's pair correctness is +0.5 for good, -0.5 for bad (against the gold label, and against the
majority answer, which is the first of 4 distinct answers: the true one).
"""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
import yaml
from helpers import Served, post

from laser.cli.main import main as cli_main
from laser.config import ConfigError
from laser.rewards.server import server_from_config

try:
    from tests.verl_rms import _error, read_log, rm_spec
except ImportError:  # pytest's rootdir import mode puts tests/ itself on sys.path
    from verl_rms import _error, read_log, rm_spec

OFFSETS = (0, 1, 3, 7)


def write_config(tmp_path, **router) -> str:
    path = tmp_path / "rm.yaml"
    section = {
        "selector": "epsilon_greedy",
        "selector_options": {"epsilon": 0.1},
        "group_size": 4,
        "task": "gsm8k",
        "save_every": 1,
        **router,
    }
    path.write_text(yaml.safe_dump({"rewards": [rm_spec("good"), rm_spec("bad")], "router": section}))
    return str(path)


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        return json.loads(resp.read())


def group(i: int) -> tuple[str, list[str], str]:
    a, b = 10 + i % 7, 3 + i % 5
    return f"What is {a}+{b}?", [f"The answer is {a + b + d}." for d in OFFSETS], str(a + b)


def openrlhf_request(url: str, prompt: str, response: str, label: str | None) -> dict:
    """What OpenRLHF 0.11.2's executor posts for one rollout: one query, its prompt and label."""
    status, body = post(
        url + "/get_reward", {"query": [prompt + " " + response], "prompts": [prompt], "labels": [label]}
    )
    assert status == 200, body
    return body


@pytest.fixture
def rm_log(tmp_path, monkeypatch):
    path = tmp_path / "rm_calls.tsv"
    monkeypatch.setenv("LASER_VERL_RM_LOG", str(path))
    return path


def test_config_is_checked_whole_before_anything_loads(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "bogus": 3,
                "rewards": [rm_spec("good"), {"name": "x", "type": "nope"}],
                "router": {
                    "selector": "linucb",
                    "feedback": "loss",
                    "group_size": 1,
                    "granularity": "batch",
                    "shade": 1,
                },
            }
        )
    )
    with pytest.raises(ConfigError) as err:
        server_from_config(str(path))
    problems = err.value.problems
    for part in (
        "bogus: unknown top-level key",
        "rewards[1].type: 'nope'",
        "router.feedback: 'loss'",
        "router.group_size: 1",
        "router.granularity: 'batch'",
        "router.shade: unknown key",
        "router.task: required by serve-rm",
    ):
        assert any(part in p for p in problems), (part, problems)
    assert cli_main(["serve-rm", "--config", str(path), "--port", "0"]) == 2  # the CLI prints them all
    printed = capsys.readouterr().err
    assert "bogus: unknown top-level key" in printed and "router.shade" in printed
    path.write_text(yaml.safe_dump({"bogus": 3, "rewards": [rm_spec("good")]}))  # unrouted too
    with pytest.raises(ConfigError, match="bogus: unknown top-level key"):
        server_from_config(str(path))


def test_routed_get_reward_picks_one_rm_per_prompt_learns_and_survives_a_restart(tmp_path, rm_log):
    config = write_config(tmp_path)
    served = Served(config)
    try:
        arms = {}
        for i in range(30):
            prompt, responses, gold = group(i)
            for r in responses:  # OpenRLHF: one request per rollout
                body = openrlhf_request(served.url, prompt, r, gold)
                (name,) = body["rm"]
                err = _error(prompt, r)
                assert body["rewards"] == body["scores"] == [-err if name == "good" else err]
                arms.setdefault(i, set()).add(name)
        stats = health(served.url)["router"]
    finally:
        served.close()
    assert all(len(a) == 1 for a in arms.values())  # the 4 rollouts of a prompt: one RM
    calls = read_log(rm_log)
    assert len(calls) == 120 and sorted(n for n, _, _ in calls) == sorted(
        next(iter(arms[i])) for i in range(30) for _ in OFFSETS
    )  # one call per rollout, by the chosen RM only
    assert stats["learned"] + stats["tied"] == 30 == sum(stats["counts"]) and stats["pending"] == 0
    assert sum(stats["rows_scored"]) == 120 and stats["saves"] == 30
    assert [next(iter(arms[i])) for i in range(20, 30)].count("good") >= 8  # epsilon 0.1 explores

    again = Served(config)  # a restart: the same config, the state folder beside it
    try:
        restored = health(again.url)["router"]
    finally:
        again.close()
    assert restored["resumed_from"].endswith("ckpt-00000030")
    assert restored["counts"] == stats["counts"] and restored["learned"] == stats["learned"]


def test_without_labels_the_configured_task_gives_majority_feedback(tmp_path, rm_log):
    served = Served(write_config(tmp_path, feedback="auto"))
    try:
        for i in range(5):
            prompt, responses, _ = group(i)
            status, body = post(served.url + "/score", {"prompts": [prompt] * 4, "responses": responses})
            assert status == 200 and len(set(body["rm"])) == 1  # one request holds the whole group
        stats = health(served.url)["router"]
    finally:
        served.close()
    assert stats["learned"] + stats["tied"] == 5 and stats["unlabelled"] == 0


def test_concurrent_requests_keep_the_router_consistent(tmp_path, rm_log):
    """8 client threads, each sending the 4 rollouts of its own 5 prompts one request at a time,
    interleaved with the others: every counter adds up and every prompt had one RM."""
    served = Served(write_config(tmp_path, save_every=7))
    seen: dict[str, set] = {}
    lock = threading.Lock()
    errors = []

    def client(t: int):
        try:
            for i in range(t * 5, t * 5 + 5):
                prompt, responses, gold = group(i)
                prompt = f"[{i}] {prompt}"  # distinct prompts across threads
                for r in responses:
                    body = openrlhf_request(served.url, prompt, r, gold)
                    with lock:
                        seen.setdefault(prompt, set()).add(body["rm"][0])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        stats = health(served.url)["router"]
    finally:
        served.close()
    assert not errors, errors[0]
    assert len(seen) == 40 and all(len(s) == 1 for s in seen.values())
    assert sum(stats["rows_scored"]) == 160 == len(read_log(rm_log))
    assert stats["learned"] + stats["tied"] == 40 == sum(stats["counts"]) and stats["pending"] == 0
    assert stats["saves"] == 40 // 7


def test_per_rm_urls_are_unchanged_next_to_the_routed_one(tmp_path, rm_log):
    served = Served(write_config(tmp_path))
    try:
        prompt, responses, gold = group(0)
        status, body = post(
            served.url + "/get_reward?rm=bad", {"query": [prompt + responses[1]], "prompts": [prompt], "labels": [gold]}
        )
        assert status == 200 and body["rm"] == "bad" and body["rewards"] == [1.0]
        stats = health(served.url)["router"]
    finally:
        served.close()
    assert sum(stats["rows_scored"]) == 0 and stats["pending"] == 0  # the router never saw it
