"""LASeR routing inside verl's reward loop: one reward model per prompt, chosen by a shared bandit.

verl (0.9.1) scores rollouts in its reward loop: several ``RewardLoopWorker`` Ray actors each hold
a reward manager and call ``await manager.run_single(row)`` once per response. This module gives
verl such a manager, :class:`LaserRewardManager`, selected with::

    reward.reward_manager.source=importlib
    reward.reward_manager.module.path=pkg://laser.integrations.verl
    reward.reward_manager.name=LaserRewardManager
    +reward.reward_kwargs.laser=/path/laser_verl.yaml      # `rewards:` list + `router:` section

Per row: the worker asks the routing actor (one named Ray actor shared by every worker, holding
the bandit, the normaliser and the groups in flight) which RM scores the row's prompt; every row
of a prompt's group (same ``uid``) gets the same RM; only that RM runs, in the worker (a local
model, built on first use) or over HTTP (``type: remote``, e.g. ``laser serve-rm``). The worker
then reports the score; when a group's ``group_size`` rows are in, the actor turns the group into
bandit feedback: ``pair_accuracy`` against ``reward_model.ground_truth`` when the rows carry one,
else ``majority_pair_accuracy`` (the group's own majority answer) when the task has an answer
extractor; a group with neither (chat prompts) is routed but teaches a bandit nothing. With
``router.selector: reliability`` the actor holds the label-free reliability router instead
(:mod:`laser.integrations.grouped_reliability`): a probe group's rows are scored by every RM that is
up, its rollouts' pairs become votes, and every prompt, chat included, teaches it. The actor saves its
state atomically every ``save_every`` learned groups under ``state_dir`` and loads the newest
verified save when it starts (verl has no checkpoint hook for reward managers).

The routing state is :class:`laser.integrations.grouped.SharedRouter`; everything but
:class:`LaserRewardManager` is framework-free (no verl, no Ray) and tested in-process.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from laser.integrations.context import prompt_text
from laser.integrations.grouped import SharedRouter
from laser.integrations.routing_spec import RoutingSpec, load_spec, row_task


class RoutedScoring:
    """The per-row work of :class:`LaserRewardManager`, without verl: decode, route, score, report.

    Args:
        specs: the RM specs (built lazily, in this process, the first time their arm is chosen).
        spec: the :class:`RoutingSpec`.
        router: a Ray actor handle of :class:`SharedRouter` (methods called with ``.remote``) or a
            :class:`SharedRouter` itself.
        tokenizer: the policy's tokenizer (``decode``).
    """

    def __init__(self, specs: list, spec: RoutingSpec, router: Any, tokenizer: Any):
        self.specs, self.spec, self.router, self.tokenizer = list(specs), spec, router, tokenizer
        self.names = [s["name"] for s in self.specs]
        self.rms: dict[int, Any] = {}
        self.lock = threading.Lock()  # models are not thread-safe; rows score one at a time per worker

    async def _ask(self, method: str, *args):
        fn = getattr(self.router, method)
        return await fn.remote(*args) if hasattr(fn, "remote") else fn(*args)

    def _rm(self, arm: int):
        if arm not in self.rms:
            from laser.rewards.factory import build_reward_model

            self.rms[arm] = build_reward_model(self.specs[arm])
        return self.rms[arm]

    def _score(self, arm: int, prompt: str, response: str) -> float:
        from laser.rewards.base import check_scores

        with self.lock:
            raw = self._rm(arm).score([prompt], [response])
        return float(check_scores(raw, 1, self.names[arm])[0])

    async def score_row(self, data: Any) -> dict:
        """verl's ``run_single``: one row (the last of ``data``) -> ``{"reward_score", "reward_extra_info"}``."""
        item = data[len(data) - 1]
        prompt, response = self._texts(item)
        extra = item.non_tensor_batch
        uid = str(extra.get("uid", prompt))
        gold = (extra.get("reward_model") or {}).get("ground_truth")
        task = row_task(self.spec.task, extra.get("data_source"))
        group = extra.get(self.spec.group_key)
        loop = asyncio.get_running_loop()
        plan = await self._ask("plan", uid, prompt, None if group is None else str(group))
        arm, scores = plan[0], {}
        for k in [arm, *plan[1:]]:  # the group's arm, then (a reliability probe) every other RM up
            while k not in scores:
                try:
                    scores[k] = await loop.run_in_executor(None, self._score, k, prompt, response)
                except Exception as exc:  # any RM failure: masked by the router, the row re-routed
                    new = await self._ask("fail", uid, k, f"{type(exc).__name__}: {exc}")
                    if k != arm:
                        break  # a probe's other RM: it abstains
                    arm = k = new
        score = scores[arm]
        probe = scores if len(scores) > 1 else None
        await self._ask("report", uid, arm, response, score, None if gold is None else str(gold), task, probe)
        if not math.isfinite(score):
            if self.spec.unscorable == "error":
                raise ValueError(
                    f"reward model {self.names[arm]!r} could not score a response of prompt uid {uid} "
                    "(NaN); set router.unscorable to a number to give verl that reward instead"
                )
            score = float(self.spec.unscorable)
        return {"reward_score": score, "reward_extra_info": {"laser_arm": arm}}

    def _texts(self, item: Any) -> tuple[str, str]:
        """The row's prompt (its last user message when verl kept ``raw_prompt``) and response text."""
        prompt_ids, response_ids = item.batch["prompts"], item.batch["responses"]
        mask = item.batch["attention_mask"]
        n_prompt, n_response = prompt_ids.shape[-1], response_ids.shape[-1]
        response = self.tokenizer.decode(response_ids[: int(mask[-n_response:].sum())], skip_special_tokens=True)
        raw = item.non_tensor_batch.get("raw_prompt")
        if raw is not None:
            return prompt_text(list(raw) if not isinstance(raw, str) else raw), response
        kept = prompt_ids[mask[:n_prompt].bool()]
        return self.tokenizer.decode(kept, skip_special_tokens=True), response


