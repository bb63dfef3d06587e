"""Routing of prompt groups that arrive a row or a request at a time: verl's reward loop, ``laser serve-rm``.

Engines that score rollouts as they finish (verl's reward workers call one row at a time; OpenRLHF
posts one query per rollout to a reward server) never hand the router a whole group at once. A
:class:`GroupRouter` keeps the groups in flight: the first row of a group (same ``uid``, or the same
prompt) decides its RM through the routing core, the other rows get the same RM, and when
``group_size`` rows are in, the group is learned from with the core's feedback and rules.
:class:`SharedRouter` adds the state's atomic saves on a schedule and its restore at start. Both
are framework-free: verl runs a :class:`SharedRouter` as a named Ray actor, the server in-process
under a lock.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from laser.integrations.context import HashedNgramEmbedder
from laser.tasks.extract import TASK_FORMATS

log = logging.getLogger("laser")

FEEDBACK_NAMES = ("auto", "pair_accuracy", "majority_pair_accuracy", "mixed_pair_accuracy")
STATE_FILES = ("strategy.npz", "normalizer.npz", "verl.json")


@dataclass
class RoutingSpec:
    """The ``router:`` section of a routing config (verl's LaserRewardManager, a routed ``laser serve-rm``).

    Every field is optional for verl (``group_size`` and ``state_dir`` default from verl's config);
    serve-rm needs ``task`` and ``group_size``. ``actor_name`` and ``unscorable`` are read by verl only.
    """

    selector: str = "linucb"
    selector_options: dict = field(default_factory=dict)
    feedback: str = "auto"  # auto: gold answer when the rows carry one, else the majority answer
    context: str = "hashed"  # the prompt's context: hashed n-grams (no model)
    context_dim: int = 256
    granularity: str = "prompt"  # one RM per prompt group
    task: str | None = "auto"  # answer format; auto: the row's data_source if it names one
    group_size: int | None = None  # rows per prompt; default actor_rollout_ref.rollout.n
    actor_name: str = "laser_router"
    state_dir: str | None = None  # default <trainer.default_local_dir>/laser_router
    save_every: int = 64  # learned groups between saves
    max_pending: int = 4096  # groups in flight kept; older ones (never completed) are dropped
    unscorable: str | float = "error"  # what verl gets for a NaN score: error, or this number
    group_key: str = "data_source"  # selector reliability: the row column / request field naming the group
    seed: int = 0


def load_spec(source: Any, group_size: int | None = None, state_dir: str | None = None) -> tuple[list, RoutingSpec]:
    """The RM specs and routing spec of a LASeR routing config (a YAML path or a mapping).

    Args:
        source: path of a YAML file, or a mapping, with ``rewards:`` (RM specs) and ``router:``
            (optional here: every router key has a default).
        group_size: default for ``router.group_size`` (verl's ``actor_rollout_ref.rollout.n``).
        state_dir: default for ``router.state_dir``.

    Raises:
        ValueError: every problem found, each naming its key.
    """
    where = str(source) if isinstance(source, (str, Path)) else "reward.reward_kwargs.laser"
    if isinstance(source, (str, Path)):
        import yaml

        with open(source, encoding="utf-8") as f:
            source = yaml.safe_load(f)
    if hasattr(source, "items") and not isinstance(source, dict):  # an OmegaConf node
        from omegaconf import OmegaConf

        source = OmegaConf.to_container(source, resolve=True)
    specs, spec, problems = check_config(source, routed=True, group_size=group_size, state_dir=state_dir)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return specs, spec


def check_config(
    cfg: Any, routed: bool, group_size: int | None = None, state_dir: str | None = None
) -> tuple[list, RoutingSpec | None, list[str]]:
    """Every problem of a config with ``rewards:`` and (``routed``) ``router:``, by dotted key.

    Returns:
        ``(rm specs, routing spec or None, problems)``; RM specs are checked against their
        adapters' signatures (nothing is loaded).
    """
    if not isinstance(cfg, dict):
        return [], None, [f"expected a mapping with `rewards:` and `router:`, got {type(cfg).__name__}"]
    problems = [
        f"{key}: unknown top-level key (valid: rewards, router)" for key in cfg if key not in ("rewards", "router")
    ]
    specs, least = cfg.get("rewards"), 2 if routed else 1
    if not isinstance(specs, list) or len(specs) < least:
        found = f"found: {', '.join(map(str, cfg)) or 'nothing'}" if "rewards" not in cfg else f"got {specs!r:.60}"
        problems.append(f"rewards: expected a list of at least {least} reward model spec(s) ({found})")
        specs = []
    else:
        from laser.rewards.factory import check_specs

        problems += check_specs(specs)
        names = [s.get("name") for s in specs if isinstance(s, dict)]
        problems += [f"rewards: name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    if not routed:
        return specs, None, problems
    spec, found = _router_spec(cfg.get("router") or {}, group_size, state_dir)
    if spec.selector == "reliability" and isinstance(spec.selector_options, dict) and specs:
        found += _reliability_problems(spec, [s.get("name") for s in specs if isinstance(s, dict)])
    return specs, spec, problems + found


def _reliability_problems(spec: RoutingSpec, names: list) -> list[str]:
    """``selector: reliability``: its options, its anchor, at least three RMs, no bandit feedback."""
    from laser.routing.strategies.reliability import KWARGS

    opts = spec.selector_options
    problems = [
        f"router.selector_options.{k}: unknown option of selector reliability (valid: {', '.join(KWARGS)})"
        for k in opts
        if k not in KWARGS
    ]
    if "anchor" in opts and opts["anchor"] not in names:
        problems.append(f"router.selector_options.anchor: {opts['anchor']!r} is not a reward model name ({names})")
    if len(names) < 3:
        problems.append(
            f"rewards: selector reliability needs at least three reward models (the label model is not "
            f"identified with fewer), got {len(names)}"
        )
    if spec.feedback != "auto":
        problems.append(f"router.feedback: {spec.feedback!r}; selector reliability learns from the RMs' agreement")
    if not problems:
        from laser.routing.reliability import ReliabilityRouter

        try:  # a bad value (probe_share 2, method "x") named now rather than when the first row arrives
            ReliabilityRouter(len(names), **{k: v for k, v in opts.items() if k != "anchor"})
        except (TypeError, ValueError) as exc:
            problems.append(f"router.selector_options: {exc}")
    return problems


def _router_spec(section: Any, group_size: int | None, state_dir: str | None) -> tuple[RoutingSpec, list[str]]:
    if not isinstance(section, dict):
        return RoutingSpec(), [f"router: expected a mapping, got {type(section).__name__}"]
    known = {f.name for f in fields(RoutingSpec)}
    problems = [f"router.{k}: unknown key (valid: {', '.join(sorted(known))})" for k in section if k not in known]
    values = {k: v for k, v in section.items() if k in known}
    values.setdefault("group_size", group_size)
    values.setdefault("state_dir", state_dir)
    spec = RoutingSpec(**values)
    from laser.bandits import SELECTORS

    checks = [
        (
            spec.selector in SELECTORS or spec.selector == "reliability",
            f"router.selector: {spec.selector!r} is not one of reliability, {', '.join(sorted(SELECTORS))}",
        ),
        (
            spec.feedback in FEEDBACK_NAMES,
            f"router.feedback: {spec.feedback!r} is not one of {', '.join(FEEDBACK_NAMES)}",
        ),
        (
            spec.task in (None, "auto") or str(spec.task).lower() in TASK_FORMATS,
            f"router.task: {spec.task!r} has no answer extractor (valid: auto, {', '.join(TASK_FORMATS)})",
        ),
        (
            isinstance(spec.group_size, int) and spec.group_size >= 2,
            f"router.group_size: {spec.group_size!r}; need an integer >= 2, the responses sampled per prompt "
            "(verl: actor_rollout_ref.rollout.n; OpenRLHF: n_samples_per_prompt)",
        ),
        (isinstance(spec.context_dim, int) and spec.context_dim >= 2, f"router.context_dim: {spec.context_dim!r} < 2"),
        (isinstance(spec.save_every, int) and spec.save_every >= 1, f"router.save_every: {spec.save_every!r} < 1"),
        (isinstance(spec.max_pending, int) and spec.max_pending >= 1, f"router.max_pending: {spec.max_pending!r} < 1"),
        (
            spec.unscorable == "error"
            or (isinstance(spec.unscorable, (int, float)) and math.isfinite(spec.unscorable)),
            f"router.unscorable: {spec.unscorable!r}; use error or a finite number",
        ),
        (isinstance(spec.selector_options, dict), "router.selector_options: expected a mapping"),
        (isinstance(spec.group_key, str) and spec.group_key != "", f"router.group_key: {spec.group_key!r}"),
        (spec.context == "hashed", f"router.context: {spec.context!r}; only hashed (n-grams of the prompt) is served"),
        (
            spec.granularity == "prompt",
            f"router.granularity: {spec.granularity!r}; rows arrive one group at a time, "
            "so only prompt (one RM per prompt group) is served",
        ),
    ]
    problems += [msg for ok, msg in checks if not ok]
    if spec.selector in SELECTORS and isinstance(spec.selector_options, dict):
        from laser.bandits import make_selector

        try:  # an option the selector does not take, or a bad value, named now rather than at the first row
            make_selector(spec.selector, 2, 2, 0, **spec.selector_options)
        except (TypeError, ValueError) as exc:
            problems.append(f"router.selector_options: {exc}")
    return spec, problems


def row_task(spec_task: str | None, data_source: Any) -> str | None:
    """The answer format of a row: the configured task, or (``auto``) the last part of the row's
    ``data_source`` when it names a known format (``openai/gsm8k`` -> ``gsm8k``), else None."""
    if spec_task not in (None, "auto"):
        return str(spec_task).lower()
    if spec_task == "auto" and isinstance(data_source, str):
        name = data_source.rstrip("/").rsplit("/", 1)[-1].lower()
        return name if name in TASK_FORMATS else None
    return None


@dataclass
class _Group:
    prompt: str
    arm: int
    context: np.ndarray
    texts: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    arms: set = field(default_factory=set)  # every arm that scored a row (several after a failure)


class _Arm:
    """An arm's name in the actor's reward pool; the RM itself runs in the reward workers."""

    def __init__(self, name: str):
        self.name = name

    def score(self, prompts, responses):
        raise RuntimeError(f"reward model {self.name!r} is scored in verl's reward workers, not in the router")


class GroupRouter:
    """The routing state one verl run shares, on the routing core (:class:`laser.routing.Router`):
    decide per prompt group when its first row arrives, learn when its last row is reported.

    Args:
        names: the RM names (arm k = ``names[k]``).
        spec: the :class:`RoutingSpec`.

    Attributes:
        core: the :class:`~laser.routing.Router` (per-prompt bandit, reward pool of the arms'
            names with their counters and outages, feedback, normaliser).
        learned_, tied_, skipped_, unlabelled_, dropped_: finished groups learned from (``tied_`` of
            them as the lowest reward: no ranked pair though the responses differ), not learned
            (identical responses, or scored by two RMs after a failure), not learnable (no task, or
            no gold answer for a gold-only feedback), dropped before they finished (``max_pending``).
    """

    def __init__(self, names: list[str], spec: RoutingSpec):
        from laser.routing import Router

        self.names, self.spec = list(names), spec
        self.embedder = HashedNgramEmbedder(spec.context_dim)
        feedback = "mixed_pair_accuracy" if spec.feedback == "auto" else spec.feedback
        self.core = Router.from_rms(
            [_Arm(n) for n in names],
            spec.selector,
            dim=spec.context_dim,
            per_prompt=True,
            selector_options=spec.selector_options,
            seed=spec.seed,
            feedback=feedback,
            pairing="all",
        )  # every ranked pair of the group, as verl's GRPO sees it
        self.pending: OrderedDict[str, _Group] = OrderedDict()
        self.learned_ = self.tied_ = self.skipped_ = self.unlabelled_ = self.dropped_ = 0

    def _context(self, prompt: str) -> np.ndarray:
        return self.embedder.embed([prompt])[0] if self.core.strategy.needs_context else np.ones(1)

    def _decide(self, prompt: str, context: np.ndarray) -> int:
        from laser.routing import Batch

        batch = Batch([prompt], contexts=context[None, :], index=[0])
        return int(self.core.decide(batch)[0])  # AllRewardModelsDown names every RM when none is left

    def plan(self, uid: str, prompt: str, group: str | None = None) -> list[int]:
        """The arms that score ``uid``'s rows: its group's arm alone (``group`` is not used)."""
        return [self.route(uid, prompt)]

    def route(self, uid: str, prompt: str) -> int:
        """The arm of ``uid``'s group (decided when its first row arrives)."""
        group = self.pending.get(uid)
        if group is None:
            context = self._context(prompt)
            group = self.pending[uid] = _Group(prompt, self._decide(prompt, context), context)
            while len(self.pending) > self.spec.max_pending:
                self.pending.popitem(last=False)
                self.dropped_ += 1
        return group.arm

    def fail(self, uid: str, arm: int, error: str) -> int:
        """``arm``'s RM raised on a row of ``uid``: masked (the core's rule), the group decided again."""
        pool = self.core.pool
        if arm not in pool.down:
            log.warning("%s", pool.mark_down(arm, error, self.core.selector))
        group = self.pending.get(uid)
        if group is None:
            return self._decide("", self._context(""))
        if group.arm == arm:
            group.arm = self._decide(group.prompt, group.context)
        return group.arm

    COUNTED = ("learned", "tied")  # finished groups that count towards a save

    def report(
        self, uid: str, arm: int, text: str, score: float, gold: Any, task: str | None, probe_scores=None
    ) -> str | None:
        """One row scored by ``arm``; learns when its group is complete. Returns what happened to the
        group when it completed (``learned``, ``tied``, ``skipped``, ``unlabelled``), else None.
        ``probe_scores`` (other arms' scores) never comes: a bandit plans one arm per group."""
        self.core.pool.responses_scored[arm] += 1  # one score() call per row, one response each
        self.core.pool.score_calls[arm] += 1
        group = self.pending.get(uid)
        if group is None:
            return None  # dropped (max_pending) or routed before a restart: nothing to learn from
        group.texts.append(text)
        group.scores.append(float(score))
        group.arms.add(int(arm))
        if len(group.texts) < self.spec.group_size:
            return None
        del self.pending[uid]
        return self._learn(group, gold, task)

    def _learn(self, group: _Group, gold: Any, task: str | None) -> str:
        labelled = gold is not None and str(gold) != ""
        needs_gold = self.core.feedback == "pair_accuracy"
        if task is None or (needs_gold and not labelled):
            if self.spec.feedback != "auto":
                raise ValueError(
                    f"router.feedback={self.core.feedback} needs a task (answer format) on every row"
                    f"{' and reward_model.ground_truth' if needs_gold else ''}; a group has "
                    f"task={task!r}, ground_truth={gold!r}"
                )
            self.unlabelled_ += 1  # chat prompts: no answer to check; the label-free signal is not here yet
            return "unlabelled"
        if len(group.arms) > 1:
            self.skipped_ += 1  # rows scored by two RMs (after a failure) do not compare
            return "skipped"
        from laser.routing import Batch

        batch = Batch(
            [group.prompt],
            tasks=[task],
            answers=[gold if labelled else ""],
            contexts=group.context[None, :],
            index=[0],
            arms=[group.arm],
            my_arms=[group.arm],
        )
        batch.add_responses(group.texts, [0] * len(group.texts))
        batch.scores = np.asarray(group.scores, dtype=np.float64)
        self.core.pairs(batch)
        raw, applied = self.core.learn(batch, self.core.outcome(batch))
        outcome = "learned" if raw[0] is not None else ("tied" if applied[0] is not None else "skipped")
        setattr(self, f"{outcome}_", getattr(self, f"{outcome}_") + 1)
        return outcome

    def finished(self) -> int:
        """Groups finished (the save step)."""
        return self.learned_ + self.tied_ + self.skipped_ + self.unlabelled_

    def summary(self) -> dict:
        return {"counts": self.core.selector.counts_.tolist()}

    def counters(self) -> dict:
        pool = self.core.pool
        return {
            "rows_scored": pool.responses_scored.tolist(),
            "score_calls": pool.score_calls.tolist(),
            "learned": self.learned_,
            "tied": self.tied_,
            "skipped": self.skipped_,
            "unlabelled": self.unlabelled_,
            "dropped": self.dropped_,
            "pending": len(self.pending),
            "down": {self.names[k]: pool.last_errors.get(k, "") for k in sorted(pool.down)},
        }

    def state_dict(self) -> dict:
        """The core router's state plus this adapter's counters (``verl``)."""
        c = self.counters()
        return {
            **self.core.state_dict(),
            "verl": {k: c[k] for k in ("learned", "tied", "skipped", "unlabelled", "dropped")},
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output; arms masked by failures are given a fresh chance."""
        self.core.load_state_dict(sd)
        self.core.pool.down.clear()
        self.core.pool.sync_mask(self.core.selector, 1)
        for key, value in sd["verl"].items():
            setattr(self, f"{key}_", int(value))


def save_router(root: str | Path, router: GroupRouter, step: int) -> Path:
    """Atomic save (temporary folder, manifest with sha256, rename) with the core's writer."""
    from laser.routing import save_state

    return save_state(root, step, router.state_dict())


def load_router(root: str | Path, router: GroupRouter) -> Path | None:
    """Load the newest verified save under ``root`` into ``router``; None when there is none."""
    from laser.routing import load_state

    state, folder = load_state(root, STATE_FILES)
    if state is not None:
        router.load_state_dict(state)
    return folder


class SharedRouter:
    """A :class:`GroupRouter` restored at start and saved on a schedule: the state verl's named Ray
    actor and a routed ``laser serve-rm`` hold.

    Its methods must be called one at a time (a Ray actor runs them so; the server holds a lock).

    Args:
        names: the RM names.
        spec: :class:`RoutingSpec` fields as a dict (what crosses to a Ray actor).
    """

    def __init__(self, names: list[str], spec: dict):
        self.spec = RoutingSpec(**spec)
        if self.spec.selector == "reliability":
            from laser.integrations.grouped_reliability import ReliabilityGroups

            self.router = ReliabilityGroups(names, self.spec)
        else:
            self.router = GroupRouter(names, self.spec)
        self.root = Path(self.spec.state_dir) if self.spec.state_dir else None
        self.resumed_from = load_router(self.root, self.router) if self.root else None
        if self.resumed_from:
            log.info("laser router: resumed from %s", self.resumed_from)
        self.saves = 0

    def route(self, uid: str, prompt: str) -> int:
        return self.router.route(uid, prompt)

    def plan(self, uid: str, prompt: str, group: str | None = None) -> list[int]:
        return self.router.plan(uid, prompt, group)

    def fail(self, uid: str, arm: int, error: str) -> int:
        return self.router.fail(uid, arm, error)

    def report(
        self, uid: str, arm: int, text: str, score: float, gold: Any, task: str | None, probe_scores=None
    ) -> str | None:
        outcome = self.router.report(uid, arm, text, score, gold, task, probe_scores)
        done = sum(getattr(self.router, f"{c}_") for c in self.router.COUNTED)
        if outcome in self.router.COUNTED and self.root and done % self.spec.save_every == 0:
            self.save()
        return outcome

    def save(self) -> str | None:
        """Write the state now (also called on the schedule); returns the folder (None: no state_dir)."""
        if self.root is None:
            return None
        folder = save_router(self.root, self.router, self.router.finished())
        self.saves += 1
        (log.warning if self.saves == 1 else log.info)("laser router: state saved to %s", folder)
        return str(folder)

    def state_dict(self) -> dict:
        return self.router.state_dict()

    def stats(self) -> dict:
        return {
            **self.router.counters(),
            **self.router.summary(),
            "saves": self.saves,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
        }
