"""Where a model-backed reward model computes, and where its weights wait between calls.

Every model-backed RM (``hf_classifier``, ``implicit_dpo``, ``judge``) takes two spec keys:

* ``device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, the device that runs the forward passes.
  ``auto`` and ``cuda`` mean this process's GPU: ``cuda:$LOCAL_RANK`` under a multi-process
  launcher (accelerate, torchrun) that shows every process all GPUs, else the current CUDA
  device; ``auto`` is ``cpu`` without one.
* ``offload``: ``true`` keeps the weights in CPU memory and moves them to ``device`` only for the
  call that scores, then back. Under LASeR the accelerator then holds the policy plus the one RM
  being called; an ensemble moves its RMs in turn (K moves each way per step).

A failure while moving (CUDA out of memory, a lost device) is retried once after emptying the
CUDA cache, then raised as :class:`~laser.rewards.base.RewardModelError` naming the RM, so the
training loop's reward pool masks and reports it like any other RM failure. The weights are put
back in CPU memory first, so a failed move does not leave half a model on the GPU.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from typing import Any, Iterator

from laser.rewards.base import RewardModelError

log = logging.getLogger("laser")

DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
#: Spec types whose adapter loads a model and so takes ``device`` and ``offload``.
MODEL_BACKED = ("hf_classifier", "implicit_dpo", "judge")


def device_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid ``device`` setting (None when it is). Imports nothing heavy."""
    if not isinstance(value, str) or not DEVICE_RE.fullmatch(value):
        return f"{value!r} is not auto, cpu, cuda or cuda:N"
    return None


def availability_problem(value: str) -> str | None:
    """Why ``device`` cannot be used on this machine (None when it can)."""
    import torch

    if not value.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return f"{value!r} but CUDA is not available here (torch {torch.__version__})"
    if ":" in value and int(value.split(":")[1]) >= torch.cuda.device_count():
        return f"{value!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def compute_device(value: str):
    """The torch device a ``device`` setting names in this process (see the module docstring)."""
    import torch

    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if value in ("auto", "cuda"):
        rank = int(os.environ.get("LOCAL_RANK", -1))
        if 0 <= rank < torch.cuda.device_count():
            return torch.device("cuda", rank)
        return torch.device("cuda", torch.cuda.current_device())  # one process, or one visible GPU each
    return torch.device(value)


class Placement:
    """Device and offload policy of one RM's modules; :meth:`scoring` brackets each scoring call.

    Args:
        name: the RM's name (used in error messages).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        offload: keep the weights in CPU memory between calls.
        move_retries: extra attempts at moving to ``device`` after a failure.

    Raises:
        ValueError: a malformed device, or a CUDA device this machine does not have.
    """

    def __init__(self, name: str, device: str = "auto", offload: bool = False, move_retries: int = 1):
        problem = device_problem(device) or availability_problem(device)
        if problem:
            raise ValueError(f"reward model {name!r}: device={problem}")
        if not isinstance(offload, bool):
            raise ValueError(f"reward model {name!r}: offload must be true or false, got {offload!r}")
        self.name, self.device, self.offload, self.move_retries = name, device, offload, move_retries
        self.compute = compute_device(device) if offload else None  # set by attach() otherwise
        self.modules: list = []
        self.moves = 0  # moves to the compute device so far (one per scoring call when offloaded)

    @property
    def home(self) -> str:
        """Where the weights live between calls, as a ``prepare``/``load_model`` device argument."""
        return "cpu" if self.offload else self.device

    @property
    def dtype_device(self):
        """The device an ``auto`` dtype is chosen for: the one that computes (None = where loaded)."""
        return self.compute

    def attach(self, *modules) -> None:
        """Register the loaded modules (``None`` entries are skipped, shared modules counted once)."""
        seen: dict[int, Any] = {}
        for m in modules:
            if m is not None:
                seen.setdefault(id(m), m)
        self.modules = list(seen.values())
        if not self.offload:
            self.compute = next(self.modules[0].parameters()).device

    @contextmanager
    def scoring(self) -> Iterator:
        """Context of one scoring call: yields the compute device, the modules are on it inside.

        Raises:
            RewardModelError: moving to the compute device failed on every attempt, or moving
                back to CPU memory failed after a successful call.
        """
        if not self.offload:
            yield self.compute
            return
        self._move_in()
        ok = False
        try:
            yield self.compute
            ok = True
        finally:
            try:
                self._move("cpu")
            except Exception as exc:  # a failure of the call itself takes precedence
                if ok:
                    raise RewardModelError(
                        f"reward model {self.name!r}: moving it back to CPU memory "
                        f"failed: {exc.__class__.__name__}: {exc}"
                    ) from exc
                log.warning("reward model %r: moving back to CPU memory failed too: %s", self.name, exc)

    def _move(self, device) -> None:
        for m in self.modules:
            m.to(device)

    def _move_in(self) -> None:
        attempts = self.move_retries + 1
        for _ in range(attempts):
            try:
                self._move(self.compute)
                self.moves += 1
                return
            except Exception as exc:  # CUDA OOM is a RuntimeError; anything else is treated alike
                last = exc
                self._release()
        raise RewardModelError(
            f"reward model {self.name!r}: moving it to {self.compute} failed after {attempts} attempt(s): "
            f"{last.__class__.__name__}: {last}"
        ) from last

    def _release(self) -> None:
        """Best effort after a failed move: weights back to CPU memory, the CUDA cache emptied."""
        import torch

        try:
            self._move("cpu")
        except Exception as exc:
            log.warning("reward model %r: moving back to CPU memory failed: %s", self.name, exc)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"Placement(name={self.name!r}, device={self.device!r}, offload={self.offload})"
