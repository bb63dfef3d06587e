"""Item 5: a soak of `laser serve-rm` (a second process on 127.0.0.1) from concurrent clients,
bounded in requests and time: requests/s, p50/p99 latency, errors and the server's RSS.

The client loop is `drive()` of benchmarks/soak_serve_rm.py (each client thread its own RemoteRM,
retries off so every failure counts, every answer compared with a direct call of the RM); the
server is the real CLI serving that benchmark's cheap RM through `type: callable`. docs/remote_rm.md
documents 16 concurrent clients."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import start_cheap_serve_rm

pytestmark = pytest.mark.reliability
ITEM = "5 load (serve-rm soak)"
REPO = Path(__file__).resolve().parents[2]
LEVELS = [(4, 400), (16, 1600)]  # (concurrent clients, requests), each level capped at 30 s
BATCH = 16


def load_benchmark():
    spec = importlib.util.spec_from_file_location("soak_serve_rm", REPO / "benchmarks" / "soak_serve_rm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def serve_rm(tmp_path):
    proc, url, err = start_cheap_serve_rm(tmp_path)
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ok", "rms": ["cheap"]}
    yield proc, url, err
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_rm_soak_has_no_errors_and_flat_memory(serve_rm, figures):
    bench = load_benchmark()
    proc, url, err = serve_rm
    rss_start = bench.rss_kib(proc.pid) / 1024
    results = [bench.drive(url, proc.pid, c, n, 30.0, BATCH) for c, n in LEVELS]
    growth = bench.rss_kib(proc.pid) / 1024 - rss_start
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the server closes its socket and exits cleanly
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # serve-rm dumps every thread's stack on SIGUSR1: say where it hangs
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        rc = None
    assert rc == 0, f"serve-rm did not exit 30 s after Ctrl-C (rc {rc}); its stderr:\n{err.read_text()[-6000:]}"
    for (c, _n), r in zip(LEVELS, results, strict=True):
        figures.set(
            ITEM,
            f"{c:>2} clients, batch {BATCH}: requests / req/s / p50 / p99 / errors",
            f"{r['requests']} / {r['req_per_s']:.0f} / {r['p50_ms']:.1f} ms / {r['p99_ms']:.1f} ms / {r['errors']}",
        )
    figures.set(
        ITEM, "server RSS start -> end (growth)", f"{rss_start:.1f} -> {rss_start + growth:.1f} MiB ({growth:+.1f})"
    )
    for (c, n), r in zip(LEVELS, results, strict=True):
        assert r["errors"] == 0, r["first_error"]
        assert r["requests"] == n, f"{c} clients: only {r['requests']} of {n} requests in 30 s"
    assert growth < 8.0  # MiB over 2000 requests; a per-request leak of >4 KiB would show