def _verl_spec(config: Any) -> tuple[list, RoutingSpec]:
    """Read ``reward.reward_kwargs.laser`` from verl's config, with verl's defaults filled in."""
    kwargs = config.reward.get("reward_kwargs") or {}
    source = kwargs.get("laser")
    if source is None:
        raise ValueError(
            "LaserRewardManager: set +reward.reward_kwargs.laser=<path of a YAML with `rewards:` and "
            "`router:`> (see docs/verl.md)"
        )
    n = config.actor_rollout_ref.rollout.get("n")
    ckpt = config.trainer.get("default_local_dir")
    specs, spec = load_spec(source, group_size=n, state_dir=str(Path(ckpt) / "laser_router") if ckpt else None)
    check_no_labelled(spec)
    return specs, spec


def check_no_labelled(spec: RoutingSpec) -> None:
    """verl's routing actor holds no reward model (they run in the reward workers), so it cannot
    score labelled pairs at start: ``router.selector_options.labelled_pairs`` is refused by key.

    Raises:
        ValueError: the key is set.
    """
    if isinstance(spec.selector_options, dict) and "labelled_pairs" in spec.selector_options:
        raise ValueError(
            "reward.reward_kwargs.laser: router.selector_options.labelled_pairs is not supported under verl "
            "(the routing actor holds no reward model to score them; a routed laser serve-rm does)"
        )


def _make_manager_class():
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

    class LaserRewardManager(RewardManagerBase):
        """verl reward manager: each row scored by the RM that the shared routing actor picks."""

        def __init__(self, config, tokenizer, compute_score, reward_router_address=None, reward_model_tokenizer=None):
            super().__init__(config, tokenizer, compute_score)
            import ray

            specs, spec = _verl_spec(config)
            actor = ray.remote(num_cpus=0)(SharedRouter).options(name=spec.actor_name, get_if_exists=True)
            handle = actor.remote([s["name"] for s in specs], asdict(spec))
            self.routing = RoutedScoring(specs, spec, handle, tokenizer)

        async def run_single(self, data) -> dict:
            return await self.routing.score_row(data)

    return LaserRewardManager


def __getattr__(name: str):
    if name == "LaserRewardManager":  # verl is imported only when the manager is asked for
        cls = globals()["LaserRewardManager"] = _make_manager_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
