"""A routed ``laser serve-rm`` with ``selector: reliability`` refits the label model in a background
thread, outside the request lock (laser/integrations/background_refit.py).

RMs and prompts of tests/rewards/test_serve_rm_reliability.py (tests/verl_rms.py): on ``alpha``
prompts ``alpha_expert`` orders about 0.99 of a group's pairs, ``generalist`` (the anchor) about
0.83, ``beta_expert`` about 0.01, ``noise`` 0.5. Each request is one whole prompt group (``/score``
with its 4 responses), so every request finishes a group. A slow refit is made slow by an Event
(no wall time is measured).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import yaml
from helpers import Served, post
from verl_rms import rm_spec  # tests/ is on sys.path (tests/conftest.py)

import laser.routing.reliability as reliability
from laser.rewards.server import RMServer

EXPERTS = ("alpha_expert", "beta_expert", "generalist", "noise")
OFFSETS = (0, 1, 3, 7)
OPTIONS = {"anchor": "generalist", "warmup": 4, "min_votes": 12, "n_boot": 5}


def config(folder, **options) -> str:
    folder.mkdir(exist_ok=True)
    router = {
        "selector": "reliability",
        "selector_options": {**OPTIONS, **options},
        "group_size": 4,
        "group_key": "domain",
        "save_every": 1,
    }
    path = folder / "rm.yaml"
    path.write_text(yaml.safe_dump({"rewards": [rm_spec(n) for n in EXPERTS], "router": router}))
    return str(path)


def request(url: str, i: int, domain: str | None = None) -> dict:
    """Prompt group ``i`` (alternating domains unless ``domain`` is given) in one /score request."""
    domain = domain or ("alpha", "beta")[i % 2]
    a, b = 10 + i % 7, 3 + i % 5
    prompt = f"{domain}: What is {a}+{b}?"
    status, body = post(
        url + "/score",
        {"prompts": [prompt] * 4, "responses": [f"The answer is {a + b + d}." for d in OFFSETS], "domain": domain},
    )
    assert status == 200, body
    return body


def fits(served: Served) -> dict:
    """Per group: the routed RM, its status, accuracies, uncertainty, probes (under the lock)."""
    with served.server.lock:
        groups = served.server.router.stats()["groups"]
    return {g: (v["rm"], v["status"], v["acc"], v["uncertainty"], v["probes"]) for g, v in groups.items()}


def synchronous(path: str, monkeypatch) -> Served:
    """A server refitting in the request, under its lock (``refit_mode = "lock"``, the path verl's
    actor keeps)."""
    with monkeypatch.context() as m:
        m.setattr(RMServer, "refit_mode", "lock")
        served = Served(path)
    assert served.server.refits is None and served.server.router.router.defer_refit is None
    return served


def same_fits(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for g in a:
        (rm, status, acc, u, probes), (rm2, status2, acc2, u2, probes2) = a[g], b[g]
        assert (rm, status, u, probes) == (rm2, status2, u2, probes2), g
        assert acc2 == pytest.approx(acc, abs=1e-12), g


@pytest.fixture
def in_thread(monkeypatch):
    """Refits computed in the server's refit thread (not its child process), so a monkeypatched
    label model is the one called."""
    monkeypatch.setattr(RMServer, "refit_mode", "thread")


@pytest.fixture
def block_fit(monkeypatch, in_thread):
    """``fit_label_model`` that waits for ``release`` (``entered`` says a fit is waiting)."""
    entered, release, real = threading.Event(), threading.Event(), reliability.fit_label_model

    def slow(*args, **kwargs):
        entered.set()
        assert release.wait(60), "the test never released the refit"
        return real(*args, **kwargs)

    monkeypatch.setattr(reliability, "fit_label_model", slow)
    yield entered, release
    release.set()


def test_background_refits_reach_the_synchronous_fits(tmp_path, monkeypatch):
    """30 groups sent one at a time to a server refitting in the background (in its child process;
    draining its queue after each request, so each plan sees the fits the synchronous path had)
    and to one refitting in the request: the same routed RM, status, probes, uncertainty and
    accuracies per group; both domains end on their expert (the fits are not all fallbacks). The
    child process ends with the server."""
    background, sync = Served(config(tmp_path / "bg")), synchronous(config(tmp_path / "sync"), monkeypatch)
    try:
        for i in range(30):
            assert request(background.url, i) == request(sync.url, i)
            assert background.server.refits.drain(60)
        with background.server.lock:
            assert background.server.refits.counters()["done"] > 0
        got, want = fits(background), fits(sync)
        child = background.server.refits.child[0]
        assert child.poll() is None  # running
    finally:
        background.close()
        sync.close()
    assert background.server.refits.child is None and child.returncode == 0  # ended by close()
    same_fits(got, want)
    assert {g: v[:2] for g, v in want.items()} == {
        "alpha": ("alpha_expert", "estimate"),
        "beta": ("beta_expert", "estimate"),
    }


def test_without_draining_in_between_the_drained_fits_equal_the_synchronous_ones(tmp_path, monkeypatch, in_thread):
    """Refits in the server's refit thread. Every group a probe (warm-up 40 > the 12 groups per
    domain), so the votes do not depend on when a refit lands; the background server's requests do
    not wait for refits (some may coalesce into one), yet after the queue drains each group's fit
    is the synchronous one (the anchor fixes the sign, so a fit depends on its window alone)."""
    background, sync = (
        Served(config(tmp_path / "bg", warmup=40)),
        synchronous(config(tmp_path / "s", warmup=40), monkeypatch),
    )
    try:
        for i in range(24):
            request(background.url, i)
            request(sync.url, i)
        assert background.server.refits.drain(60)
        got, want = fits(background), fits(sync)
    finally:
        background.close()
        sync.close()
    same_fits(got, want)
    assert {g: v[4] for g, v in want.items()} == {"alpha": 12, "beta": 12}
    assert want["alpha"][2]["alpha_expert"] > 0.9


def test_a_request_is_answered_while_a_refit_is_running(tmp_path, block_fit):
    """The first alpha group (a warm-up probe) queues a refit that blocks in the label model; the
    request that queued it and the next ones (other groups, and /health) are answered while it
    waits; once released the refit is written."""
    entered, release = block_fit
    served = Served(config(tmp_path))
    try:
        request(served.url, 0, "alpha")  # answered though its refit is queued
        assert entered.wait(60)  # the worker is inside the label model now
        for i in range(1, 4):
            request(served.url, i, "beta")  # queued refits of beta: the worker is busy with alpha
        with served.server.lock:
            assert served.server.refits.counters() == {"pending": 2, "done": 0, "failed": 0}
            assert served.server.refits.running == "alpha"
        release.set()
        assert served.server.refits.drain(60)
        with served.server.lock:
            counters = served.server.refits.counters()
            alpha = served.server.router.router.reliability.groups_["alpha"]
    finally:
        served.close()
    assert counters["pending"] == 0 and counters["done"] >= 2  # alpha, then beta coalesced
    assert alpha.reason.startswith("not enough votes")  # 6 votes < min_votes 12: the fit's own ValueError
    assert not served.server.refits.thread.is_alive()  # close() stopped the worker


def test_a_failing_refit_leaves_the_group_on_its_fallback_and_the_worker_serves_on(tmp_path, monkeypatch, in_thread):
    """``fit_label_model`` raises a RuntimeError (not the label model's ValueError) for the first
    four refits: those groups stay on the anchor with the error as the reason, the error is
    counted, and the requests after it are answered; later refits (the real fit) succeed in the
    same worker."""
    calls, real = [0], reliability.fit_label_model

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] <= 4:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(reliability, "fit_label_model", flaky)
    served = Served(config(tmp_path))
    try:
        for i in range(4):
            request(served.url, i, "alpha")
            assert served.server.refits.drain(60)
        with served.server.lock:
            failed = served.server.refits.counters()["failed"]
        st = fits(served)["alpha"]
        for i in range(4, 30):
            request(served.url, i)
            assert served.server.refits.drain(60)
        final = fits(served)
        alive = served.server.refits.thread.is_alive()
    finally:
        served.close()
    assert failed == 4 and st[:2] == ("generalist", "fallback: refit failed (RuntimeError: boom)")
    assert alive and final["alpha"][:2] == ("alpha_expert", "estimate")


def test_a_state_saved_while_a_refit_is_pending_restores_and_the_refit_is_redone(tmp_path, block_fit):
    """Three alpha probes are fitted; the fourth's refit blocks, and the save of that finished group
    (``save_every: 1``) holds its votes with the previous fit. A restart on the same config loads
    that save and refits every restored group: it reaches the fit the first server wrote once the
    refit was released."""
    from dataclasses import asdict

    from laser.integrations.grouped import SharedRouter

    entered, release = block_fit
    release.set()
    path = config(tmp_path)
    served = Served(path)
    try:
        for i in range(3):
            request(served.url, i, "alpha")
            assert served.server.refits.drain(60)
        before = fits(served)["alpha"]
        release.clear()
        entered.clear()
        request(served.url, 3, "alpha")  # its finished group is saved, its refit blocks
        assert entered.wait(60)
        spec = asdict(served.server.router.spec)
        saved = SharedRouter(list(EXPERTS), spec).router.reliability.groups_["alpha"]  # the newest save
        release.set()
        assert served.server.refits.drain(60)
        after = fits(served)["alpha"]
    finally:
        served.close()
    assert saved.observed == 4 and len(saved.votes[0]) == 24  # the fourth probe's votes are saved
    assert dict(zip(EXPERTS, saved.acc, strict=True)) == pytest.approx(before[2]) and after[2] != pytest.approx(
        before[2]
    )  # its fit is not
    again = Served(path)
    try:
        assert again.server.refits.drain(60)
        restored = fits(again)["alpha"]
    finally:
        again.close()
    same_fits({"alpha": restored}, {"alpha": after})


CHILD_OF_A_KILLED_SERVER = """
import threading, numpy as np
from types import SimpleNamespace
from laser.integrations.background_refit import BackgroundRefits
from laser.routing.reliability import ReliabilityRouter

router, lock = ReliabilityRouter(3), threading.Lock()
refits = BackgroundRefits(SimpleNamespace(reliability=router), lock)
with lock:
    router.observe("g", np.ones((3, 6), np.int8))
    refits.mark(["g"])
assert refits.drain(120)
print(refits.child[0].pid, flush=True)
threading.Event().wait()
"""


def test_the_refit_process_ends_when_its_server_is_killed(tmp_path):
    """A process holding a :class:`BackgroundRefits` (a refit done, so its child runs) is killed
    with SIGKILL: the child notices its parent's end and exits (polled for up to 60 s; no speed
    is asserted)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_OF_A_KILLED_SERVER], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        child = int(proc.stdout.readline())
        assert running(child)
    finally:
        proc.kill()
        proc.wait(30)
    deadline = time.monotonic() + 60
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child)


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a container's init may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_refit_process_survives_an_error_and_is_started_again_when_it_died():
    """The child computes what ``refit_compute`` computes here (3 RMs voting right with
    probabilities 0.9 / 0.8 / 0.7 on 80 pairs of 20 probes: a trusted fit); a snapshot it cannot
    read (no ``votes``: a KeyError, not the label model's ValueError) comes back as a failed refit
    and the same child computes the next one; killed, the child is replaced on the next refit."""
    import numpy as np

    from laser.integrations.background_refit import BackgroundRefits
    from laser.routing.reliability import ReliabilityRouter

    rng = np.random.default_rng(0)
    router, lock = ReliabilityRouter(3, anchor=0), threading.Lock()
    for _ in range(20):
        truth = rng.choice([-1, 1], 4)
        right = rng.random((3, 4)) < np.array([[0.9], [0.8], [0.7]])
        router.observe("g", np.where(right, truth, -truth))
    snap = router.refit_snapshot("g")
    want = router.refit_compute(snap)
    refits = BackgroundRefits(SimpleNamespace(reliability=router), lock)
    try:
        bad = refits._compute({"group": "g"})
        first = refits.child[0]
        good = refits._compute(snap)
        same = refits.child[0] is first
        first.kill()
        first.wait(30)
        again = refits._compute(snap)
        second = refits.child[0]
    finally:
        refits.stop()
    assert want["fit"].ok and bad["reason"] == "refit failed (KeyError: 'votes')" and same
    for got in (good, again):
        assert got["fit"].acc == pytest.approx(want["fit"].acc) and got["uncertainty"] == want["uncertainty"]
    assert second is not first and second.returncode == 0  # stop() ended it
