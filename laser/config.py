"""Run configuration: a tree of dataclasses loaded from YAML with dotted overrides.

Every problem in a config (unknown key, wrong type, out-of-range value, cross-field conflict)
is collected and reported at once as a :class:`ConfigError` whose lines name the dotted key,
before anything heavy (a model, a dataset) is loaded.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # YAML reads "1e-5" as a string
# config sits above laser.routing: it reads the routing core's registries (no torch), never the reverse
from laser.routing.feedback import FEEDBACKS as _FEEDBACK_REGISTRY  # noqa: E402
from laser.routing.strategies import STRATEGIES as _STRATEGIES  # noqa: E402

SELECTOR_ENSEMBLES = tuple(_STRATEGIES)  # the selection strategies that are not a plain bandit

FEEDBACKS = ("auto", "auto_label_free", *_FEEDBACK_REGISTRY)


class ConfigError(ValueError):
    """One or more configuration problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"invalid config{f' {source}' if source else ''} ({len(problems)} problem(s)):"
        super().__init__("\n  ".join([head, *problems]))


@dataclass
class LoraConfig:
    enabled: bool = field(default=False, metadata={"help": "train LoRA adapters through peft"})
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class PolicyConfig:
    model: str = field(default="", metadata={"help": "Hub name or local folder of a causal LM"})
    tokenizer: str | None = None
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside `model`"})
    dtype: str = "float32"
    device: str = "auto"
    chat_template: bool = field(default=False, metadata={"help": "wrap prompts in the chat template"})
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    prompts: str = field(default="", metadata={"help": "JSONL prompt file, or the task's file/folder"})
    task: str | None = field(default=None, metadata={"help": "gsm8k | strategyqa | mmlu: load `prompts` "
                                                              "in that dataset's official format"})
    split: str | None = field(default=None, metadata={"help": "split file to pick from a task folder"})
    prompt_field: str = "prompt"
    id_field: str = "id"
    answer_field: str = "answer"
    limit: int | None = None
    shuffle: bool = True
    group_batches: bool = field(default=False, metadata={"help": "every batch from one domain/task "
                                                                 "(as when mixing several datasets)"})


@dataclass
class SelectorConfig:
    name: str = field(default="linucb", metadata={"help": "bandit, baseline or ensemble name"})
    alpha: float = 0.1
    arm: str | None = field(default=None, metadata={"help": "RM name for the `fixed` selector"})
    per_prompt: bool = field(default=False, metadata={"help": "one arm per prompt instead of per batch"})
    context: str = field(default="policy", metadata={"help": "policy | encoder | none"})
    encoder: str = "auto"
    normalizer_low: float = 0.2
    normalizer_high: float = 0.8
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    iterations: int = 10
    batch_size: int = 16
    n_samples: int = 30
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 128
    pairs_per_prompt: int = 10
    pairing: str = "top_vs_rest"
    beta: float = 0.1
    nll_weight: float = 1.0
    lr: float = 5e-6
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    micro_batch_pairs: int = 64
    feedback: str = field(default="auto", metadata={"help": "|".join(FEEDBACKS) + "; auto = pair_accuracy when "
                                                        "every prompt has a gold answer, mixed_pair_accuracy when some "
                                                        "do, else auto_label_free = majority_pair_accuracy when every "
                                                        "prompt has a task, else neg_loss"})
    on_nonfinite: str = "stop"
    max_skipped_steps: int = 3


@dataclass
class CheckpointConfig:
    every: int = field(default=1, metadata={"help": "steps between checkpoints; 0 = only at the end"})
    keep_last: int = 2


