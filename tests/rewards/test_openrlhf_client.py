"""``laser serve-rm`` through OpenRLHF's own remote-RM client (``openrlhf==0.11.2``).

OpenRLHF 0.11.2 scores a rollout inside ``openrlhf.utils.agent.SingleTurnAgentExecutor.execute``:
it decodes prompt + response tokens into one ``query`` and POSTs ``{"query": [q], "prompts": [p],
"labels": [l]}`` to its ``--reward.remote_url`` (``_fetch_rewards_via_http``), then reads
``scores`` (else ``rewards``) from the JSON answer. These tests run that real code against the
real ``make_server``; only what vLLM would provide (the engine that returns a continuation) is a
stand-in, and the tokenizer is a real ``PreTrainedTokenizerFast`` built in code.

OpenRLHF is installed with ``pip install --no-deps openrlhf==0.11.2 aiohttp pylatexenc`` (its full
requirements pin another transformers, deepspeed and flash-attn); without it these tests skip.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

agent = pytest.importorskip("openrlhf.utils.agent", reason="openrlhf==0.11.2 is not installed")

from laser.bench.policy import make_char_tokenizer  # noqa: E402
from laser.rewards.base import CallableRM  # noqa: E402
from laser.rewards.server import make_server  # noqa: E402


class ScriptedEngine:
    """What OpenRLHF's vLLM engine gives the executor: ``await generate(ids, params)`` -> outputs."""

    def __init__(self, tokenizer, replies: list[str]):
        self.tokenizer, self.replies = tokenizer, list(replies)

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        text = self.replies.pop(0)
        ids = self.tokenizer(text=text, add_special_tokens=False)["input_ids"]
        out = SimpleNamespace(token_ids=ids, text=text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


class RecordingRM(CallableRM):
    """A CallableRM that records every (prompt, response) batch it is asked to score."""

    def __init__(self, fn, name):
        super().__init__(fn, name=name)
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, prompts, responses):
        self.calls.append((list(prompts), list(responses)))
        return super().score(prompts, responses)


@pytest.fixture
def served():
    rms = {
        "len": RecordingRM(lambda p, r: float(len(r)), "len"),
        "count_a": RecordingRM(lambda p, r: float(r.count("a")), "count_a"),
    }
    server = make_server(rms)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server, rms
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def rollout(executor, tokenizer, prompt: str, reply: str, label: str = "") -> dict:
    """One call of OpenRLHF's real ``execute`` with the scripted engine."""
    params = SimpleNamespace(max_tokens=64, logprobs=None)
    engine = ScriptedEngine(tokenizer, [reply])
    return asyncio.run(
        executor.execute(prompt, label, params, max_length=256, hf_tokenizer=tokenizer, llm_engine=engine)
    )


def test_executor_scores_through_each_per_rm_url(served):
    """``--reward.remote_url http://host/get_reward?rm=NAME`` scores with that RM only."""
    server, rms = served
    tok = make_char_tokenizer()
    prompt, reply = "Q: name a fruit. A:", " banana"
    for name, expected in (("len", 7.0), ("count_a", 3.0)):  # len(" banana") = 7; it has 3 a's
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{server.url}/get_reward?rm={name}")
        out = rollout(executor, tok, prompt, reply, label="banana")
        assert out["reward"] == [expected] and out["scores"] == [expected]
        # the server split OpenRLHF's query (prompt + reply) back into the pair; labels were ignored
        assert rms[name].calls[-1] == ([prompt], [reply])
    assert len(rms["len"].calls) == len(rms["count_a"].calls) == 1


def test_a_list_of_urls_shards_requests_it_is_not_an_ensemble(served):
    """With several URLs, OpenRLHF rotates one endpoint per request (and splits a batch across
    them); no query is scored by more than one URL, so a list of per-RM URLs mixes RMs by position."""
    server, rms = served
    tok = make_char_tokenizer()
    urls = [f"{server.url}/get_reward?rm=len", f"{server.url}/get_reward?rm=count_a"]
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=urls)
    first = rollout(executor, tok, "P:", " aaaa")
    second = rollout(executor, tok, "P:", " aaaa")
    assert (first["reward"], second["reward"]) == ([5.0], [4.0])  # len 5 from "len", then 4 a's
    # a batch of four queries: two go to each URL, each RM scores only its shard
    queries = [f"P:{r}" for r in ("a", "bb", "aaa", "b")]
    answers = asyncio.run(executor._fetch_rewards_via_http(queries, ["P:"] * 4, [""] * 4))
    assert [a["rm"] for a in answers] == ["len", "count_a"]
    assert [a["rewards"] for a in answers] == [[1.0, 2.0], [3.0, 0.0]]
    assert rms["len"].calls[-1] == (["P:", "P:"], ["a", "bb"])
    assert rms["count_a"].calls[-1] == (["P:", "P:"], ["aaa", "b"])


def test_unreachable_url_leaves_the_reward_unset(monkeypatch):
    """OpenRLHF's executor swallows the client's error: the rollout comes back with ``reward``
    None (its sample then carries no reward) after 5 tries; the 1 s pauses are skipped here."""
    real_sleep = asyncio.sleep

    async def no_wait(_seconds):
        await real_sleep(0)

    monkeypatch.setattr(agent.asyncio, "sleep", no_wait)
    executor = agent.SingleTurnAgentExecutor(remote_rm_url="http://127.0.0.1:9/get_reward")
    out = rollout(executor, make_char_tokenizer(), "P:", " x")
    assert out["reward"] is None and out["scores"] is None


def test_executor_scores_through_the_routed_url(tmp_path, monkeypatch):
    """The bare ``/get_reward`` of a server with a ``router:`` section: OpenRLHF's executor sends
    each rollout alone; the 4 rollouts of one prompt are scored by one RM (the router's pick), the
    labels OpenRLHF sends are the gold answers the router learns from."""
    import yaml

    from laser.rewards.server import server_from_config

    try:
        from tests.verl_rms import _error, read_log, rm_spec
    except ImportError:
        from verl_rms import _error, read_log, rm_spec
    log_path = tmp_path / "calls.tsv"
    monkeypatch.setenv("LASER_VERL_RM_LOG", str(log_path))
    config = tmp_path / "rm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "rewards": [rm_spec("good"), rm_spec("bad")],
                "router": {"group_size": 4, "task": "gsm8k", "selector": "epsilon_greedy"},
            }
        )
    )
    server = server_from_config(str(config))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    tok = make_char_tokenizer()
    try:
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{server.url}/get_reward")
        prompt = "What is 12+5?"
        outs = [rollout(executor, tok, prompt, f" The answer is {17 + d}.", label="17") for d in (0, 1, 3, 7)]
        stats = server.router.stats()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    names = [n for n, _, _ in read_log(log_path)]
    assert len(names) == 4 and len(set(names)) == 1  # one RM for the prompt's group, one call per rollout
    sign = -1.0 if names[0] == "good" else 1.0
    assert [o["reward"] for o in outs] == [[sign * _error(prompt, f"The answer is {17 + d}.")] for d in (0, 1, 3, 7)]
    assert stats["learned"] + stats["tied"] == 1 and sum(stats["counts"]) == 1  # learned from the labels
