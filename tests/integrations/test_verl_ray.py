"""LaserRewardManager inside verl's real reward loop: verl 0.9.1's ``RewardLoopManager`` with Ray
on 2 CPUs and 2 reward workers.

Runs only where verl is installed (its own virtualenv: verl pins transformers<5.11; `.ci/run`
creates it and runs this file there); elsewhere it skips. What it checks:

* verl's config, composed from its own ``ppo_trainer.yaml`` with the ``reward.*`` keys of
  ``examples/verl/run_grpo.sh``, resolves to ``LaserRewardManager`` (and the legacy key
  ``reward_model.reward_manager`` resolves to verl's naive manager: the pitfall docs/verl.md names);
* each row is scored by exactly one RM, the one the shared actor chose for its prompt group, in
  both worker processes, and the score sits where verl reads it (``rm_scores`` at the last valid
  response token);
* the named actor learned from the gold answers (one bandit update per finished group);
* after ``ray.shutdown()`` and a new Ray session, the new actor restores the saved state exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

verl = pytest.importorskip("verl", reason="verl is not installed (it lives in its own virtualenv)")
ray = pytest.importorskip("ray")

import torch  # noqa: E402
import yaml  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]  # verl_rms.py lives there
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
from verl_rms import _error, read_log, rm_spec  # noqa: E402

from laser.bench.policy import make_char_tokenizer  # noqa: E402

GROUP = 4
OFFSETS = (0, 1, 3, 7)


def example_reward_overrides(laser_yaml: Path) -> list[str]:
    """The ``reward.*`` overrides of examples/verl/run_grpo.sh, with our LASeR YAML."""
    script = (ROOT / "examples/verl/run_grpo.sh").read_text()
    words = shlex.split(script.replace("\\\n", " "), comments=True)
    keys = [w for w in words if re.match(r"^\+?reward\.", w)]
    assert any(k.startswith("reward.reward_manager.name=") for k in keys), keys
    return [
        f"+reward.reward_kwargs.laser={laser_yaml}" if k.startswith("+reward.reward_kwargs.laser=") else k
        for k in keys
        if not k.startswith("reward.num_workers=")
    ]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer/config"), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def make_batch(tok, first: int, n_groups: int, domains: bool = False):
    """verl's batch after rollout: GRPO groups of 4 rows sharing a uid, gold answers attached;
    ``domains``: group g's prompt starts with its domain (alpha for even g, beta for odd), also in
    a ``domain`` column (benchmarks/verl_reliability.py)."""
    from tensordict import TensorDict
    from verl import DataProto

    width = 40
    rows, extra = [], {"uid": [], "data_source": [], "reward_model": [], **({"domain": []} if domains else {})}
    for g in range(first, first + n_groups):
        a, b = 10 + g % 7, 3 + g % 5
        domain = ("alpha", "beta")[g % 2]
        for d in OFFSETS:
            p = tok(f"{domain}: " * domains + f"What is {a}+{b}?", add_special_tokens=False)["input_ids"]
            r = tok(f"The answer is {a + b + d}.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append((p, r))
            extra["uid"].append(f"g{g}")
            extra["data_source"].append("openai/gsm8k")
            extra["reward_model"].append({"ground_truth": str(a + b), "style": "rule"})
            if domains:
                extra["domain"].append(domain)
    pad = tok.pad_token_id
    prompts = torch.tensor([[pad] * (width - len(p)) + p for p, _ in rows])
    responses = torch.tensor([r + [pad] * (width - len(r)) for _, r in rows])
    mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (width - len(r)) for p, r in rows]
    )
    batch = TensorDict(
        {
            "prompts": prompts,
            "responses": responses,
            "attention_mask": mask,
            "input_ids": torch.cat([prompts, responses], 1),
        },
        batch_size=len(rows),
    )
    return DataProto(batch=batch, non_tensor_batch={k: np.array(v, dtype=object) for k, v in extra.items()}), rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verl")
    tok = make_char_tokenizer()
    tok.save_pretrained(tmp / "tokenizer")
    laser_yaml = tmp / "laser_verl.yaml"
    laser_yaml.write_text(
        yaml.safe_dump(
            {
                "rewards": [rm_spec("good"), rm_spec("bad")],
                "router": {
                    "selector": "epsilon_greedy",
                    "selector_options": {"epsilon": 0.1},
                    "save_every": 5,
                    "state_dir": str(tmp / "router_state"),
                },
            }
        )
    )
    cfg = compose(
        [
            f"actor_rollout_ref.model.path={tmp / 'tokenizer'}",
            f"actor_rollout_ref.rollout.n={GROUP}",
            "reward.num_workers=2",
            *example_reward_overrides(laser_yaml),
        ]
    )
    return tmp, tok, cfg


def start_ray(log_path: Path) -> None:
    path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "LASER_VERL_RM_LOG": str(log_path), "OMP_NUM_THREADS": "1"}},
    )


def test_config_resolves_to_laser_and_legacy_key_does_not(setup):
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    _, _, cfg = setup
    assert resolve_reward_manager_cls(cfg).__name__ == "LaserRewardManager"
    legacy = compose(["reward_model.reward_manager=LaserRewardManager"])  # the pre-0.9 key: ignored
    assert resolve_reward_manager_cls(legacy).__name__ == "NaiveRewardManager"


def test_reward_loop_routes_scores_learns_and_restores(setup):
    from verl.experimental.reward_loop import RewardLoopManager

    tmp, tok, cfg = setup
    log_path = tmp / "rm_calls.tsv"
    start_ray(log_path)
    try:
        manager = RewardLoopManager(cfg, None)
        seen = []
        for first, n in ((0, 10), (10, 5)):  # 15 groups: saves after groups 5, 10 and 15
            data, rows = make_batch(tok, first, n)
            out = manager.compute_rm_score(data)
            seen.append((data, rows, out))
        actor = ray.get_actor("laser_router")
        stats = ray.get(actor.stats.remote())
        before = ray.get(actor.state_dict.remote())
    finally:
        ray.shutdown()

    calls = read_log(log_path)
    assert len(calls) == 60 == sum(len(rows) for _, rows, _ in seen)  # one RM call per row, no more
    assert len({pid for _, pid, _ in calls}) == 2  # both reward workers scored rows
    names = ["good", "bad"]
    expected_calls = []
    for data, rows, out in seen:
        arms = out.non_tensor_batch["laser_arm"].astype(int)
        rm_scores = out.batch["rm_scores"]
        for i, (p, r) in enumerate(rows):
            uid = data.non_tensor_batch["uid"][i]
            same_group = [arms[j] for j in range(len(rows)) if data.non_tensor_batch["uid"][j] == uid]
            assert len(set(same_group)) == 1  # one RM per prompt group
            prompt, response = tok.decode(p), tok.decode(r, skip_special_tokens=True)
            err = _error(prompt, response)
            expected = -err if names[arms[i]] == "good" else err
            last = len(r) - 1  # verl reads the reward at the last valid response token
            assert rm_scores[i, last].item() == expected and rm_scores[i].abs().sum().item() == abs(expected)
            expected_calls.append((names[arms[i]], response))
    assert sorted(expected_calls) == sorted((n, r) for n, _, r in calls)  # exactly the chosen RM per row

    assert stats["learned"] + stats["tied"] == 15 and sum(stats["counts"]) == 15 and stats["pending"] == 0
    assert stats["saves"] == 3 and sum(stats["rows_scored"]) == 60
    # good's groups have pair_accuracy +0.5, bad's -0.5 (tests/integrations/test_verl_routing.py derives both):
    # the learned mean reward ranks good first. Batch 1's 10 groups are all routed before any of
    # them finishes (rows arrive concurrently), with ties broken at random, so both arms are tried.
    sums, counts = before["strategy"]["sums"], before["strategy"]["counts"]
    assert (counts > 0).all() and sums[0] / counts[0] > sums[1] / counts[1]

    start_ray(log_path)
    try:
        manager = RewardLoopManager(cfg, None)  # new workers, a new actor: it loads the newest save
        ray.get([w.__ray_ready__.remote() for w in manager.reward_loop_workers])  # their __init__ ran
        actor = ray.get_actor("laser_router")
        restored = ray.get(actor.stats.remote())
        after = ray.get(actor.state_dict.remote())
    finally:
        ray.shutdown()
    assert restored["resumed_from"].endswith("ckpt-00000015")
    assert restored["counts"] == stats["counts"] and restored["learned"] == stats["learned"]
    for part in ("strategy", "normalizer"):
        assert before[part].keys() == after[part].keys()
        assert all(np.array_equal(before[part][k], after[part][k]) for k in before[part])