@dataclass
class RunConfig:
    seed: int = 0
    output_dir: str = "runs/laser"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: list[dict[str, Any]] = field(default_factory=list)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log_with: list[str] | str = field(default_factory=list, metadata={
        "help": "Accelerate trackers (tensorboard, wandb, mlflow, trackio, ...); log.jsonl is always written"})
    tracker_project: str = field(default="laser", metadata={"help": "project / experiment name for the trackers"})


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, dict):
        return isinstance(value, origin)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, recording every problem with its dotted key."""
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
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, f"{prefix}{f.name}.", problems)
        elif _type_ok(value, tp):
            kwargs[f.name] = float(value) if tp is float else value
        elif tp is float and isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            kwargs[f.name] = float(value)
        else:
            problems.append(f"{prefix}{f.name}: expected {_type_name(tp)}, got {value!r}")
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_ranges(cfg: RunConfig) -> list[str]:
    t, s, p = cfg.train, cfg.selector, []
    positive = {
        "train.lr": t.lr, "train.beta": t.beta, "train.temperature": t.temperature,
        "train.iterations": t.iterations, "train.batch_size": t.batch_size,
        "train.max_new_tokens": t.max_new_tokens, "train.pairs_per_prompt": t.pairs_per_prompt,
        "train.micro_batch_pairs": t.micro_batch_pairs,
    }
    p += [f"{k}: must be > 0, got {v}" for k, v in positive.items() if not v > 0]
    if t.n_samples < 2:
        p.append(f"train.n_samples: must be >= 2 to form a pair, got {t.n_samples}")
    if not 0 < t.top_p <= 1:
        p.append(f"train.top_p: must be in (0, 1], got {t.top_p}")
    for k, v in {"train.nll_weight": t.nll_weight, "train.weight_decay": t.weight_decay,
                 "train.grad_clip": t.grad_clip, "selector.alpha": s.alpha,
                 "checkpoint.every": cfg.checkpoint.every}.items():
        if v < 0:
            p.append(f"{k}: must be >= 0, got {v}")
    if cfg.checkpoint.keep_last < 1:
        p.append(f"checkpoint.keep_last: must be >= 1, got {cfg.checkpoint.keep_last}")
    if not 0 <= s.normalizer_low < s.normalizer_high <= 1:
        p.append("selector.normalizer_low/high: need 0 <= low < high <= 1, "
                 f"got {s.normalizer_low}, {s.normalizer_high}")
    from laser.routing.pairs import PAIRING_RULES

    if t.pairing not in PAIRING_RULES:
        p.append(f"train.pairing: {t.pairing!r} is not one of {', '.join(PAIRING_RULES)}")
    if t.feedback not in FEEDBACKS:
        p.append(f"train.feedback: {t.feedback!r} is not one of {', '.join(FEEDBACKS)}")
    if t.on_nonfinite not in ("stop", "skip"):
        p.append(f"train.on_nonfinite: must be 'stop' or 'skip', got {t.on_nonfinite!r}")
    if s.context not in ("policy", "encoder", "none"):
        p.append(f"selector.context: must be policy, encoder or none, got {s.context!r}")
    if cfg.data.task is not None and cfg.data.task not in ("gsm8k", "strategyqa", "mmlu"):
        p.append(f"data.task: must be gsm8k, strategyqa or mmlu, got {cfg.data.task!r}")
    if cfg.policy.dtype not in ("float32", "bfloat16", "float16", "auto"):
        p.append(f"policy.dtype: must be float32, bfloat16, float16 or auto, got {cfg.policy.dtype!r}")
    return p


def _check_selector(cfg: RunConfig, rm_names: list[str]) -> list[str]:
    from laser.bandits import SELECTORS

    s, p = cfg.selector, []
    valid = sorted([*SELECTORS, *SELECTOR_ENSEMBLES])
    if s.name not in valid:
        p.append(f"selector.name: {s.name!r} is not one of {', '.join(valid)}")
    if s.name == "fixed":
        if s.arm is None:
            p.append("selector.arm: required with selector.name=fixed (an RM name)")
        elif rm_names and s.arm not in rm_names:
            p.append(f"selector.arm: {s.arm!r} is not a reward model name ({', '.join(rm_names)})")
    if s.name == "online_ensemble" and cfg.train.feedback in ("loss_decrease", "margin_gain"):
        p.append(f"train.feedback: {cfg.train.feedback} is not computed per pair; selector.name=online_ensemble "
                 "needs neg_loss or an answer-based feedback")
    if s.name == "oracle":
        mapping = s.kwargs.get("arms_by_group")
        if not isinstance(mapping, dict) or not mapping:
            p.append("selector.kwargs.arms_by_group: required with selector.name=oracle ({group: reward model name})")
        elif rm_names and (bad := sorted({str(v) for v in mapping.values() if v not in rm_names})):
            p.append(f"selector.kwargs.arms_by_group: unknown reward model(s) {bad} (valid: {', '.join(rm_names)})")
    if s.per_prompt and s.name in SELECTOR_ENSEMBLES:
        p.append("selector.per_prompt: not meaningful with an ensemble (every RM scores every prompt)")
    return p


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
    problems = _check_ranges(cfg)
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


def load_config(path: str | Path | None = None, overrides: list[str] = (), data: dict | None = None,
                require_data: bool = True) -> RunConfig:
    """Load, override and validate a run config; raise :class:`ConfigError` listing every problem.

    Args:
        path: a YAML file (or None to start from ``data`` / the defaults).
        overrides: ``dotted.key=value`` strings applied after the file.
        data: a mapping used instead of the file.
        require_data: whether ``policy.model`` and ``data.prompts`` must be set.
    """
    source = str(path) if path else None
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError([f"cannot read config: {exc}"], source) from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"not valid YAML: {exc}"], source) from exc
    data = dict(data or {})
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError([f"{'.'.join(keys)}: {k} is not a section"], source)
        node[keys[-1]] = value
    problems: list[str] = []
    cfg = _build(RunConfig, data, "", problems)
    bad = {p.split(":")[0].split(".")[0].split("[")[0] for p in problems}
    problems += validate(cfg, require_data=require_data, bad_keys=bad)  # failed values kept defaults
    if problems:
        raise ConfigError(problems, source)
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain data (what checkpoints and logs store)."""
    return dataclasses.asdict(cfg)
