"""``laser serve-rm`` with ``router: {selector: reliability, ...}``: label-free routing per request group.

RMs (tests/verl_rms.py): prompts ``<domain>: What is A+B?`` (domain alpha or beta), responses
``The answer is X.``. ``alpha_expert`` orders about 0.99 of a group's pairs on alpha prompts and
about 0.01 on beta prompts (``beta_expert`` the mirror), ``generalist`` (the anchor) about 0.83
everywhere, ``noise`` 0.5; so each domain's best RM is its expert. The domain reaches the router
as a request field (``router.group_key: domain``), as a client that knows its data set sends it.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml
from helpers import Served, post
from verl_rms import read_log, rm_spec  # tests/ is on sys.path (tests/conftest.py)

EXPERTS = ("alpha_expert", "beta_expert", "generalist", "noise")
OFFSETS = (0, 1, 3, 7)


def write_config(tmp_path, **router) -> str:
    path = tmp_path / "rm.yaml"
    section = {
        "selector": "reliability",
        "selector_options": {"anchor": "generalist", "warmup": 8},
        "group_size": 4,
        "group_key": "domain",
        "save_every": 8,
        **router,
    }
    path.write_text(yaml.safe_dump({"rewards": [rm_spec(n) for n in EXPERTS], "router": section}))
    return str(path)


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        return json.loads(resp.read())["router"]


def group(i: int) -> tuple[str, str, list[str], str]:
    domain, a, b = ("alpha", "beta")[i % 2], 10 + i % 7, 3 + i % 5
    return domain, f"{domain}: What is {a}+{b}?", [f"The answer is {a + b + d}." for d in OFFSETS], str(a + b)


@pytest.fixture
def rm_log(tmp_path, monkeypatch):
    path = tmp_path / "rm_calls.tsv"
    monkeypatch.setenv("LASER_VERL_RM_LOG", str(path))
    return path


def test_each_group_ends_on_its_best_rm_probes_are_counted_and_a_restart_restores_the_estimates(tmp_path, rm_log):
    """80 prompt groups, OpenRLHF's traffic (one request per rollout, with its gold label, which
    the reliability router does not use) plus the request field ``domain``; task gsm8k (votes from
    pairs whose answers differ). The calls each request caused are read from the RMs' own log."""
    config = write_config(tmp_path, task="gsm8k")
    served = Served(config)
    picks, per_request = {}, []
    try:
        for i in range(80):
            domain, prompt, responses, gold = group(i)
            for r in responses:
                seen = len(read_log(rm_log))
                status, body = post(
                    served.url + "/get_reward",
                    {"query": [prompt + " " + r], "prompts": [prompt], "labels": [gold], "domain": [domain]},
                )
                assert status == 200, body
                per_request.append([n for n, _, _ in read_log(rm_log)[seen:]])
                picks.setdefault(i, set()).add(body["rm"][0])
                assert per_request[-1][0] == body["rm"][0] or len(per_request[-1]) == 4
        assert served.server.refits.drain(60)  # the label model refits in the background: its last fits
        stats = health(served.url)
    finally:
        served.close()
    assert all(len(p) == 1 for p in picks.values())  # one RM answers all rollouts of a prompt
    assert [next(iter(picks[i])) for i in range(60, 80)] == ["alpha_expert", "beta_expert"] * 10
    probe_rows = sum(len(c) == 4 for c in per_request)
    assert all(len(c) in (1, 4) for c in per_request) and probe_rows == 4 * stats["learned"]
    assert sum(len(c) == 1 for c in per_request[-80:]) >= 60  # the last 20 groups: mostly one call per rollout
    assert stats["calls_per_response"] == round(sum(map(len, per_request)) / 320, 4) < 2.0
    assert stats["votes"] == 6 * stats["learned"]  # 4 distinct answers: 6 pairs per probe group
    for domain in ("alpha", "beta"):
        assert stats["groups"][domain]["rm"] == f"{domain}_expert"
        assert stats["groups"][domain]["status"] == "estimate"

    again = Served(config)  # a restart on the same config: the state folder beside it
    try:
        assert again.server.refits.drain(60)  # a refit pending at the last save is redone at start
        restored = health(again.url)
        status, body = post(again.url + "/score", {"prompts": ["p"], "responses": ["r"], "domain": {"x": 1}})
    finally:
        again.close()
    assert restored["resumed_from"].endswith("ckpt-00000080")
    assert restored["groups"] == stats["groups"] and restored["rows_scored"] == stats["rows_scored"]
    assert status == 400 and 'field "domain" (router.group_key)' in body["error"]


