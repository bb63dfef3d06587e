"""Build reward models from config specs (one mapping per RM).

A spec has ``name`` and ``type``; the other keys are the adapter's constructor arguments.
``noise_sigma`` (any type) adds seeded Gaussian noise to the scores, for robustness studies.
Model-backed types (``hf_classifier``, ``implicit_dpo``, ``judge``) take ``device`` (auto | cpu |
cuda | cuda:N) and ``offload`` (true | false); see :mod:`laser.rewards.placement`.
Specs are checked against the adapter's signature before anything is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect

import numpy as np

from laser.rewards.base import CallableRM
from laser.rewards.placement import MODEL_BACKED, availability_problem, device_problem

# type -> "module:Class"; modules import lazily so `import laser` stays light
ADAPTERS = {
    "callable": "laser.rewards.factory:_callable_from_spec",
    "hf_classifier": "laser.rewards.hf:HFClassifierRM",
    "implicit_dpo": "laser.rewards.implicit:ImplicitDPORM",
    "judge": "laser.rewards.judge:YesNoJudgeRM",
    "remote": "laser.rewards.remote:RemoteRM",
    "demo": "laser.bench.rms:demo_rm",
    "length": "laser.rewards.rules:LengthRM",
    "regex": "laser.rewards.rules:RegexRM",
    "verifier": "laser.rewards.rules:VerifierRM",
}
COMMON = ("name", "type", "noise_sigma", "noise_seed", "add_at_step")


def _import(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _callable_from_spec(name: str, fn: str, batched: bool = False) -> CallableRM:
    """``fn`` is ``"package.module:function"``."""
    return CallableRM(_import(fn), name=name, batched=batched)


def _placement_problems(i: int, spec: dict) -> list[str]:
    """``device`` / ``offload`` problems of spec ``i`` (format only; see :func:`check_devices`)."""
    kind, who = spec.get("type"), f"reward model {spec.get('name')!r}"
    keys = [k for k in ("device", "offload") if k in spec]
    if kind not in MODEL_BACKED:
        where = (
            "it is placed by its server: set device/offload in the `laser serve-rm` config"
            if kind == "remote"
            else f"only {', '.join(MODEL_BACKED)} load a model"
        )
        return [f"rewards[{i}].{k}: {who} (type {kind}) takes no {k}; {where}" for k in keys]
    problems = []
    if "device" in spec and device_problem(spec["device"]):
        problems.append(f"rewards[{i}].device: {who}: {device_problem(spec['device'])}")
    if "offload" in spec and not isinstance(spec["offload"], bool):
        problems.append(f"rewards[{i}].offload: {who}: must be true or false, got {spec['offload']!r}")
    return problems


def check_devices(specs: list[dict]) -> list[str]:
    """Devices the specs name that this machine does not have (checked before any model loads)."""
    problems = []
    for i, spec in enumerate(specs):
        device = spec.get("device", "auto") if spec.get("type") in MODEL_BACKED else "auto"
        why = None if device_problem(device) else availability_problem(device)
        if why:
            problems.append(f"rewards[{i}].device: reward model {spec.get('name')!r}: {why}")
    return problems


def check_specs(specs: list[dict]) -> list[str]:
    """Problems with RM specs (unknown type, unknown or missing arguments, bad device or offload),
    by dotted key. Whether a named CUDA device exists is left to :func:`check_devices` (a config
    for a GPU machine validates on a laptop)."""
    problems = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            continue  # reported by the config validator
        kind = spec.get("type")
        if kind not in ADAPTERS:
            problems.append(f"rewards[{i}].type: {kind!r} is not one of {', '.join(ADAPTERS)}")
            continue
        placement = _placement_problems(i, spec)
        problems += placement
        try:
            params = inspect.signature(_import(ADAPTERS[kind])).parameters
        except ImportError as exc:
            problems.append(f"rewards[{i}].type: {kind} needs an optional package: {exc}")
            continue
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for key in spec:
            if placement and key in ("device", "offload"):
                continue  # already reported, with the reason
            if key not in COMMON and key not in params and not has_var_kw:
                problems.append(
                    f"rewards[{i}].{key}: unknown argument for type {kind} "
                    f"(valid: {', '.join(k for k in params if k != 'self')})"
                )
        for pname, p in params.items():
            required = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            if required and pname not in spec and pname != "name":
                problems.append(f"rewards[{i}].{pname}: required for type {kind}")
        join = spec.get("add_at_step", 0)
        if not isinstance(join, int) or isinstance(join, bool) or join < 0:
            problems.append(f"rewards[{i}].add_at_step: must be an integer step >= 0, got {join!r}")
        sigma = spec.get("noise_sigma", 0)
        if not isinstance(sigma, (int, float)) or sigma < 0:
            problems.append(f"rewards[{i}].noise_sigma: must be a number >= 0, got {sigma!r}")
    return problems


def build_reward_model(spec: dict):
    """One RM from its spec (see module docstring)."""
    kwargs = {k: v for k, v in spec.items() if k not in COMMON}
    rm = _import(ADAPTERS[spec["type"]])(name=spec["name"], **kwargs)
    if spec.get("noise_sigma"):
        rm = NoisyRM(rm, float(spec["noise_sigma"]), int(spec.get("noise_seed", 0)))
    return rm


def build_reward_models(specs: list[dict]) -> list:
    """RMs from a list of specs, after checking all of them (ValueError lists every problem)."""
    problems = check_specs(specs)
    problems = problems or check_devices(specs)
    if problems:
        raise ValueError("invalid reward model specs:\n  " + "\n  ".join(problems))
    return [build_reward_model(s) for s in specs]


class NoisyRM:
    """Adds Gaussian noise ``N(0, sigma^2)`` to another RM's scores.

    The noise for a (prompt, response) pair is drawn from a generator seeded by a hash of
    (seed, prompt, response), so it is reproducible and needs no RNG state in checkpoints.
    NaN scores stay NaN.
    """

    def __init__(self, rm, sigma: float, seed: int = 0):
        self.rm, self.sigma, self.seed, self.name = rm, sigma, seed, rm.name

    def __getattr__(self, attr):  # available(), url, last_error of a wrapped remote RM
        return getattr(self.rm, attr)

    def score(self, prompts, responses) -> np.ndarray:
        base = np.asarray(self.rm.score(prompts, responses), dtype=np.float64)
        noise = np.array([self._draw(p, r) for p, r in zip(prompts, responses, strict=True)])
        return base + noise

    def _draw(self, prompt: str, response: str) -> float:
        digest = hashlib.sha256(f"{self.seed}\x00{prompt}\x00{response}".encode()).digest()
        return float(np.random.default_rng(int.from_bytes(digest[:8], "little")).normal(0.0, self.sigma))
