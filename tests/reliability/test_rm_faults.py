"""Item 3: failing reward models through the real loop. A `type: remote` RM (built by the factory)
talks to a scripted server on 127.0.0.1 (tests/rm_fault_server.py) next to a local RM; each fault
ends as documented: success after retries, or the remote arm masked with the outage in the log's
`events` and the run finishing on the other arm, or (every arm down) AllRewardModelsDown naming the
endpoints and last errors, with the checkpoint before the failure verifying and resuming."""

from __future__ import annotations

import socket

import pytest
from helpers import make_tiny_policy

from laser.rewards.factory import build_reward_models
from laser.rewards.remote import RemoteRM
from laser.routing.checkpoint import find_latest
from laser.routing.pool import AllRewardModelsDown
from laser.training.loop import Trainer

from ._helpers import EXAMPLES, independent_verify, make_cfg, read_log, trainer_hash

try:
    from tests.rm_fault_server import FaultServer, Reply
except ImportError:
    from rm_fault_server import FaultServer, Reply

pytestmark = pytest.mark.reliability
ITEM = "3 failing RMs"
N = 16  # responses per request: 4 prompts x 4 samples
FAST = {
    "connect_timeout": 0.2,
    "read_timeout": 0.2,
    "max_retries": 2,
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "deadline": 5.0,
    "breaker_failures": 1,
    "breaker_cooldown": 600.0,
}


def remote_spec(name: str, url: str) -> dict:
    return {"name": name, "type": "remote", "url": url, **FAST}


def run(out, specs, iterations: int = 1):
    cfg = make_cfg(out, "round_robin", iterations=iterations, rewards=specs)
    tr = Trainer(cfg, make_tiny_policy(), build_reward_models(cfg.rewards), EXAMPLES, show_progress=False)
    return tr, tr.run()


OK = ("success after retries", None)
CASES = {  # name: (script, then, (outcome, text expected in the masking event))
    "slow past the read timeout, then fast": ([Reply(delay=0.5)], Reply(), OK),
    "503 twice then success": ([Reply(503), Reply(503)], Reply(), OK),
    "500 always (after one success)": (
        [Reply()],
        Reply(500, {"error": "CUDA out of memory"}),
        ("masked", "HTTP 500: CUDA out of memory"),
    ),
    "malformed JSON (after one success)": ([Reply()], Reply(200, b"{not json"), ("masked", "not valid JSON")),
    "missing key": ([], Reply(200, {"rewards": [1.0] * N}), ("masked", "no key 'scores' (keys: rewards)")),
    "wrong number of scores": ([], Reply(200, {"scores": [1.0, 2.0]}), ("masked", "'scores' has 2 items for 16")),
    "NaN scores": (
        [],
        Reply(200, b'{"scores": [' + b", ".join([b"NaN"] * N) + b"]}"),
        ("unscorable: prompts skipped", None),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_remote_rm_fault_through_the_loop(tmp_path, figures, case):
    script, then, (outcome, text) = CASES[case]
    with figures.case(ITEM, "server faults ending as documented (7 scripted + connection refused)"):
        with FaultServer(script, then) as srv:
            tr, summary = run(tmp_path, [remote_spec("remote", srv.url), {"name": "long", "type": "length"}])
        log = read_log(tmp_path)
        events = [e for r in log for e in r["events"]]
        remote: RemoteRM = tr.pool.rms[0]
        assert summary["global_step"] == len(log) == 5  # the run finished
        assert independent_verify(find_latest(tmp_path / "checkpoints")[0]) is None
        if outcome == "success after retries":
            assert not events and remote.n_retries >= 1 and remote.n_failures == 0
            assert [r["arm_name"] for r in log] == ["remote", "long"] * 2 + ["remote"]
            assert log[-1]["responses_scored"][0] == 3 * N
        elif outcome == "masked":
            masked = [e for e in events if "failed and is masked" in e]
            assert len(masked) == 1 and text in masked[0] and srv.url in masked[0], events
            first_down = next(i for i, r in enumerate(log) if r["events"])
            assert all(r["arm_name"] == "long" for r in log[first_down:])  # finished on the other arm
            assert not remote.available()
        else:  # NaN: unscorable, not a failure; the remote arm's prompts are skipped and counted
            assert not events and remote.n_failures == 0
            assert summary["skipped_prompts"] == 3 * 4  # steps 1, 3, 5 used the remote arm


def test_connection_refused_masks_the_arm(tmp_path, figures):
    with figures.case(ITEM, "server faults ending as documented (7 scripted + connection refused)"):
        with socket.socket() as sock:  # bound, not listening: every connect is refused
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            tr, summary = run(tmp_path, [remote_spec("remote", url), {"name": "long", "type": "length"}])
        log = read_log(tmp_path)
        assert summary["global_step"] == 5 and all(r["arm_name"] == "long" for r in log)
        assert any("connection refused" in e and url in e for e in log[0]["events"])
        assert tr.pool.rms[0].n_requests == 1 + FAST["max_retries"]


def test_every_arm_down_stops_naming_endpoints_and_nothing_trained_is_lost(tmp_path, figures):
    """Arm A answers 2 calls, arm B 1, then both return 500: round robin uses A, B, A, then at step 4
    B fails (masked), A is tried again and fails too: AllRewardModelsDown. The step-3 checkpoint
    verifies; with the servers back, resuming from it ends exactly where an undisturbed run ends."""
    with (
        FaultServer([Reply()] * 2, Reply(500, {"error": "disk full"})) as a,
        FaultServer([Reply()], Reply(500, {"error": "OOM"})) as b,
    ):
        specs = [remote_spec("a", a.url), remote_spec("b", b.url)]
        with pytest.raises(AllRewardModelsDown) as err:
            run(tmp_path / "run", specs)
        msg = str(err.value)
        assert f"a ({a.url}): RewardModelUnavailable" in msg and "HTTP 500: disk full" in msg
        assert f"b ({b.url}): RewardModelUnavailable" in msg and "HTTP 500: OOM" in msg
        folder, skipped = find_latest(tmp_path / "run" / "checkpoints")
        assert folder.name == "ckpt-00000003" and not skipped and independent_verify(folder) is None
        a.then = b.then = Reply()  # the servers come back
        resumed, _ = run(tmp_path / "run", specs)
        undisturbed, _ = run(tmp_path / "clean", specs)
    assert [r["global_step"] for r in read_log(tmp_path / "run")] == [1, 2, 3, 4, 5]
    assert trainer_hash(resumed) == trainer_hash(undisturbed)
    figures.set(
        ITEM,
        "every arm down: AllRewardModelsDown names endpoints + errors; resume = undisturbed run",
        "yes (hash identical)",
    )
