"""The demo's reward models: real scoring functions with known reliability profiles.

Five RMs over the synthetic benchmark (``laser.bench.tasks``), none of which reads a gold
answer: the experts *solve* the prompt from its text and check the response's extracted answer.

==============  =============================================================================
name            behaviour
==============  =============================================================================
math_expert     reliable on ``arith`` and ``count`` (numeric answers): full credit for the right
                number, partial credit shrinking with the distance to it; hash noise elsewhere.
logic_expert    reliable on ``compare`` (yes/no) and ``choice`` (letter): full credit for the
                right verdict, partial credit for a correct worked sum / a near-maximal option;
                hash noise elsewhere.
generalist      every domain, moderately reliable: right/wrong plus Gaussian noise (sd 1.2), so a
                correct response outscores a wrong one about 72% of the time.
length_lover    degenerate: the response's length in characters (longer is better).
noise           pure noise: a uniform number per (prompt, response).
==============  =============================================================================

All noise is a deterministic hash of (seed, RM name, prompt, response): scoring the same pair
twice gives the same score, and different RMs' noise is independent. Experts add a 0.01-wide hash
jitter so that distinct responses almost never tie (the training loop drops tied pairs) without
changing which of a right and a wrong answer wins.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from laser.bench.tasks import DOMAIN_TASKS, solve
from laser.rewards.base import check_scores
from laser.tasks.extract import extract_answer

__all__ = ["SyntheticRM", "demo_rm", "make_demo_rms", "measure_reliability", "quality"]

_JITTER = 0.01


def _hash_uniform(*parts: object) -> float:
    """A uniform number in [0, 1) that is a deterministic function of ``parts``."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def _hash_normal(*parts: object) -> float:
    """A standard normal number that is a deterministic function of ``parts`` (Box-Muller)."""
    u1 = 1.0 - _hash_uniform("n1", *parts)  # in (0, 1], safe for log
    u2 = _hash_uniform("n2", *parts)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _numeric_quality(truth: str, got: str | None) -> float:
    if got is None:
        return 0.0
    diff = abs(float(got) - float(truth))
    return 1.0 if diff == 0 else 0.5 / (1.0 + diff)


def _compare_quality(prompt: str, response: str, truth: str, got: str | None) -> float:
    body = prompt.strip()
    a, b = body[3:].split(">")[0].split("+")  # "Is A+B>C?"
    sum_ok = f"{a}+{b}={int(a) + int(b)}" in response
    return 0.75 * (got == truth) + 0.25 * sum_ok


def _choice_quality(prompt: str, truth: str, got: str | None) -> float:
    if got is None:
        return 0.0
    if got == truth:
        return 1.0
    body = prompt.strip()
    values = [int(part.split(".")[1]) for part in body.split(" ")[1:]]
    chosen = values["ABCD".index(got)]
    if body.startswith("Max?"):  # v1: credit by the chosen option's rank
        rank = sorted(values).index(chosen)  # 0 = smallest, 3 = largest
        return 0.5 * rank / 3.0
    return _numeric_quality(str(values["ABCD".index(truth)]), str(chosen))  # v2 "a+b=?": by distance


def quality(prompt: str, response: str) -> float | None:
    """How good a response is, judged by solving the prompt itself (no gold answer is read).

    Returns:
        1.0 for the right final answer (on ``compare``: 0.75 for the right verdict plus 0.25 when
        the worked sum is right too); a partial credit below 0.5 for a wrong one (at most 0.25 on
        ``compare``, for a right sum with a wrong verdict); 0.0 when no answer can be extracted;
        ``None`` when the prompt is not a synthetic benchmark prompt.
    """
    solved = solve(prompt)
    if solved is None:
        return None
    domain, truth = solved
    got = extract_answer(DOMAIN_TASKS[domain], response)
    if domain in ("arith", "count"):
        return _numeric_quality(truth, got)
    if domain == "compare":
        return _compare_quality(prompt, response, truth, got)
    return _choice_quality(prompt, truth, got)


