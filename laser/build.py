"""One builder for every command: a run config (plus optional pre-built parts) -> a Trainer.

``laser train``, ``laser bon``, ``laser demo`` and ``laser compare`` (benchmark and ``user:``
modes) all wire their runs here, and method names (``laser``, ``laser_per_prompt``,
``laser:<feedback>``, ``laser@<selector>``, ``single:<rm>``, ``oracle``, any strategy or
selector name) become config sections in :func:`method_config` only.

Package order (nothing imports upward): bandits, tasks -> rewards, hub -> routing, policy -> training
-> config -> build -> bench (demo, compare) / integrations -> cli. One named exception: the ``demo``
reward-model type's registry entry names ``laser.bench.rms:demo_rm`` (imported when a config uses it).
"""

from __future__ import annotations

from laser.config import ConfigError, load_config

#: compared methods that are a selector or strategy name as they are
PLAIN = ("laser", "laser_per_prompt", "random", "round_robin", "score_ensemble", "agreement_ensemble")
#: the label-free reliability router (selector ``reliability``; laser.routing.reliability)
RELIABILITY = "laser:reliability"
#: methods that pick one RM per prompt (BayesianRouter routes per prompt by design)
PER_PROMPT = ("laser_per_prompt", "bayes_router")


def method_config(
    method: str, selector: dict | None = None, train: dict | None = None, selector_kwargs: dict[str, dict] | None = None
) -> tuple[dict, dict]:
    """The (selector, train) config sections of a compared method, starting from a run's own.

    ``laser`` / ``laser_per_prompt`` / ``laser:<feedback>`` use LinUCB (per prompt for the
    second; the named feedback for the third); ``laser@<name>`` the bandit ``name``;
    ``bayes_router`` the selector of that name per prompt;
    ``single:<rm>`` the fixed selector on that RM; ``laser:reliability`` the label-free reliability
    router (strategy ``reliability``, its options in ``selector.kwargs``); any other name (``random``, ``oracle``,
    ``score_ensemble``, ...) the selector or strategy of that name. The run's selector ``kwargs``
    are kept only when the selector name stays the same; ``selector_kwargs[name]`` adds defaults.
    """
    sel, tr = dict(selector or {}), dict(train or {})
    if method == RELIABILITY:
        name, arm, method = "reliability", None, "reliability"  # label-free: the run's feedback is unused
    elif method in ("laser", "laser_per_prompt") or method.startswith("laser:"):
        name, arm = "linucb", None
    elif method.startswith("laser@"):
        name, arm = method.split("@", 1)[1], None
    elif method.startswith("single:"):
        name, arm = "fixed", method.split(":", 1)[1]
    else:
        name, arm = method, None
    if sel.get("name", "linucb") != name:
        sel.pop("kwargs", None)
    sel.update(name=name, arm=arm, per_prompt=method in PER_PROMPT)
    extra = (selector_kwargs or {}).get(name)
    if extra:
        sel["kwargs"] = {**extra, **sel.get("kwargs", {})}
    if method.startswith("laser:"):
        tr["feedback"] = method.split(":", 1)[1]
    return sel, tr


def check_method(method: str, rm_names: list[str], extra: tuple[str, ...] = ()) -> str | None:
    """A problem with a method name, or None when it is valid (``extra``: names the caller adds)."""
    from laser.bandits import SELECTORS
    from laser.config import FEEDBACKS
    from laser.routing.strategies import STRATEGIES

    named = list(dict.fromkeys([*PLAIN, *STRATEGIES, *extra]))  # PLAIN holds the two score ensembles too
    if method in named or method == RELIABILITY:
        return None
    if method.startswith("laser@"):
        name = method.split("@", 1)[1]
        return (
            None
            if name in SELECTORS
            else f"{method}: unknown selector {name!r} (valid: {', '.join(sorted(SELECTORS))})"
        )
    if method.startswith("laser:"):
        fb = method.split(":", 1)[1]
        return None if fb in FEEDBACKS else f"{method}: unknown feedback {fb!r} (valid: {', '.join(FEEDBACKS)})"
    if method.startswith("single:"):
        rm = method.split(":", 1)[1]
        return None if rm in rm_names else f"{method}: unknown reward model {rm!r} (valid: {', '.join(rm_names)})"
    return f"unknown method {method!r}; valid: {', '.join(named)}, laser@<selector>, laser:<feedback>, single:<rm>"


