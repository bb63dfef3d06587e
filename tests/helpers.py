"""Helpers shared by the tests (import with ``from helpers import ...``; tests/ is on sys.path under
pytest, and scripts run from tests/ put it there themselves). Fixtures stay in conftest.py."""

from __future__ import annotations

import json


def make_tiny_policy(seed: int = 0, hidden: int = 32, layers: int = 1):
    """A randomly initialised character-level Llama policy (left padding for generation)."""
    from laser.bench.policy import make_char_tokenizer, make_tiny_model
    from laser.policy.model import Policy

    tok = make_char_tokenizer("left")
    return Policy(make_tiny_model(tok, hidden=hidden, layers=layers, heads=2, seed=seed), tok)


def write_prompts(path, n: int = 8):
    """``n`` arithmetic prompts with gold answers as a JSONL prompt file (``p0``: "0+0=", answer "0")."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "prompt": f"{i}+{i % 3}=", "answer": str(i + i % 3)}) + "\n")
    return path


def two_cpu_processes(port: str | int | None = "0") -> list[str]:
    """The command that starts a script as 2 gloo processes on CPU: ``python -m accelerate.commands.launch``
    with ``--multi_gpu`` (without CUDA it starts torchrun on gloo); append the script and its arguments.
    ``port``: ``--main_process_port`` ("0": a free one; None: Accelerate's default)."""
    import sys

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd if port is None else [*cmd, "--main_process_port", str(port)]


class Served:
    """A server of ``laser serve-rm``'s config in a thread of this process (``close()`` stops it)."""

    def __init__(self, config: str):
        import threading

        from laser.rewards.server import server_from_config

        self.server = server_from_config(config)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = self.server.url

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def post(url: str, payload: dict) -> tuple[int, dict]:
    """POST ``payload`` as JSON; returns (HTTP status, the JSON answer), error statuses included."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_cheap_serve_rm(tmp_path):
    """``python -m laser.cli.main serve-rm`` in a child process serving benchmarks/soak_serve_rm.py's
    cheap RM on a free port; returns ``(proc, url, stderr_path)`` once it prints its banner. Its stderr
    goes to a file and its stdout is drained: a pipe nobody reads can fill and block the server."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "rm.yaml"
    cfg.write_text("rewards:\n  - {name: cheap, type: callable, fn: 'soak_serve_rm:cheap_score'}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "benchmarks"), str(repo)])}
    err = tmp_path / "server.stderr"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "laser.cli.main", "serve-rm", "--config", str(cfg), "--port", str(port)],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    line = proc.stdout.readline()
    if "serving reward models ['cheap']" not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"serve-rm did not start: {line!r}\n{err.read_text()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, f"http://127.0.0.1:{port}", err
