"""Scoring responses with the picked reward models, isolating the ones that fail.

One rule for every engine:
- An RM that raises *any* exception, or returns malformed or infinite scores
  (:func:`~laser.rewards.base.check_scores`), has failed: its arm is masked (and the router
  decides again without it). Retrying is the backend's job where it can help: a remote RM retries
  timeouts and 5xx with backoff before it raises; a local RM's exception is a bug or an outage
  that an immediate retry would repeat.
- A score of NaN means "unscorable": the response takes no part in any pair; it is never 0.
- An RM with an ``available()`` method (a remote RM's circuit breaker) is unmasked again once it
  reports itself available; an RM may join the run at a given step (``join_at``).
- When every RM is down, :class:`AllRewardModelsDown` names each one, its endpoint and last error.

Two counters per RM: ``responses_scored`` (responses sent to it) and ``score_calls`` (calls of
its ``score()``, one per batched request).
"""

from __future__ import annotations

import logging

import numpy as np

from laser.rewards.base import RewardModelError, check_scores

log = logging.getLogger("laser")


def check_reward_models(rms, who: str = "RewardPool", why_names: str = "logs and state name arms by it") -> list:
    """The reward models as a list, each with a str ``name`` and a ``score`` method, names unique.

    Raises:
        ValueError: no RM, an object that is not an RM, or duplicate names (``who`` prefixes it).
    """
    rms = list(rms)
    if not rms:
        raise ValueError(f"{who} needs at least one reward model")
    bad = [
        f"#{i} ({type(rm).__name__})"
        for i, rm in enumerate(rms)
        if not isinstance(getattr(rm, "name", None), str) or not callable(getattr(rm, "score", None))
    ]
    if bad:
        raise ValueError(
            f"{who}: reward models {', '.join(bad)} lack a str `name` or a `score(prompts, responses)` method"
        )
    names = [rm.name for rm in rms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{who}: duplicate reward model names {dup}; each arm needs its own name ({why_names})")
    return rms


class AllRewardModelsDown(RuntimeError):
    """Every reward model failed; the message names each one and its last error."""


class RewardPool:
    """The run's reward models with call counters and failure isolation.

    Args:
        rms: the reward models; arm k is ``rms[k]``.
        join_at: arm -> 1-based step at which its RM joins (absent: from the start).
    """

    def __init__(self, rms: list, join_at: dict[int, int] | None = None):
        self.rms = list(rms)
        self.join_at = dict(join_at or {})
        self.responses_scored = np.zeros(len(self.rms), dtype=np.int64)
        self.score_calls = np.zeros(len(self.rms), dtype=np.int64)
        self.last_errors: dict[int, str] = {}
        self.down: set[int] = set()

    @property
    def names(self) -> list[str]:
        return [rm.name for rm in self.rms]

    def add(self, rm) -> int:
        self.rms.append(rm)
        self.responses_scored = np.append(self.responses_scored, 0)
        self.score_calls = np.append(self.score_calls, 0)
        return len(self.rms) - 1

    def waiting(self, step: int) -> set[int]:
        """Arms whose RM has not joined the run yet at 1-based ``step``."""
        return {k for k, at in self.join_at.items() if step < at}

    def off(self, step: int) -> set[int]:
        """Arms that cannot score at ``step`` (down or not joined yet)."""
        return self.down | self.waiting(step)

    def reported_up(self) -> dict[int, bool]:
        """Arm -> what its RM's ``available()`` says now (RMs without the method are left out)."""
        return {k: bool(rm.available()) for k, rm in enumerate(self.rms) if callable(getattr(rm, "available", None))}

    def refresh(self, up: dict[int, bool], selector=None, step: int = 1) -> list[str]:
        """Apply availability reports ``up`` (agreed over processes) and sync the selector's mask.

        Returns:
            Events: RMs joining at ``step``, becoming available again, or unavailable.
        """
        events = [
            f"reward model {self.rms[k].name!r} joins at step {step}" for k, at in self.join_at.items() if at == step
        ]
        for k, ok in sorted(up.items()):
            if ok and k in self.down:
                self.down.discard(k)
                events.append(f"reward model {self.rms[k].name!r} is available again")
            elif not ok and k not in self.down:
                self.down.add(k)
                events.append(
                    f"reward model {self.rms[k].name!r} unavailable: {self.last_errors.get(k, 'circuit open')}"
                )
        self.sync_mask(selector, step)
        return events

    def sync_mask(self, selector, step: int) -> None:
        if selector is not None:
            off = self.off(step)
            for k in range(len(self.rms)):
                (selector.mask_arm if k in off else selector.unmask_arm)(k)

    def mark_down(self, k: int, error: str | Exception, selector=None) -> str:
        """Mask arm ``k`` after ``error``; returns the event. Raises AllRewardModelsDown when none is left."""
        if isinstance(error, BaseException):
            error = f"{error.__class__.__name__}: {error}"
        self.down.add(k)
        self.last_errors[k] = error
        if selector is not None:
            selector.mask_arm(k)
        self.raise_if_all_down()
        return f"reward model {self.rms[k].name!r} failed and is masked: {error}"

    def raise_if_all_down(self) -> None:
        if self.down and len(self.down) == len(self.rms):
            detail = "; ".join(
                f"{rm.name}{f' ({rm.url})' if getattr(rm, 'url', None) else ''}: "
                f"{self.last_errors.get(k, 'unavailable')}"
                for k, rm in enumerate(self.rms)
            )
            raise AllRewardModelsDown(f"every reward model is down: {detail}")

    def score(self, k: int, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Scores ``(len(responses),)`` from RM ``k``: float64, NaN = unscorable.

        Raises:
            RewardModelError: the RM raised (any exception) or returned invalid output; its
                ``arm`` attribute is ``k``.
        """
        self.responses_scored[k] += len(responses)
        self.score_calls[k] += 1
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

    def state_dict(self) -> dict:
        """JSON-able counters and availability."""
        return {
            "rm_names": self.names,
            "responses_scored": self.responses_scored.tolist(),
            "score_calls": self.score_calls.tolist(),
            "down": sorted(self.down),
            "errors": {str(k): v for k, v in self.last_errors.items()},
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output (``rm_calls``: a checkpoint written before the two counters)."""
        if sd["rm_names"] != self.names:
            raise ValueError(f"RewardPool: state of reward models {sd['rm_names']}, this pool has {self.names}")
        self.responses_scored = np.asarray(sd.get("responses_scored", sd.get("rm_calls")), dtype=np.int64)
        self.score_calls = np.asarray(sd.get("score_calls", [0] * len(self.rms)), dtype=np.int64)
        self.down = set(sd["down"])
        self.last_errors = {int(k): v for k, v in sd["errors"].items()}
