"""The ``router:`` section of a routing config (verl's LaserRewardManager, a routed ``laser serve-rm``):
its fields, defaults and checks, every problem named by its dotted key before anything loads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from laser.tasks.extract import TASK_FORMATS

FEEDBACK_NAMES = ("auto", "pair_accuracy", "majority_pair_accuracy", "mixed_pair_accuracy")


@dataclass
class RoutingSpec:
    """The ``router:`` section of a routing config (verl's LaserRewardManager, a routed ``laser serve-rm``).

    Every field is optional for verl (``group_size`` and ``state_dir`` default from verl's config);
    serve-rm needs ``group_size`` and, with a bandit selector, ``task``. ``actor_name`` and ``unscorable``
    are read by verl only.
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
    from laser.routing.strategies.reliability import KWARGS, LABELLED

    opts, valid = spec.selector_options, (*KWARGS, LABELLED)
    problems = [
        f"router.selector_options.{k}: unknown option of selector reliability (valid: {', '.join(valid)})"
        for k in opts
        if k not in valid
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
    if all(k in valid for k in opts):
        from laser.routing.reliability import ReliabilityRouter

        try:  # a bad value (probe_share 2) named now rather than when the first row arrives
            ReliabilityRouter(max(len(names), 3), **{k: v for k, v in opts.items() if k not in ("anchor", LABELLED)})
        except (TypeError, ValueError) as exc:
            problems.append(f"router.selector_options: {exc}")
    if LABELLED in opts:
        problems += _labelled_problems(opts[LABELLED])
    return problems


def _labelled_problems(path: Any) -> list[str]:
    """``router.selector_options.labelled_pairs``: the JSONL file is read and checked now."""
    from laser.integrations.grouped_reliability import DEFAULT_GROUP
    from laser.routing.strategies.reliability import read_labelled

    try:
        read_labelled(path, "column", DEFAULT_GROUP, "router.selector_options")
    except ValueError as exc:
        return [str(exc)]
    return []


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
