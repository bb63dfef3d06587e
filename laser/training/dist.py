"""The routing core's :class:`~laser.routing.collectives.Collectives` over Accelerate's processes.

Every rank holds a shard of the step's prompts; these gather objects and rows in rank order, sum
scalars, and broadcast the main process's decision. With one process they return their input
unchanged, so single-process runs never touch torch.distributed.
"""

from __future__ import annotations

import numpy as np
import torch

from laser.routing.collectives import gather_rows


class Dist:
    """Collectives over the processes of an ``accelerate.Accelerator``."""

    def __init__(self, accelerator):
        self.acc = accelerator

    @property
    def world(self) -> int:
        return self.acc.num_processes

    @property
    def rank(self) -> int:
        return self.acc.process_index

    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    def all_gather(self, obj) -> list:
        """One object per process, in rank order."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Concatenate every process's rows (axis 0) in rank order."""
        return gather_rows(self, rows)

    def broadcast(self, obj):
        """The main process's ``obj`` on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over processes (float64)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(t, reduction="sum").tolist()
