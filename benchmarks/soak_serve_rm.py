"""Soak test of the reward-model server: a second process on loopback, concurrent clients.

Starts ``make_server`` with a cheap CallableRM in a separate Python process on 127.0.0.1, then
drives it from this process with C client threads (each its own ``RemoteRM``, retries off so every
failure is counted) for at most ``--requests`` requests or ``--duration`` seconds per concurrency
level. Prints requests/s, p50/p99 latency, the error count, and the server process's RSS (VmRSS
from /proc) before, at its peak during, and after the load, to show memory stays bounded.

    python benchmarks/soak_serve_rm.py --concurrency 1 4 16 --requests 2000 --duration 30

``--routed`` measures the routed reward instead: a server of the five demo RMs with a ``router:``
section, driven the way OpenRLHF drives it (one query per request, the 4 rollouts of each prompt
with its gold label), first through one RM's own URL (``/get_reward?rm=math_expert``, no routing),
then through the routed URL (``/get_reward``), on the same server; then the server is killed with
SIGKILL and restarted on the same config, and what it remembers is printed next to what it knew.

    python benchmarks/soak_serve_rm.py --routed --concurrency 4 --groups 300 --strategy bandit reliability

``--strategy`` names the routed servers to measure, one after another in this process: ``bandit``
(epsilon-greedy, learns from the gold labels) and ``reliability`` (label-free: a request group is a
probe scored by every RM, or goes to its group's best RM; the group is the request's
``data_source`` field, the demo domain; the label model refits outside the request lock, in the
server's child process), ``reliability-thread`` (the same, the refits computed in a thread of the
server process), ``reliability-lock`` (the refit in the request that completes a probe, under the
lock: the server before the refits moved out). Each prints its RM calls per response (probes
included).

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


def serve_config_child(config: str, refit: str = "process") -> None:
    """Child-process entry: ``server_from_config(config)`` on a free loopback port (``refit``: the
    server's ``refit_mode``)."""
    from laser.rewards.server import RMServer, server_from_config

    RMServer.refit_mode = refit
    server = server_from_config(config)
    print(f"PORT {server.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def start_server(config: str | None = None, refit: str = "process") -> tuple[subprocess.Popen, str]:
    args = ["--serve"] if config is None else ["--serve-config", config, "--refit", refit]
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
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
        rm = RemoteRM(url, f"soak{i}", connect_timeout=5.0, read_timeout=30.0, max_retries=0, breaker_failures=10**9)
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
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": elapsed,
        "req_per_s": len(latencies) / elapsed,
        "responses_per_s": len(latencies) * batch / elapsed,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": max(rss_peak[0], rss_kib(pid)) / 1024,
        "rss_after_mib": rss_kib(pid) / 1024,
    }


ROUTED_CONFIG = """\
rewards:
  - {name: math_expert, type: demo}
  - {name: logic_expert, type: demo}
  - {name: generalist, type: demo}
  - {name: length_lover, type: demo}
  - {name: noise, type: demo}
router: {%s, group_size: 4, task: number, save_every: 16, state_dir: %s}
"""

#: --strategy -> the router section's selector
STRATEGIES = {
    "bandit": "selector: epsilon_greedy, selector_options: {epsilon: 0.1}",
    "reliability": "selector: reliability, selector_options: {anchor: generalist}, group_key: data_source",
}
#: reliability with the label model's refits computed elsewhere than the server's child process
#: (RMServer.refit_mode): in its refit thread, or under the request lock (the behaviour before)
STRATEGIES["reliability-thread"] = STRATEGIES["reliability-lock"] = STRATEGIES["reliability"]
REFIT = {"thread": "thread", "lock": "lock"}


def rollout_groups(n: int, seed: int = 0) -> list[tuple[str, list[str], str, str]]:
    """``n`` (prompt, 4 responses, gold, domain) of the demo benchmark's number domains: the worked
    answer and three wrong ones, as a GRPO-style group of rollouts."""
    from laser.bench.tasks import make_benchmark, worked_response, wrong_response

    rng = np.random.default_rng(seed)
    examples = make_benchmark(n_per_domain=(n + 1) // 2, seed=seed, domains=("arith", "count"))[:n]
    return [
        (e.prompt, [worked_response(e.prompt)] + [wrong_response(e, rng) for _ in range(3)], e.answer, e.domain)
        for e in examples
    ]


def drive_groups(url: str, groups: list, concurrency: int, rm: str | None) -> dict:
    """OpenRLHF's traffic: one query per request; client c sends the rollouts of groups c, c+C, ..."""
    lock, latencies, errors, picks = threading.Lock(), [], [], {}

    def client(c: int) -> None:
        for g in range(c, len(groups), concurrency):
            prompt, responses, gold, domain = groups[g]
            for r in responses:
                body = {"query": [prompt + r], "prompts": [prompt], "labels": [gold], "data_source": [domain]}
                body = json.dumps(body).encode()
                req = urllib.request.Request(
                    url + "/get_reward" + (f"?rm={rm}" if rm else ""),
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        answer = json.loads(resp.read())
                    err = None if len(answer["rewards"]) == 1 else f"bad answer {answer}"
                except Exception as exc:  # counted, not raised
                    answer, err = None, f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if err:
                        errors.append(err)
                    elif rm is None:
                        picks.setdefault(g, set()).add(answer["rm"][0])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    lat_ms = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "picks": picks,
    }


def get_health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        return json.loads(resp.read())


def routed_main(args) -> int:
    """One RM's URL, then each ``--strategy``'s routed URL, each strategy on its own server (the
    fixed URL on the first), then SIGKILL and restart: the figures of docs/remote_rm.md."""
    import tempfile

    groups = rollout_groups(args.groups)
    print(f"5 demo RMs, {len(groups)} groups x 4 rollouts, one query per request, {args.concurrency[0]} clients")
    rows = {}
    for n, strategy in enumerate(args.strategy):
        folder = Path(tempfile.mkdtemp(prefix=f"laser_routed_soak_{strategy}_"))
        config = folder / "rm.yaml"
        config.write_text(ROUTED_CONFIG % (STRATEGIES[strategy], folder / "state"))
        proc, url = start_server(str(config), REFIT.get(strategy.split("-")[-1], "process"))
        try:
            runs = [("fixed (?rm=math_expert)", "math_expert")] if n == 0 else []
            for label, rm in [*runs, (f"routed {strategy}", None)]:
                r = rows[label] = drive_groups(url, groups, args.concurrency[0], rm)
                before = get_health(url)["router"]
                calls = 1.0 if rm else sum(before["rows_scored"]) / r["requests"]
                print(
                    f"{label:<24} {r['requests']:>6} requests {r['seconds']:>6.1f} s {r['req_per_s']:>8.1f} req/s "
                    f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms errors {r['errors']} "
                    f"RM calls/response {calls:.2f}",
                    flush=True,
                )
            report_routed(strategy, rows, before)
        finally:
            proc.kill()  # SIGKILL: no shutdown code runs
            proc.wait(timeout=10)
        proc, url = start_server(str(config), REFIT.get(strategy.split("-")[-1], "process"))
        try:
            after = get_health(url)["router"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        done = ("learned", "tied") if strategy == "bandit" else ("learned", "routed", "empty")
        state = "counts" if strategy == "bandit" else "groups"
        short = (lambda g: {k: v["rm"] for k, v in g.items()}) if state == "groups" else (lambda c: c)
        for when, h in (("before kill -9", before), ("after restart ", after)):
            print(
                f"{when}: {sum(h[k] for k in done)} groups, {state} {short(h[state])}, saves {h['saves']}, "
                f"resumed from {Path(h['resumed_from'] or 'none').name}"
            )
    errors = sum(r["errors"] for r in rows.values())
    return 1 if errors else 0


def report_routed(strategy: str, rows: dict, health: dict) -> None:
    """Throughput against the fixed URL, groups answered by two RMs, RM shares in the last third."""
    fixed, routed = rows.get("fixed (?rm=math_expert)"), rows[f"routed {strategy}"]
    if fixed:
        print(f"routed {strategy} / fixed throughput: {routed['req_per_s'] / fixed['req_per_s']:.2f}")
    picks = routed["picks"]
    mixed = sum(len(p) > 1 for p in picks.values())
    last = [next(iter(picks[g])) for g in sorted(picks)[-len(picks) // 3 :]]
    share = {n: round(last.count(n) / len(last), 2) for n in sorted(set(last))}
    print(f"groups answered by more than one RM: {mixed}; RM shares over the last third of groups: {share}")
    if strategy.startswith("reliability"):
        probes = {g: (v["rm"], v["status"], v["probes"], v["prompts"]) for g, v in health["groups"].items()}
        print(f"per group (RM, status, probe groups, groups): {probes}; label model {health['label_model_s']} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4, 16],
        help="client threads; several values run one after another on one server",
    )
    ap.add_argument("--requests", type=int, default=2000, help="most requests per level")
    ap.add_argument("--duration", type=float, default=30.0, help="most seconds per level")
    ap.add_argument("--batch", type=int, default=16, help="responses per request")
    ap.add_argument("--json", action="store_true", help="also print each level as a JSON line")
    ap.add_argument("--routed", action="store_true", help="routed vs fixed RM, then kill -9 and restart")
    ap.add_argument("--groups", type=int, default=300, help="--routed: prompt groups of 4 rollouts")
    ap.add_argument(
        "--strategy",
        nargs="+",
        choices=sorted(STRATEGIES),
        default=["bandit", "reliability"],
        help="--routed: the routed servers to measure, in this order",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # child process
    ap.add_argument("--serve-config", default=None, help=argparse.SUPPRESS)  # child process, from a config
    ap.add_argument("--refit", default="process", help=argparse.SUPPRESS)  # child: RMServer.refit_mode
    args = ap.parse_args(argv)
    if args.serve:
        serve_child()
        return 0
    if args.serve_config:
        serve_config_child(args.serve_config, args.refit)
        return 0
    if args.routed:
        return routed_main(args)
    proc, url = start_server()
    try:
        rss_start = rss_kib(proc.pid) / 1024
        print(f"server pid {proc.pid} at {url}; batch {args.batch} responses/request; RSS at start {rss_start:.1f} MiB")
        print(
            f"{'conc':>4} {'requests':>8} {'secs':>6} {'req/s':>8} {'resp/s':>9} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'errors':>6} {'RSS before/peak/after MiB':>26}"
        )
        total_errors = 0
        for c in args.concurrency:
            r = drive(url, proc.pid, c, args.requests, args.duration, args.batch)
            total_errors += r["errors"]
            print(
                f"{c:>4} {r['requests']:>8} {r['seconds']:>6.1f} {r['req_per_s']:>8.1f} "
                f"{r['responses_per_s']:>9.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                f"{r['errors']:>6} {r['rss_before_mib']:>10.1f} /{r['rss_peak_mib']:>6.1f} /"
                f"{r['rss_after_mib']:>6.1f}",
                flush=True,
            )
            if r["first_error"]:
                print(f"     first error: {r['first_error']}")
            if args.json:
                print(json.dumps(r))
        print(
            f"RSS growth over the whole soak: {rss_kib(proc.pid) / 1024 - rss_start:+.1f} MiB; errors: {total_errors}"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
