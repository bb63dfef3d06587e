"""Small helpers of the training loop: seeds, per-prompt loss shares and strict-JSON log records."""

from __future__ import annotations

import numpy as np


def step_seed(*parts: int) -> int:
    """A 32-bit seed drawn from integer parts (seed, iteration, step, rank) by ``SeedSequence``."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


def per_prompt(pair_losses: np.ndarray, prompt_of: np.ndarray, n_prompts: int) -> np.ndarray:
    out = np.full(n_prompts, np.nan)
    for i in range(n_prompts):
        mine = pair_losses[prompt_of == i]
        if len(mine):
            out[i] = mine.mean()
    return out


def finite_or_none(obj):
    """NaN/inf become null so every log line is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)
