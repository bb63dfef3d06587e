"""The routing core's :class:`~laser.routing.collectives.Collectives` over ``torch.distributed``.

Under ``accelerate launch`` (DDP, DeepSpeed, FSDP) TRL calls the reward functions on every
process, each with its own rows, in the same order; the router uses these calls to agree on one
decision. Without an initialised process group (one process) every collective is the identity.
"""

from __future__ import annotations

from typing import Any


class TorchCollectives:
    """``all_gather``, ``broadcast`` and ``sum`` of picklable Python objects.

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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise float64 sums over processes (through ``all_gather``: a few scalars)."""
        parts = self.all_gather([float(v) for v in values])
        return [float(sum(col)) for col in zip(*parts, strict=True)] if parts else []