def load_run(config: str, overrides: list[str]):
    """Config + RM specs + prompts of a ``laser train``/``bon`` config, all validated before any model loads."""
    from laser.rewards.factory import check_specs
    from laser.routing.feedback import resolve_feedback

    cfg = load_config(config, overrides)
    problems = check_specs(cfg.rewards)
    if problems:
        raise ConfigError(problems, config)
    examples = load_examples(cfg.data, cfg.seed)
    try:  # a label- or answer-based feedback on prompts without labels or a task: refused before any model loads
        resolve_feedback(cfg.train.feedback, examples)
    except ValueError as exc:
        raise ConfigError([f"train.feedback: {exc}"], config) from exc
    return cfg, examples


def load_examples(d, seed: int) -> list:
    """The run's prompts: a task in its official format, or a user JSONL prompt file."""
    from laser.tasks.datasets import load_task, read_prompts_jsonl

    if d.task:
        return load_task(d.task, d.prompts or None, split=d.split, limit=d.limit, seed=seed if d.shuffle else None)
    examples = read_prompts_jsonl(
        d.prompts, prompt_field=d.prompt_field, id_field=d.id_field, answer_field=d.answer_field
    )
    return examples[: d.limit] if d.limit else examples


def build_rms(cfg, examples: list) -> list:
    """The run's RMs; a verifier without its own gold answers checks against the loaded prompts'."""
    from laser.rewards.factory import build_reward_models

    specs = []
    for spec in cfg.rewards:
        spec = dict(spec)
        if spec.get("type") == "verifier" and not {"gold", "data"} & set(spec):
            spec["gold"] = {ex.prompt: ex.answer for ex in examples if ex.answer}
            if cfg.data.task:
                spec.setdefault("task", cfg.data.task)
        specs.append(spec)
    return build_reward_models(specs)


def load_policy(cfg):
    """The policy of ``cfg.policy`` (a Hub name, folder or GGUF file; LoRA when enabled).

    The LoRA adapters' initialisation draws from torch's global RNG: it is seeded with ``cfg.seed``
    first, so two runs of one config start from the same adapters.
    """
    import torch

    from laser.policy.model import Policy, load_model_and_tokenizer

    torch.manual_seed(cfg.seed)
    return Policy(*load_model_and_tokenizer(cfg.policy), chat_template=cfg.policy.chat_template)


def context_fn_for(cfg):
    """The sentence encoder's ``embed`` when ``selector.context=encoder``, else None (policy states)."""
    if cfg.selector.context != "encoder":
        return None
    from laser.policy.encoder import SentenceEncoder

    return SentenceEncoder(cfg.selector.encoder).embed


def build(
    cfg,
    examples: list | None = None,
    policy=None,
    rms: list | None = None,
    selector=None,
    accelerator=None,
    show_progress: bool = True,
):
    """A ready :class:`~laser.training.loop.Trainer` for ``cfg``; any part not given is built from it.

    Args:
        cfg: a validated run config.
        examples: training prompts (default: ``cfg.data``).
        policy: a :class:`~laser.policy.model.Policy` (default: ``cfg.policy``).
        rms: reward models, arm k = ``rms[k]`` (default: ``cfg.rewards``).
        selector: a pre-built selector (e.g. a fitted classifier) for a bandit strategy.
        accelerator: an ``accelerate.Accelerator`` (default: one from the environment and ``cfg.log_with``).
    """
    from laser.training.loop import Trainer

    examples = load_examples(cfg.data, cfg.seed) if examples is None else examples
    rms = build_rms(cfg, examples) if rms is None else rms
    policy = load_policy(cfg) if policy is None else policy
    return Trainer(
        cfg,
        policy,
        rms,
        examples,
        accelerator=accelerator,
        context_fn=context_fn_for(cfg),
        show_progress=show_progress,
        selector=selector,
    )
