"""Run configuration: a tree of dataclasses loaded from YAML with dotted overrides.

Every problem in a config (unknown key, wrong type, out-of-range value, cross-field conflict)
is collected and reported at once as a :class:`ConfigError` whose lines name the dotted key,
before anything heavy (a model, a dataset) is loaded.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# config sits above laser.routing: it reads the routing core's registries (no torch), never the reverse
from laser.routing.feedback import FEEDBACKS as _FEEDBACK_REGISTRY
from laser.routing.pairs import PAIRING_RULES
from laser.routing.strategies import STRATEGIES, check_strategy

_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # YAML reads "1e-5" as a string

FEEDBACKS = ("auto", "auto_label_free", *_FEEDBACK_REGISTRY)


class ConfigError(ValueError):
    """One or more configuration problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"invalid config{f' {source}' if source else ''} ({len(problems)} problem(s)):"
        super().__init__("\n  ".join([head, *problems]))


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = None,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    why: str = "",
) -> Any:
    """A config field with its help text and range, both checked and shown by the loader.

    Args:
        default: the default value (or ``factory``: a callable making it, for lists and dicts).
        help: one line for ``laser validate --explain``.
        gt, ge, le: the range (``> gt``, ``>= ge``, ``<= le``); numbers only; for a list, each item.
        why: said after the range in the error, e.g. "to form a pair".
    """
    meta = {"help": help, **{k: v for k, v in (("gt", gt), ("ge", ge), ("le", le)) if v is not None}}
    if why:
        meta["why"] = why
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class LoraConfig:
    enabled: bool = option(False, "train LoRA adapters through peft instead of every weight")
    r: int = option(16, "LoRA rank", ge=1)
    alpha: int = option(32, "LoRA scaling numerator (the update is scaled by alpha / r)", gt=0)
    dropout: float = option(0.05, "dropout on the LoRA branch", ge=0)
    target_modules: list[str] = option(help="module names that get adapters", factory=lambda: ["q_proj", "v_proj"])


