"""Scoring responses with the picked reward models, isolating the ones that fail.

The pool counts RM calls (one per RM per response scored), remembers each RM's last error,
and keeps the selector's arm mask in step with which RMs are up: an RM that raises
:class:`~laser.rewards.base.RewardModelError` is masked; an RM with an ``available()`` method
(a remote RM's circuit breaker) is unmasked again once it reports itself available.
"""

from __future__ import annotations

import logging

import numpy as np

from laser.rewards.base import RewardModelError, check_scores

log = logging.getLogger("laser")


class AllRewardModelsDown(RuntimeError):
    """Every reward model failed; the message names each one and its last error."""


class RewardPool:
    """The run's reward models with call counters and failure isolation.

    Args:
        rms: the reward models; arm k is ``rms[k]``.
    """

    def __init__(self, rms: list, join_at: dict[int, int] | None = None):
        self.rms = list(rms)
        self.join_at = dict(join_at or {})  # arm -> global step (1-based) at which the RM joins the run
        self.calls = np.zeros(len(rms), dtype=np.int64)
        self.last_errors: dict[int, str] = {}
        self.down: set[int] = set()

    @property
    def names(self) -> list[str]:
        return [rm.name for rm in self.rms]

    def add(self, rm) -> int:
        self.rms.append(rm)
        self.calls = np.append(self.calls, 0)
        return len(self.rms) - 1

    def waiting(self, step: int) -> set[int]:
        """Arms whose RM has not joined the run yet at 1-based global ``step``."""
        return {k for k, at in self.join_at.items() if step < at}

    def refresh(self, selector=None, step: int = 1) -> list[str]:
        """Re-check RMs that report availability; sync the selector's mask. Returns events."""
        events = [f"reward model {self.rms[k].name!r} joins at step {step}"
                  for k, at in self.join_at.items() if at == step]
        for k, rm in enumerate(self.rms):
            check = getattr(rm, "available", None)
            if check is None:
                continue
            up = bool(check())
            if up and k in self.down:
                self.down.discard(k)
                events.append(f"reward model {rm.name!r} is available again")
            elif not up and k not in self.down:
                self.down.add(k)
                events.append(f"reward model {rm.name!r} unavailable: {self.last_errors.get(k, 'circuit open')}")
        if selector is not None:
            off = self.down | self.waiting(step)
            for k in range(len(self.rms)):
                (selector.mask_arm if k in off else selector.unmask_arm)(k)
        return events

    def mark_down(self, k: int, error: Exception, selector=None) -> str:
        self.down.add(k)
        self.last_errors[k] = f"{error.__class__.__name__}: {error}"
        if selector is not None:
            selector.mask_arm(k)
        self.raise_if_all_down()
        return f"reward model {self.rms[k].name!r} failed and is masked: {self.last_errors[k]}"

    def raise_if_all_down(self) -> None:
        if self.down and len(self.down) == len(self.rms):
            detail = "; ".join(
                f"{rm.name} ({getattr(rm, 'url', 'local')}): {self.last_errors.get(k, 'unavailable')}"
                for k, rm in enumerate(self.rms))
            raise AllRewardModelsDown(f"every reward model is down: {detail}")

    def score(self, k: int, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Scores from RM ``k``.

        Raises:
            RewardModelError: the RM failed or returned invalid output; its ``arm`` attribute is ``k``.
        """
        self.calls[k] += len(responses)
        rm = self.rms[k]
        try:
            return check_scores(rm.score(prompts, responses), len(responses), rm.name)
        except RewardModelError as exc:
            exc.arm = k
            raise
        except Exception as exc:  # a local RM's bug must not kill the run: isolate it like an outage
            err = RewardModelError(f"{rm.name}: {exc.__class__.__name__}: {exc}")
            err.arm = k
            raise err from exc
