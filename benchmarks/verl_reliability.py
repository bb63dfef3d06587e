"""The reliability router in verl's real reward loop: cost per row and what it learned.

Runs verl 0.9.1's ``RewardLoopManager`` (Ray, 2 CPUs, 2 reward workers) with ``LaserRewardManager``
and ``router: {selector: reliability, ...}`` over the four RMs of tests/verl_rms.py (``alpha_expert``,
``beta_expert``, ``generalist`` the anchor, ``noise``), on GSM8K-style groups of 4 rollouts whose
prompts belong to domain alpha or beta (the ``domain`` column, ``router.group_key: domain``), and
prints: RM calls per row (counted from the RMs' own log, probes included, against 1 for one routed
RM and K for an ensemble), the wall time per row of the reward loop, the rows per worker process,
the same for a bandit (epsilon-greedy) in the same process first, and each domain's routed RM
(each domain's expert is right; see tests/verl_rms.py).

Needs verl's virtualenv (``.ci/run`` builds one; docs/verl.md)::

    PYTHONPATH=$PWD python benchmarks/verl_reliability.py --batches 8 --groups 16

This is a measurement, not part of CI.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "integrations")]

NAMES = ("alpha_expert", "beta_expert", "generalist", "noise")
OFFSETS = (0, 1, 3, 7)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=8, help="reward-loop calls (verl steps)")
    ap.add_argument("--groups", type=int, default=16, help="prompt groups of 4 rows per batch")
    args = ap.parse_args(argv)

    import ray
    import yaml
    from test_verl_ray import compose, example_reward_overrides, make_batch, start_ray
    from verl.experimental.reward_loop import RewardLoopManager
    from verl_rms import read_log, rm_spec

    from laser.bench.policy import make_char_tokenizer

    tok = make_char_tokenizer()
    for selector in ("epsilon_greedy", "reliability"):  # the bandit first: the baseline, same process
        tmp = Path(tempfile.mkdtemp(prefix=f"laser_verl_{selector}_"))
        tok.save_pretrained(tmp / "tokenizer")
        laser_yaml = tmp / "laser_verl.yaml"
        router = {"selector": selector, "save_every": 16, "state_dir": str(tmp / "state")}
        if selector == "reliability":
            router.update(selector_options={"anchor": "generalist"}, group_key="domain")
        laser_yaml.write_text(yaml.safe_dump({"rewards": [rm_spec(n) for n in NAMES], "router": router}))
        cfg = compose(
            [
                f"actor_rollout_ref.model.path={tmp / 'tokenizer'}",
                f"actor_rollout_ref.rollout.n={len(OFFSETS)}",
                "reward.num_workers=2",
                *example_reward_overrides(laser_yaml),
            ]
        )
        log_path = tmp / "rm_calls.tsv"
        start_ray(log_path)
        try:
            manager = RewardLoopManager(cfg, None)
            ray.get([w.__ray_ready__.remote() for w in manager.reward_loop_workers])
            seconds, rows, timed = 0.0, 0, 0
            for b in range(args.batches):
                data, _ = make_batch(tok, b * args.groups, args.groups, domains=True)
                t0 = time.perf_counter()
                manager.compute_rm_score(data)
                if b > 0:  # the first batch builds the RMs and imports in the workers: not timed
                    seconds += time.perf_counter() - t0
                    timed += len(data)
                rows += len(data)
            stats = ray.get(ray.get_actor("laser_router").stats.remote())
        finally:
            ray.shutdown()
        report(selector, stats, read_log(log_path), rows, seconds / max(timed, 1), args)
    return 0


def report(selector: str, stats: dict, calls: list, rows: int, per_row: float, args) -> None:
    workers = {}
    for _, pid, _ in calls:
        workers[pid] = workers.get(pid, 0) + 1
    print(f"{selector}: {rows} rows in {args.batches} batches of {args.groups} groups x 4, 2 reward workers")
    print(
        f"  RM calls per row {len(calls) / rows:.3f} (one routed RM 1, ensemble {len(NAMES)}); "
        f"reward loop {1000 * per_row:.2f} ms per row (batches 2-); "
        f"RM calls per worker process {sorted(workers.values())}"
    )
    if selector != "reliability":
        print(f"  bandit counts {stats['counts']} (learned {stats['learned']}, tied {stats['tied']})")
        return
    print(
        f"  probe groups {stats['learned'] + stats['empty']}, routed groups {stats['routed']}; label model "
        f"{stats['label_model_s']} s in total; saves {stats['saves']}"
    )
    for g, v in sorted(stats["groups"].items()):
        acc = {k: round(a, 2) for k, a in (v["acc"] or {}).items()}
        print(f"  {g}: {v['rm']} ({v['status']}, {v['probes']} probes / {v['prompts']} groups) acc {acc}")


if __name__ == "__main__":
    sys.exit(main())
