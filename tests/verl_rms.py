"""Reward functions for the verl routing tests (``type: callable`` specs ``verl_rms:NAME``).

Prompts are ``What is A+B?`` and responses ``The answer is X.``; the truth is A + B. Every call
appends ``name<TAB>pid<TAB>response`` to the file named by ``LASER_VERL_RM_LOG`` (when set), so a
test can count which RM scored which row, also from other processes (Ray workers). The reliability
tests' RMs read the prompt's domain from its first word (``alpha: What is A+B?``).
"""

from __future__ import annotations

import os
import re
import zlib

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


def _u(name: str, prompt: str, response: str) -> float:
    """A fixed uniform draw in [0, 1) per (RM, prompt, response): deterministic noise."""
    return zlib.crc32(f"{name}|{prompt}|{response}".encode()) / 2**32


def _expert(name: str, domain: str, prompt: str, response: str) -> float:
    """Right on its own domain's prompts (``-|err|``), the reverse elsewhere (``+|err|``), plus
    noise 1.5 u: on its domain it orders every pair with gaps of 2 or more and flips a gap of 1 with
    probability (1 - 1/1.5)^2 / 2 = 0.056 (pairwise accuracy about 0.99 over a group's 6 pairs)."""
    _record(name, response)
    sign = -1.0 if prompt.startswith(domain) else 1.0
    return sign * _error(prompt, response) + 1.5 * _u(name, prompt, response)


def alpha_expert(prompt: str, response: str) -> float:
    return _expert("alpha_expert", "alpha", prompt, response)


def beta_expert(prompt: str, response: str) -> float:
    return _expert("beta_expert", "beta", prompt, response)


def generalist(prompt: str, response: str) -> float:
    """``-|err| + 8 u`` on every prompt: a gap g flips with probability (1 - g/8)^2 / 2, which over
    the 6 gaps of answers A+B+{0, 1, 3, 7} (1, 2, 3, 4, 6, 7) gives pairwise accuracy about 0.83:
    better than chance everywhere (the anchor), worse than each domain's expert."""
    _record("generalist", response)
    return -_error(prompt, response) + 8.0 * _u("generalist", prompt, response)


def noise(prompt: str, response: str) -> float:
    """Pure noise: pairwise accuracy 0.5."""
    _record("noise", response)
    return _u("noise", prompt, response)


def rm_spec(name: str) -> dict:
    return {"name": name, "type": "callable", "fn": f"verl_rms:{name}"}


def read_log(path) -> list[tuple[str, int, str]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [(n, int(p), r) for n, p, r in (line.rstrip("\n").split("\t") for line in f)]