class SyntheticRM:
    """One of the demo's reward models (see the module docstring for the kinds).

    Args:
        name: the RM's name.
        kind: ``"expert"``, ``"generalist"``, ``"length"`` or ``"noise"``.
        domains: for experts, the domains where they judge.
        seed: seeds every hash-noise draw.
        noise_sd: the generalist's Gaussian noise on its right/wrong judgement.
        off_domain: what an expert does on a benchmark prompt outside ``domains``: ``"noise"``
            (v1: uniform hash noise) or ``"inverse"`` (v2: ``1 - quality`` plus the jitter, so it
            confidently prefers wrong answers there).
    """

    KINDS = ("expert", "generalist", "length", "noise")
    OFF_DOMAIN = ("noise", "inverse")

    def __init__(
        self,
        name: str,
        kind: str,
        domains: Sequence[str] = (),
        seed: int = 0,
        noise_sd: float = 1.2,
        off_domain: str = "noise",
    ):
        if kind not in self.KINDS:
            raise ValueError(f"SyntheticRM {name!r}: unknown kind {kind!r}; valid: {self.KINDS}")
        unknown = set(domains) - set(DOMAIN_TASKS)
        if unknown:
            raise ValueError(f"SyntheticRM {name!r}: unknown domains {sorted(unknown)}")
        if off_domain not in self.OFF_DOMAIN:
            raise ValueError(f"SyntheticRM {name!r}: unknown off_domain {off_domain!r}; valid: {self.OFF_DOMAIN}")
        self.name, self.kind, self.domains = name, kind, tuple(domains)
        self.seed, self.noise_sd, self.off_domain = seed, noise_sd, off_domain

    def _score_one(self, prompt: str, response: str) -> float:
        key = (self.seed, self.name, prompt, response)
        if self.kind == "noise":
            return _hash_uniform(*key)
        if self.kind == "length":
            return len(response) + 0.5 * _hash_uniform(*key)
        solved = solve(prompt)
        if self.kind == "expert":
            if solved is None or (solved[0] not in self.domains and self.off_domain == "noise"):
                return _hash_uniform(*key)
            q = quality(prompt, response)
            return (q if solved[0] in self.domains else 1.0 - q) + _JITTER * _hash_uniform(*key)
        if solved is None:  # generalist on a foreign prompt: it has no idea
            return self.noise_sd * _hash_normal(*key)
        domain, truth = solved
        right = extract_answer(DOMAIN_TASKS[domain], response) == truth
        return float(right) + self.noise_sd * _hash_normal(*key)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each (prompt, response) pair; float64 array of ``len(responses)``."""
        if len(prompts) != len(responses):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(responses)} responses")
        scores = [self._score_one(p, r) for p, r in zip(prompts, responses, strict=True)]
        return check_scores(scores, len(responses), self.name)

    def __repr__(self) -> str:
        return f"SyntheticRM(name={self.name!r}, kind={self.kind!r}, domains={self.domains})"


def make_demo_rms(seed: int = 0, version: str = "v1") -> list[SyntheticRM]:
    """The demo's five RMs, in arm order: math_expert, logic_expert, generalist, length_lover,
    noise. ``seed`` seeds their hash noise (the experts' judgements do not depend on it).

    ``version`` is the benchmark version (``laser.bench.tasks.VERSIONS``): in ``"v1"`` an
    expert returns noise outside its domains, in ``"v2"`` it prefers wrong answers there.
    """
    off = {"v1": "noise", "v2": "inverse"}
    if version not in off:
        raise ValueError(f"make_demo_rms: unknown benchmark version {version!r}; valid: {', '.join(off)}")
    return [
        SyntheticRM("math_expert", "expert", ("arith", "count"), seed=seed, off_domain=off[version]),
        SyntheticRM("logic_expert", "expert", ("compare", "choice"), seed=seed, off_domain=off[version]),
        SyntheticRM("generalist", "generalist", seed=seed),
        SyntheticRM("length_lover", "length", seed=seed),
        SyntheticRM("noise", "noise", seed=seed),
    ]


def measure_reliability(rm, examples, seed: int = 0, style: str = "v1") -> dict[str, float]:
    """Share of examples where ``rm`` scores the correct worked response above a wrong one.

    The wrong response is ``laser.bench.tasks.wrong_response`` (gold answer perturbed); both
    are written in the response ``style`` (``laser.bench.tasks.STYLES``). A tie counts as
    half. Returns ``{domain: share}`` in [0, 1].
    """
    from laser.bench.tasks import worked_response, wrong_response

    rng = np.random.default_rng(seed)
    prompts = [e.prompt for e in examples]
    right = rm.score(prompts, [worked_response(e.prompt, style=style) for e in examples])
    wrong = rm.score(prompts, [wrong_response(e, rng, style) for e in examples])
    wins: dict[str, list[float]] = {}
    for ex, r, w in zip(examples, right, wrong, strict=True):
        wins.setdefault(ex.group, []).append(1.0 if r > w else 0.5 if r == w else 0.0)
    return {d: float(np.mean(v)) for d, v in wins.items()}


def demo_rm(name: str, which: str | None = None, seed: int = 0, version: str = "v1") -> SyntheticRM:
    """One demo RM by its name: the ``demo`` type of a run config's ``rewards:`` (``which`` defaults
    to ``name``; ``version``: the benchmark version, see :func:`make_demo_rms`)."""
    rms = {rm.name: rm for rm in make_demo_rms(seed=seed, version=version)}
    key = which or name
    if key not in rms:
        raise ValueError(f"unknown demo reward model {key!r}; valid: {', '.join(rms)}")
    rm = rms[key]
    rm.name = name
    return rm
