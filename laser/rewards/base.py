"""The reward-model protocol and the plain-callable adapter.

Every reward model (RM) in laser-rm is an object with a ``name`` and a
``score(prompts, responses) -> np.ndarray`` method. The returned array is float64 of
shape ``(len(responses),)``; ``NaN`` means "this response could not be scored" and is
never silently replaced by 0. Pair building drops NaN-scored responses.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np


class RewardModelError(RuntimeError):
    """A reward model failed or returned something that is not a valid score array."""


@runtime_checkable
class RewardModel(Protocol):
    """What the training loop needs from a reward model.

    Attributes:
        name: a short unique name used in logs, configs and result tables.
    """

    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each (prompt, response) pair.

        Args:
            prompts: one prompt per response (prompts repeat when a prompt has n responses).
            responses: the responses, same length as ``prompts``.

        Returns:
            float64 array of shape ``(len(responses),)``; NaN marks an unscorable response.
        """
        ...


def check_scores(scores: object, n: int, name: str) -> np.ndarray:
    """Validate an RM's output and return it as a float64 vector.

    Raises:
        RewardModelError: wrong shape or length, or values that are not numbers. NaN is allowed
            (unscorable); +-inf is not, because it would dominate any ranking or ensemble.
    """
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RewardModelError(f"reward model {name!r} returned non-numeric scores: {exc}") from exc
    if arr.ndim != 1 or arr.shape[0] != n:
        raise RewardModelError(f"reward model {name!r} returned scores of shape {arr.shape}, expected ({n},)")
    if np.isinf(arr).any():
        raise RewardModelError(f"reward model {name!r} returned infinite scores")
    return arr


class CallableRM:
    """Wrap a Python function as a reward model.

    Args:
        fn: either ``fn(prompt, response) -> float | None`` (``batched=False``) or
            ``fn(prompts, responses) -> sequence of floats`` (``batched=True``).
            ``None`` or NaN marks an unscorable response.
        name: the RM's name; defaults to the function's ``__name__``.
        batched: whether ``fn`` takes whole lists.
    """

    def __init__(self, fn: Callable, name: str | None = None, batched: bool = False):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable_rm")
        self.batched = batched

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if self.batched:
            raw = self.fn(list(prompts), list(responses))
            raw = [np.nan if v is None else v for v in raw]
        else:
            raw = []
            for p, r in zip(prompts, responses, strict=True):
                v = self.fn(p, r)
                raw.append(np.nan if v is None else v)
        return check_scores(raw, len(responses), self.name)

    def __repr__(self) -> str:
        return f"CallableRM(name={self.name!r})"
