"""The few collective operations the loop needs, as no-ops on one process.

Every rank holds a shard of the step's prompts; these helpers gather per-prompt rows in rank
order, sum scalars, and broadcast the main process's decision. With one process they return
their input unchanged, so single-process runs never touch torch.distributed.
"""

from __future__ import annotations

import numpy as np
import torch


class Dist:
    """Collectives over the processes of an ``accelerate.Accelerator``."""

    def __init__(self, accelerator):
        self.acc = accelerator

    @property
    def n(self) -> int:
        return self.acc.num_processes

    @property
    def rank(self) -> int:
        return self.acc.process_index

    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    def gather_objects(self, obj) -> list:
        """One object per process, in rank order."""
        if self.n == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Concatenate every process's rows (axis 0) in rank order."""
        return rows if self.n == 1 else np.concatenate(self.gather_objects(rows), axis=0)

    def my_slice(self, values: list, local_size: int) -> list:
        """This process's part of a whole-batch list ordered by rank (as :meth:`gather_rows` makes it)."""
        if self.n == 1:
            return values
        start = sum(self.gather_objects(local_size)[: self.rank])
        return values[start:start + local_size]

    def broadcast(self, obj):
        """The main process's ``obj`` on every process."""
        if self.n == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over processes (float64)."""
        if self.n == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(t, reduction="sum").tolist()
