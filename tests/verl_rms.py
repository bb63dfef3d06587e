"""Reward functions for the verl routing tests (``type: callable`` specs ``verl_rms:NAME``).

Prompts are ``What is A+B?`` and responses ``The answer is X.``; the truth is A + B. Every call
appends ``name<TAB>pid<TAB>response`` to the file named by ``LASER_VERL_RM_LOG`` (when set), so a
test can count which RM scored which row, also from other processes (Ray workers).
"""

from __future__ import annotations

import os
import re

_Q = re.compile(r"What is (\d+)\+(\d+)\?")
_A = re.compile(r"answer is (-?\d+)")


def _record(name: str, response: str) -> None:
    path = os.environ.get("LASER_VERL_RM_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name}\t{os.getpid()}\t{response}\n")


def _error(prompt: str, response: str) -> float:
    a, b = map(int, _Q.search(prompt).groups())
    return abs(int(_A.search(response).group(1)) - (a + b))


def good(prompt: str, response: str) -> float:
    """Closer to the truth is better: ``-|X - (A + B)|``."""
    _record("good", response)
    return -float(_error(prompt, response))


def bad(prompt: str, response: str) -> float:
    """The reverse ranking: ``+|X - (A + B)|`` (prefers wrong answers)."""
    _record("bad", response)
    return float(_error(prompt, response))


def broken(prompt: str, response: str) -> float:
    _record("broken", response)
    raise ConnectionError("judge server unreachable")


def unscorable(prompt: str, response: str) -> float | None:
    _record("unscorable", response)
    return None


def rm_spec(name: str) -> dict:
    return {"name": name, "type": "callable", "fn": f"verl_rms:{name}"}


def read_log(path) -> list[tuple[str, int, str]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [(n, int(p), r) for n, p, r in (line.rstrip("\n").split("\t") for line in f)]
