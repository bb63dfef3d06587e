"""The reliability strategy over fixed responses, on 1 process or as one rank of several (gloo).

Run by tests/routing/test_reliability_ranks.py: ``python reliability_ranks_script.py OUT MODE``
with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set for several processes. Each step
routes a whole batch of 8 prompts; with two processes rank r holds prompts 4r..4r+3 of it and
their responses. MODE ``column`` groups by the examples' group, ``kmeans`` by k-means over a fixed
embedding (computed on the main process and broadcast). Each rank writes OUT/rank<r>.json: the
arms of every step, its router's state and its RM scoring counts.
"""

import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from laser.rewards.rules import LengthRM, RegexRM
from laser.routing.batch import Batch
from laser.routing.collectives import Local
from laser.routing.kmeans import ContextGroups
from laser.routing.pool import RewardPool
from laser.routing.reliability import ReliabilityRouter
from laser.routing.strategies.reliability import ReliabilityStrategy
from laser.tasks.base import Example

N_RESP, BATCH, STEPS = 6, 8, 8


def embed(prompts):
    """A fixed 4-d embedding: the prompt's group direction plus a hash-seeded jitter."""
    out = []
    for p in prompts:
        rng = np.random.default_rng(zlib.crc32(p.encode()))
        out.append(np.eye(4)[int(p.split("+")[0]) % 2] + 0.05 * rng.standard_normal(4))
    return np.array(out)


def responses(i):
    """Responses to prompt i: answers that differ, of different lengths."""
    return [f"{'so ' * ((i + j) % 3)}the answer is {(7 * i + 3 * j) % 5 + 2 * (j % 2)}" for j in range(N_RESP)]


def main(out: str, mode: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        from laser.integrations.dist import TorchCollectives

        dist.init_process_group("gloo")
        coll = TorchCollectives()
    else:
        coll = Local()
    examples = [
        Example(id=f"p{i}", prompt=f"{i}+{i}=", answer=str(2 * i % 5), task="gsm8k", domain=["even", "odd"][i % 2])
        for i in range(16)
    ]
    rms = [RegexRM("ones", "1"), LengthRM("long"), RegexRM("twos", "2"), RegexRM("threes", "3")]
    router = ReliabilityRouter(4, anchor=1, warmup=2, min_votes=2, probe_share=0.3, seed=3)
    grouping = ContextGroups(2, seed=3) if mode == "kmeans" else None
    strat = ReliabilityStrategy([rm.name for rm in rms], router, grouping, embed if grouping else None)
    pool, per, arms_log = RewardPool(rms), BATCH // coll.world, []
    for step in range(STEPS):
        whole = [examples[(step * BATCH + k) % len(examples)] for k in range(BATCH)]
        mine = list(range(coll.rank * per, (coll.rank + 1) * per))
        batch = Batch.of([whole[i] for i in mine], step=step + 1)
        batch.index = mine
        arms = strat.decide(batch, coll)
        batch.arms, batch.my_arms = arms, [arms[i] for i in mine]
        texts = [t for i in mine for t in responses(int(whole[i].id[1:]))]
        batch.add_responses(texts, [k for k in range(per) for _ in range(N_RESP)])
        strat.score(batch, pool)
        strat.units(batch, None, coll, None)
        arms_log.append(arms)
    Path(out).mkdir(parents=True, exist_ok=True)
    state = {k: np.asarray(v).tolist() for k, v in strat.state_dict().items()}
    record = {"arms": arms_log, "state": state, "scored": pool.responses_scored.tolist(), "world": coll.world}
    (Path(out) / f"rank{coll.rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
