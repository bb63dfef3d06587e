"""The collectives the routing core needs across processes, and their single-process form.

Every engine that runs several processes (Accelerate's training loop, TRL under ``accelerate
launch``, a sharded reward server) gives the core one object with this interface; the core never
imports torch. Two implementations live with their engines: ``laser.training.dist.Dist``
(Accelerate) and ``laser.integrations.dist.TorchCollectives`` (``torch.distributed``).

Every process must call the same collectives in the same order.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Collectives(Protocol):
    """What the core asks of several processes.

    Attributes:
        rank: this process's index (0 = main).
        world: the number of processes.
        is_main: ``rank == 0``.
    """

    rank: int
    world: int
    is_main: bool

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's picklable ``obj``, in rank order (the same list on every process)."""

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process."""

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise float64 sums of ``values`` over processes."""


class Local:
    """One process: every collective is the identity."""

    rank, world, is_main = 0, 1, True

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        return obj

    def sum(self, values: list[float]) -> list[float]:
        return [float(v) for v in values]


def gather_rows(coll: Collectives, rows: np.ndarray) -> np.ndarray:
    """Concatenate every process's rows (axis 0) in rank order."""
    return rows if coll.world == 1 else np.concatenate(coll.all_gather(rows), axis=0)


def offset(coll: Collectives, local_size: int) -> int:
    """Where this process's rows start in a whole-batch list ordered by rank."""
    return 0 if coll.world == 1 else sum(coll.all_gather(local_size)[: coll.rank])
