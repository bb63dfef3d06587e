"""Soak test of the reward-model server: a second process on loopback, concurrent clients.

Starts ``make_server`` with a cheap CallableRM in a separate Python process on 127.0.0.1, then
drives it from this process with C client threads (each its own ``RemoteRM``, retries off so every
failure is counted) for at most ``--requests`` requests or ``--duration`` seconds per concurrency
level. Prints requests/s, p50/p99 latency, the error count, and the server process's RSS (VmRSS
from /proc) before, at its peak during, and after the load, to show memory stays bounded.

    python benchmarks/soak_serve_rm.py --concurrency 1 4 16 --requests 2000 --duration 30

Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from laser.rewards.base import CallableRM  # noqa: E402
from laser.rewards.remote import RemoteRM  # noqa: E402


def cheap_score(prompt: str, response: str) -> float | None:
    """A cheap RM: word count minus a tenth of the prompt length; unscorable when empty."""
    return None if not response else len(response.split()) - 0.1 * len(prompt)


def serve_child() -> None:
    """Child-process entry: serve the cheap RM on a free loopback port and print the port."""
    from laser.rewards.server import make_server

    server = make_server(CallableRM(cheap_score, name="cheap"), port=0)
    print(f"PORT {server.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc/<pid>/status (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"server process did not report its port (got {line!r})")
    url = f"http://127.0.0.1:{line.split()[1]}"
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    return proc, url


def make_batch(batch: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "answer", "is", "42", "because"]
    prompts = [f"Question {i}: what is {int(rng.integers(1000))}?" for i in range(batch)]
    responses = [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(batch)]
    return prompts, responses


def drive(url: str, pid: int, concurrency: int, requests: int, duration: float, batch: int) -> dict:
    """Run one load level; returns the figures."""
    prompts, responses = make_batch(batch, seed=concurrency)
    expected = CallableRM(cheap_score).score(prompts, responses)
    lock = threading.Lock()
    budget = [requests]
    latencies: list[float] = []
    errors: list[str] = []
    rss_peak = [rss_kib(pid)]
    stop_at = time.perf_counter() + duration
    done = threading.Event()

    def client(i: int) -> None:
        rm = RemoteRM(url, f"soak{i}", connect_timeout=5.0, read_timeout=30.0, max_retries=0,
                      breaker_failures=10**9)
        while time.perf_counter() < stop_at:
            with lock:
                if budget[0] == 0:
                    return
                budget[0] -= 1
            t0 = time.perf_counter()
            try:
                out = rm.score(prompts, responses)
                ok = np.array_equal(out, expected, equal_nan=True)
                err = None if ok else "scores differ from the direct call"
            except Exception as exc:  # every failure is a counted error, not a crash
                err = f"{type(exc).__name__}: {exc}"
            with lock:
                latencies.append(time.perf_counter() - t0)
                if err:
                    errors.append(err)

    def monitor() -> None:
        while not done.wait(0.1):
            rss_peak[0] = max(rss_peak[0], rss_kib(pid))

    rss_before = rss_kib(pid)
    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    done.set()
    mon.join()
    lat_ms = np.array(latencies) * 1000.0
    return {
        "concurrency": concurrency, "requests": len(latencies), "seconds": elapsed,
        "req_per_s": len(latencies) / elapsed, "responses_per_s": len(latencies) * batch / elapsed,
        "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
        "errors": len(errors), "first_error": errors[0] if errors else None,
        "rss_before_mib": rss_before / 1024, "rss_peak_mib": max(rss_peak[0], rss_kib(pid)) / 1024,
        "rss_after_mib": rss_kib(pid) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16],
                    help="client threads; several values run one after another on one server")
    ap.add_argument("--requests", type=int, default=2000, help="most requests per level")
    ap.add_argument("--duration", type=float, default=30.0, help="most seconds per level")
    ap.add_argument("--batch", type=int, default=16, help="responses per request")
    ap.add_argument("--json", action="store_true", help="also print each level as a JSON line")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    if args.serve:
        serve_child()
        return 0
    proc, url = start_server()
    try:
        rss_start = rss_kib(proc.pid) / 1024
        print(f"server pid {proc.pid} at {url}; batch {args.batch} responses/request; "
              f"RSS at start {rss_start:.1f} MiB")
        print(f"{'conc':>4} {'requests':>8} {'secs':>6} {'req/s':>8} {'resp/s':>9} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'errors':>6} {'RSS before/peak/after MiB':>26}")
        total_errors = 0
        for c in args.concurrency:
            r = drive(url, proc.pid, c, args.requests, args.duration, args.batch)
            total_errors += r["errors"]
            print(f"{c:>4} {r['requests']:>8} {r['seconds']:>6.1f} {r['req_per_s']:>8.1f} "
                  f"{r['responses_per_s']:>9.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                  f"{r['errors']:>6} {r['rss_before_mib']:>10.1f} /{r['rss_peak_mib']:>6.1f} /"
                  f"{r['rss_after_mib']:>6.1f}", flush=True)
            if r["first_error"]:
                print(f"     first error: {r['first_error']}")
            if args.json:
                print(json.dumps(r))
        print(f"RSS growth over the whole soak: {rss_kib(proc.pid) / 1024 - rss_start:+.1f} MiB; "
              f"errors: {total_errors}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