def test_without_the_group_field_or_a_task_all_requests_are_one_free_form_group(tmp_path, rm_log):
    """A whole group per /score request, no ``domain`` field, no task: one group (``all``), votes
    on every pair of distinct texts; warm-up: the first 8 groups are probes."""
    served = Served(write_config(tmp_path, save_every=100))
    try:
        for i in range(10):
            _, prompt, responses, _ = group(i)
            status, body = post(served.url + "/score", {"prompts": [prompt] * 4, "responses": responses})
            assert status == 200 and len(set(body["rm"])) == 1
        stats = health(served.url)
    finally:
        served.close()
    assert list(stats["groups"]) == ["all"] and stats["groups"]["all"]["probes"] == stats["learned"] >= 8
    assert stats["votes"] == 6 * stats["learned"] and stats["rows"] == 40


def test_an_rm_that_fails_during_a_probe_is_masked_and_the_probe_goes_on(tmp_path, rm_log):
    """``broken`` raises: the first request (a warm-up probe, every RM scores) is answered with the
    anchor's scores, broken is reported down and abstains from the group's votes."""
    path = tmp_path / "rm.yaml"
    router = {"selector": "reliability", "selector_options": {"anchor": "generalist"}, "group_size": 4}
    path.write_text(yaml.safe_dump({"rewards": [rm_spec(n) for n in (*EXPERTS, "broken")], "router": router}))
    served = Served(str(path))
    try:
        _, prompt, responses, _ = group(0)
        status, body = post(served.url + "/score", {"prompts": [prompt] * 4, "responses": responses})
        stats = health(served.url)
    finally:
        served.close()
    assert status == 200 and body["rm"] == ["generalist"] * 4
    assert "broken" in stats["down"] and stats["learned"] == 1 and stats["votes"] == 6
    assert sorted({n for n, _, _ in read_log(rm_log)}) == sorted((*EXPERTS, "broken"))


def labelled_pairs_file(tmp_path, bad: bool = False) -> str:
    """Two pairs per domain on a prompt no request sends (answers 42 and 45 never occur in
    :func:`group`): the right answer chosen, a wrong one rejected."""
    rows = [
        {"prompt": f"{d}: What is 40+2?", "chosen": "The answer is 42.", "rejected": f"The answer is {w}.", "group": d}
        for d in ("alpha", "beta")
        for w in (45, 49)
    ]
    if bad:
        rows[1] = {"prompt": "alpha: What is 40+2?", "chosen": "The answer is 42."}
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_labelled_pairs_are_scored_once_at_start_fix_the_sign_and_survive_a_restart(tmp_path, rm_log):
    """No anchor, ``router.selector_options.labelled_pairs``: at start each of the 4 RMs scores the
    2 x 4 labelled texts once (in the RMs' own log and the router's counters), every group's sign
    comes from them and each domain ends on its expert; a restart restores the state (which holds
    their votes) and scores none of them again."""
    options = {"warmup": 8, "labelled_pairs": labelled_pairs_file(tmp_path)}
    config = write_config(tmp_path, selector_options=options, task="gsm8k", save_every=4)
    labelled = {"The answer is 42.", "The answer is 45.", "The answer is 49."}
    served = Served(config)
    try:
        at_start = read_log(rm_log)
        for i in range(24):
            domain, prompt, responses, _ = group(i)
            status, body = post(
                served.url + "/score", {"prompts": [prompt] * 4, "responses": responses, "domain": [domain] * 4}
            )
            assert status == 200, body
        assert served.server.refits.drain(60)  # the label model refits in the background
        stats = health(served.url)
    finally:
        served.close()
    assert sorted((n, r) for n, _, r in at_start) == sorted(
        (n, f"The answer is {a}.") for n in EXPERTS for a in (42, 45, 42, 49, 42, 45, 42, 49)
    )
    calls = read_log(rm_log)
    assert stats["rows_scored"] == [sum(n == name for n, _, _ in calls) for name in EXPERTS]
    for domain in ("alpha", "beta"):
        assert stats["groups"][domain]["sign"] == "labels"
        assert stats["groups"][domain]["rm"] == f"{domain}_expert"

    again = Served(config)
    try:
        assert again.server.refits.drain(60)  # restored groups are refitted at start
        restored = health(again.url)
    finally:
        again.close()
    assert restored["resumed_from"] and restored["groups"] == stats["groups"]
    assert not [r for _, _, r in read_log(rm_log)[len(calls) :] if r in labelled]


def test_a_bad_labelled_pairs_file_is_a_config_error_by_key_before_any_rm_loads(tmp_path, rm_log):
    from laser.config import ConfigError
    from laser.rewards.server import server_from_config

    options = {"labelled_pairs": labelled_pairs_file(tmp_path, bad=True)}
    with pytest.raises(ConfigError, match=r"router.selector_options.labelled_pairs: .*pairs.jsonl:2: field 'rejected'"):
        server_from_config(write_config(tmp_path, selector_options=options))
    with pytest.raises(ConfigError, match=r"router.selector_options.labelled_pairs: the path of a JSONL file"):
        server_from_config(write_config(tmp_path, selector_options={"labelled_pairs": ["a"]}))
    assert read_log(rm_log) == []
