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