@dataclass
class PolicyConfig:
    model: str = option("", "Hub name or local folder of a causal LM")
    tokenizer: str | None = option(None, "tokenizer name or folder; null = the model's")
    gguf_file: str | None = option(None, "GGUF file inside `model`")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = option("float32", "weights' dtype")
    device: str = option("auto", "auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    chat_template: bool = option(False, "wrap prompts in the tokenizer's chat template")
    trust_remote_code: bool = option(False, "passed to transformers' from_pretrained")
    lora: LoraConfig = option(help="LoRA adapters", factory=LoraConfig)


@dataclass
class DataConfig:
    prompts: str = option("", "JSONL prompt file, or the task's file/folder")
    task: Literal["gsm8k", "strategyqa", "mmlu"] | None = option(
        None, "load `prompts` in that dataset's official format (null: a JSONL prompt file)"
    )
    split: str | None = option(None, "split file to pick from a task folder")
    prompt_field: str = option("prompt", "JSONL field holding the prompt")
    id_field: str = option("id", "JSONL field holding the prompt id (absent: <file stem>-<line>)")
    answer_field: str = option("answer", "JSONL field holding the gold answer (optional per prompt)")
    limit: int | None = option(None, "use at most N prompts (a task with shuffle: N drawn with the seed); null = all")
    shuffle: bool = option(True, "shuffle the batches each iteration (seeded)")
    group_batches: bool = option(False, "every batch from one domain/task (as when mixing several datasets)")


@dataclass
class SelectorConfig:
    name: str = option("linucb", "bandit, baseline or ensemble name")
    alpha: float = option(0.1, "exploration weight of LinUCB-style selectors", ge=0)
    arm: str | None = option(None, "RM name for the `fixed` selector")
    per_prompt: bool = option(False, "one arm per prompt instead of per batch")
    context: Literal["policy", "encoder", "none"] = option(
        "policy", "the bandit's context: the policy's last-token state, a sentence encoder, or none"
    )
    encoder: str = option("auto", "sentence encoder of context=encoder (auto: all-MiniLM-L6-v2)")
    normalizer_low: float = option(0.2, "lower quantile of the reward normaliser (maps to 0)", ge=0, le=1)
    normalizer_high: float = option(0.8, "upper quantile of the reward normaliser (maps to 1)", ge=0, le=1)
    kwargs: dict[str, Any] = option(help="extra keyword arguments of the selector", factory=dict)


@dataclass
class TrainConfig:
    iterations: int = option(10, "passes over the prompts", gt=0)
    batch_size: int = option(16, "prompts per step", gt=0)
    n_samples: int = option(30, "responses sampled per prompt", ge=2, why="to form a pair")
    temperature: float = option(0.8, "sampling temperature", gt=0)
    top_p: float = option(1.0, "nucleus sampling mass", gt=0, le=1)
    max_new_tokens: int = option(128, "longest sampled response", gt=0)
    pairs_per_prompt: int = option(10, "preference pairs built per prompt", gt=0)
    pairing: Literal[PAIRING_RULES] = option("top_vs_rest", "how scored samples become pairs")
    beta: float = option(0.1, "DPO beta", gt=0)
    nll_weight: float = option(1.0, "weight of the NLL term on chosen responses (0 = pure DPO)", ge=0)
    lr: float = option(5e-6, "AdamW learning rate", gt=0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    grad_clip: float = option(1.0, "max gradient norm (0 = no clipping)", ge=0)
    micro_batch_pairs: int = option(64, "pairs per forward/backward (gradients accumulate)", gt=0)
    feedback: Literal[FEEDBACKS] = option(
        "auto",
        "the bandit's feedback; auto = pair_accuracy when every prompt "
        "has a gold answer, mixed_pair_accuracy when some do, else "
        "auto_label_free = majority_pair_accuracy when every prompt has a task, "
        "else neg_loss",
    )
    on_nonfinite: Literal["stop", "skip"] = option(
        "stop", "a non-finite loss or reward stops the run or skips the step"
    )
    max_skipped_steps: int = option(3, "most steps on_nonfinite=skip may skip", ge=0)


@dataclass
class CheckpointConfig:
    every: int = option(1, "steps between checkpoints; 0 = only at the end", ge=0)
    keep_last: int = option(2, "checkpoints kept", ge=1)


@dataclass
class RunConfig:
    seed: int = option(0, "seeds sampling, batch order, the bandit and the RMs' noise")
    output_dir: str = option("runs/laser", "checkpoints, log.jsonl and final/")
    policy: PolicyConfig = option(help="the trained language model", factory=PolicyConfig)
    data: DataConfig = option(help="the training prompts", factory=DataConfig)
    rewards: list[dict[str, Any]] = option(
        help="RM specs, arm k = the k-th: name, type and the type's arguments (docs/reward_models.md)", factory=list
    )
    selector: SelectorConfig = option(help="which RM scores each batch (or prompt)", factory=SelectorConfig)
    train: TrainConfig = option(help="sampling, pairs, the DPO + NLL update", factory=TrainConfig)
    checkpoint: CheckpointConfig = option(help="when checkpoints are written", factory=CheckpointConfig)
    log_with: list[str] | str = option(
        help="Accelerate trackers (tensorboard, wandb, mlflow, trackio, ...); log.jsonl is always written", factory=list
    )
    tracker_project: str = option("laser", "project / experiment name for the trackers")


def _union_args(tp: Any) -> tuple | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` has type ``tp`` (a Literal: the type of its choices; the choices are checked later)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if (args := _union_args(tp)) is not None:
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return any(_type_ok(value, type(c)) for c in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and (item not in _SCALARS or all(_type_ok(v, item) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


_SCALARS = (str, int, float, bool)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass of a field typed ``D`` or ``D | None``."""
    if dataclasses.is_dataclass(tp):
        return tp
    return next((a for a in _union_args(tp) or () if dataclasses.is_dataclass(a)), None)


def parse_section(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, recording every problem with its dotted key.

    Unknown keys and values of the wrong type are reported; a wrong value keeps the field's default
    (so the checks that follow see a well-typed object). Nested dataclass fields (also ``D | None``)
    are parsed the same way. Choices and ranges are checked by :func:`check_fields`.
    """
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or '<root>'}: expected a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            problems.append(f"{prefix}{key}: unknown key (valid: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, tp = data[f.name], hints[f.name]
        if (sub := _dataclass_of(tp)) is not None and not (value is None and sub is not tp):
            kwargs[f.name] = parse_section(sub, value, f"{prefix}{f.name}.", problems)
        elif _type_ok(value, tp):
            kwargs[f.name] = _as_float(value) if _is_float(tp) else value
        elif _is_float(tp) and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            kwargs[f.name] = float(value)
        else:
            problems.append(f"{prefix}{f.name}: expected {_type_name(tp)}, got {value!r}")
    return cls(**kwargs)


def _is_float(tp: Any) -> bool:
    return tp is float or (typing.get_origin(tp) is list and typing.get_args(tp) == (float,))


def _as_float(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, list) else float(value)


def _type_name(tp: Any) -> str:
    if (args := _union_args(tp)) is not None:
        return " | ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) is Literal:
        return " | ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _range_problem(v: Any, meta: Any) -> str | None:
    """The range error of a number ``v`` against a field's ``gt``/``ge``/``le`` metadata, or None."""
    lo = ("(", meta["gt"]) if "gt" in meta else ("[", meta["ge"]) if "ge" in meta else None
    hi = meta.get("le")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    ok = (lo is None or (v > lo[1] if lo[0] == "(" else v >= lo[1])) and (hi is None or v <= hi)
    if ok:
        return None
    if lo is not None and hi is not None:
        rule = f"in {lo[0]}{lo[1]}, {hi}]"
    elif lo is not None:
        rule = f"{'>' if lo[0] == '(' else '>='} {lo[1]}"
    else:
        rule = f"<= {hi}"
    return f"must be {rule}{' ' + meta['why'] if 'why' in meta else ''}, got {v}"


def check_fields(obj: Any, prefix: str = "") -> list[str]:
    """Choices (``Literal``) and ranges (:func:`option`) of every field of a dataclass tree, as
    ``dotted.key: message`` lines."""
    problems = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp, key = getattr(obj, f.name), hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += check_fields(value, f"{key}.")
            continue
        lit = next((a for a in (_union_args(tp) or (tp,)) if typing.get_origin(a) is Literal), None)
        if lit is not None and value is not None and value not in typing.get_args(lit):
            problems.append(f"{key}: {value!r} is not one of {', '.join(map(str, typing.get_args(lit)))}")
        items = value if isinstance(value, list) else [value]
        for i, v in enumerate(items):
            if (msg := _range_problem(v, f.metadata)) is not None:
                problems.append(f"{key}{f'[{i}]' if isinstance(value, list) else ''}: {msg}")
    return problems


def explain(cls: type, prefix: str = "") -> list[str]:
    """One line per key of a config dataclass tree: dotted key, type, default, range, help."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key, meta = hints[f.name], f"{prefix}{f.name}", f.metadata
        if (sub := _dataclass_of(tp)) is not None:
            lines.append(f"{key}:  {meta.get('help', '')}")
            lines += explain(sub, f"{key}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rng = [f"{op} {meta[k]}" for k, op in (("gt", ">"), ("ge", ">="), ("le", "<=")) if k in meta]
        extra = f" ({', '.join(rng)})" if rng else ""
        lines.append(f"{key}: {_type_name(tp)} = {default!r}{extra}  {meta.get('help', '')}".rstrip())
    return lines


def _check_ranges(cfg: RunConfig) -> list[str]:
    """Cross-field ranges (one field's own range and choices are declared at the field)."""
    s = cfg.selector
    if s.normalizer_low >= s.normalizer_high:
        return [f"selector.normalizer_low/high: need 0 <= low < high <= 1, got {s.normalizer_low}, {s.normalizer_high}"]
    return []


def _check_selector(cfg: RunConfig, rm_names: list[str]) -> list[str]:
    from laser.bandits import SELECTORS

    s, p = cfg.selector, []
    valid = sorted([*SELECTORS, *STRATEGIES])
    if s.name not in valid:
        p.append(f"selector.name: {s.name!r} is not one of {', '.join(valid)}")
    if s.name == "fixed":
        if s.arm is None:
            p.append("selector.arm: required with selector.name=fixed (an RM name)")
        elif rm_names and s.arm not in rm_names:
            p.append(f"selector.arm: {s.arm!r} is not a reward model name ({', '.join(rm_names)})")
    return p + check_strategy(cfg, rm_names)  # the strategies check their own kwargs and feedback


def _check_rewards(rewards: list[Any]) -> tuple[list[str], list[str]]:
    problems, names = [], []
    if not rewards:
        problems.append("rewards: at least one reward model is required")
    for i, spec in enumerate(rewards):
        key = f"rewards[{i}]"
        if not isinstance(spec, dict):
            problems.append(f"{key}: expected a mapping with name and type, got {spec!r}")
            continue
        for req in ("name", "type"):
            if not isinstance(spec.get(req), str) or not spec.get(req):
                problems.append(f"{key}.{req}: required non-empty string")
        name = spec.get("name")
        if isinstance(name, str) and name:
            if name in names:
                problems.append(f"{key}.name: duplicate reward model name {name!r}")
            names.append(name)
    return problems, names


def validate(cfg: RunConfig, require_data: bool = True, bad_keys: set[str] = frozenset()) -> list[str]:
    """All problems of a built config as ``dotted.key: message`` lines (empty when valid).

    ``bad_keys``: top-level keys already reported as malformed (not checked again).
    """
    problems = check_fields(cfg) + _check_ranges(cfg)
    rm_problems, names = _check_rewards(cfg.rewards)
    if "rewards" in bad_keys:
        rm_problems = []
    problems += rm_problems + _check_selector(cfg, names)
    if cfg.log_with:
        from laser.training.trackers import check_installed, tracker_names

        problems += check_installed(tracker_names(cfg.log_with))
    if require_data:
        if not cfg.policy.model:
            problems.append("policy.model: required (a Hub name or a local folder)")
        if not cfg.data.prompts and not (cfg.data.task and cfg.data.split):
            problems.append("data.prompts: required (a JSONL file of prompts, or a task's file/folder)")
    return problems


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError([f"{item}: overrides must look like key.sub=value"])
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a mapping; :class:`ConfigError` naming the file when it is unreadable,
    not YAML, or not a mapping at the top level."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([f"cannot read config: {exc}"], str(path)) from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"<root>: expected a mapping, got {type(data).__name__}"], str(path))
    return data


def apply_overrides(data: dict, overrides: list[str], source: str | Path | None = None) -> dict:
    """Set each ``dotted.key=value`` of ``overrides`` in ``data`` (in place; sections are created)."""
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError([f"{'.'.join(keys)}: {k} is not a section"], str(source) if source else None)
        node[keys[-1]] = value
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), data: dict | None = None, require_data: bool = True
) -> RunConfig:
    """Load, override and validate a run config; raise :class:`ConfigError` listing every problem.

    Args:
        path: a YAML file (or None to start from ``data`` / the defaults).
        overrides: ``dotted.key=value`` strings applied after the file.
        data: a mapping used instead of the file.
        require_data: whether ``policy.model`` and ``data.prompts`` must be set.
    """
    source = str(path) if path else None
    if path is not None:
        data = read_yaml(path)
    data = apply_overrides(dict(data or {}), overrides, source)
    problems: list[str] = []
    cfg = parse_section(RunConfig, data, "", problems)
    bad = {p.split(":")[0].split(".")[0].split("[")[0] for p in problems}
    problems += validate(cfg, require_data=require_data, bad_keys=bad)  # failed values kept defaults
    if problems:
        raise ConfigError(problems, source)
    return cfg
