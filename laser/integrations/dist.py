"""The two collectives the router needs, over ``torch.distributed`` when it is running.

Under ``accelerate launch`` (DDP, DeepSpeed, FSDP) TRL calls the reward functions on every
process, each with its own rows, in the same order; the router uses these calls to agree on one
decision. Without an initialised process group (one process) both are identities.
"""

from __future__ import annotations

from typing import Any


class Collectives:
    """``all_gather`` and ``broadcast`` of picklable Python objects.

    Every process must call the same collectives in the same order (TRL's reward-function loop
    guarantees it for the router).
    """

    @staticmethod
    def _dist():
        import torch.distributed as dist

        return dist if dist.is_available() and dist.is_initialized() else None

    @property
    def rank(self) -> int:
        dist = self._dist()
        return dist.get_rank() if dist else 0

    @property
    def world(self) -> int:
        dist = self._dist()
        return dist.get_world_size() if dist else 1

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (the same list on every process)."""
        dist = self._dist()
        if dist is None:
            return [obj]
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as held by process ``src``, on every process."""
        dist = self._dist()
        if dist is None:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
