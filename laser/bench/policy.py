"""The embedded default policy: a tiny Llama-style character model trained from scratch by SFT.

``build_tiny_policy`` trains (or loads from its cache) a model on the synthetic benchmark's worked
responses and saves it with ``save_pretrained`` into a folder, so the training loop loads it exactly
like a Hub model::

    folder = build_tiny_policy(cache_dir=None, seed=0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)

Prompt/response convention: the tokenizer prepends ``<bos>`` to every encoded text; a synthetic
``Example.prompt`` already ends with ``laser.bench.tasks.SEP``; SFT trains on
``<bos> prompt`` followed by ``response <eos>`` with the loss on the response and ``<eos>`` only.
So the loop feeds ``Example.prompt`` as is and stops generation at ``<eos>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from laser.bench.tasks import VERSIONS, format_prompt, make_benchmark, worked_response
from laser.tasks.base import Example
from laser.tasks.metrics import example_accuracy

__all__ = [
    "CHARSET",
    "PRESETS",
    "SHIPPED_DIR",
    "build_tiny_policy",
    "evaluate_accuracy",
    "generate",
    "make_char_tokenizer",
    "make_tiny_model",
    "policy_key",
    "sft_targets",
    "shipped_policy",
    "train_sft",
]

#: Every character the tokenizer knows; anything else encodes to <unk>.
CHARSET = "\n !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}

#: SFT recipes. ``moderate`` is the demo's default start: tuned so greedy accuracy is well below
#: 100% on every domain and samples at temperature 0.8 mix right and wrong answers (see
#: docs/embedded_benchmark.md for the measured figures).
PRESETS: dict[str, dict] = {
    "moderate": {
        "hidden": 64,
        "layers": 2,
        "heads": 4,
        "n_train_per_domain": 1000,
        "steps": 600,
        "lr": 3e-3,
        "batch_size": 32,
        "n_eval_per_domain": 100,
    },
    "smoke": {
        "hidden": 32,
        "layers": 1,
        "heads": 2,
        "n_train_per_domain": 20,
        "steps": 3,
        "lr": 3e-3,
        "batch_size": 8,
        "n_eval_per_domain": 2,
    },
    # v2 (issue 13): SFT on a mix of "worked" and "answer_first" targets; a share
    # ``answer_first`` of each domain's examples guesses the answer before the working, so the
    # start is weak and preference training with the right RM has a style to move towards.
    "v2": {
        "hidden": 64,
        "layers": 2,
        "heads": 4,
        "n_train_per_domain": 1000,
        "steps": 1500,
        "lr": 3e-3,
        "batch_size": 32,
        "n_eval_per_domain": 100,
        "benchmark": "v2",
        "answer_first": 0.6,
    },
    "v2_smoke": {
        "hidden": 32,
        "layers": 1,
        "heads": 2,
        "n_train_per_domain": 20,
        "steps": 3,
        "lr": 3e-3,
        "batch_size": 8,
        "n_eval_per_domain": 2,
        "benchmark": "v2",
        "answer_first": 0.6,
    },
}
_RECIPE_VERSION = 1  # bump when the training recipe or the data change meaning
_INFO_FILE = "laser_sft.json"

#: SFT starts that ship inside the package, one folder per cache key (``tiny-policy-<key>``): the
#: demo's default start (``v2``, seed 0, torch 2.13), trained by this file's recipe on one CPU
#: thread (about 2 minutes on 2 cores); ``tests/bench/test_policy.py`` checks that the folder's key
#: is the recipe's and (``-m slow``) that training again gives the same bytes
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"


def make_char_tokenizer(padding_side: str = "right"):
    """A character-level ``PreTrainedTokenizerFast`` (WordLevel over single characters).

    Every text is encoded as ``<bos>`` followed by one token per character; ``decode`` joins
    characters back without spaces. ``save_pretrained`` / ``AutoTokenizer.from_pretrained``
    round-trip it offline.

    Args:
        padding_side: ``"right"`` for training, ``"left"`` for batched generation.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARSET))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    bos = SPECIAL_TOKENS["bos_token"]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, padding_side=padding_side, model_max_length=256, **SPECIAL_TOKENS
    )
    return tok


def make_tiny_model(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` sized for the character vocabulary.

    Args:
        tokenizer: the character tokenizer (sets vocab size and special-token ids).
        hidden: hidden size (MLP is 4x); layers: decoder layers; heads: attention heads.
        seed: initialisation seed (the global torch RNG is left untouched).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _sft_tensors(tokenizer, examples: Sequence[Example], responses: Sequence[str] | None):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 outside responses)."""
    if responses is None:
        responses = [worked_response(e.prompt) for e in examples]
    rows, label_rows = [], []
    for ex, resp in zip(examples, responses, strict=True):
        p = tokenizer(format_prompt(ex))["input_ids"]
        r = tokenizer(resp, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + r)
        label_rows.append([-100] * len(p) + r)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, label_rows, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(lab)] = torch.tensor(lab)
    return ids, (ids != tokenizer.pad_token_id).long(), labels


def train_sft(
    model,
    tokenizer,
    examples: Sequence[Example],
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    responses: Sequence[str] | None = None,
) -> dict:
    """Supervised fine-tuning on worked responses, loss on response tokens (and ``<eos>``) only.

    Batches are drawn uniformly with replacement by an owned ``torch.Generator``; AdamW with a
    10% linear warm-up then cosine decay to 10% of ``lr``.

    Args:
        model: a causal LM (trained in place).
        tokenizer: its character tokenizer.
        examples: training examples; their ``prompt`` is fed through ``format_prompt``.
        steps: optimizer steps; lr: peak learning rate; batch_size: sequences per step.
        seed: seeds batch sampling.
        responses: targets, one per example; default ``worked_response(example.prompt)``.

    Returns:
        ``{"steps", "losses" (per step), "loss_first", "loss_last", "seconds"}``.
    """
    if steps < 1 or not examples:
        raise ValueError(f"train_sft needs steps >= 1 and examples, got {steps} steps, {len(examples)} examples")
    ids, mask, labels = _sft_tensors(tokenizer, examples, responses)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses, start = [], time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(ids), (batch_size,), generator=gen)
        width = int(mask[idx].sum(1).max())  # trim shared right padding: less compute
        out = model(input_ids=ids[idx, :width], attention_mask=mask[idx, :width], labels=labels[idx, :width])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    model.eval()
    return {
        "steps": steps,
        "losses": losses,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 40,
    greedy: bool = True,
    temperature: float = 0.8,
    num_return_sequences: int = 1,
    batch_size: int = 256,
    seed: int = 0,
) -> list[str]:
    """Generate responses (decoded, special tokens removed), prompt-major.

    Returns ``len(prompts) * num_return_sequences`` strings; responses of prompt ``i`` are at
    ``i * num_return_sequences ...``. Sampling uses a forked global RNG seeded with ``seed``.
    """
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outs: list[str] = []
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in range(0, len(prompts), batch_size):
                enc = tokenizer(list(prompts[i : i + batch_size]), return_tensors="pt", padding=True)
                kwargs = (
                    {"do_sample": False}
                    if greedy
                    else {
                        "do_sample": True,
                        "temperature": temperature,
                        "top_k": 0,
                        "top_p": 1.0,
                        "num_return_sequences": num_return_sequences,
                    }
                )
                seqs = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **kwargs,
                )
                new = seqs[:, enc["input_ids"].shape[1] :]
                outs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return outs


def evaluate_accuracy(
    model,
    tokenizer,
    examples: Sequence[Example],
    max_new_tokens: int = 40,
    greedy: bool = True,
    batch_size: int = 256,
    temperature: float = 0.8,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy per domain and on average (``laser.tasks.metrics.example_accuracy``).

    Returns:
        ``{domain: accuracy, ..., "average": mean of the domain accuracies}`` (macro average, as in
        the paper's tables), each in [0, 1].
    """
    texts = generate(
        model,
        tokenizer,
        [format_prompt(e) for e in examples],
        max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
    )
    return example_accuracy(examples, texts)["accuracy"]


def sft_targets(
    examples: Sequence[Example], benchmark: str = "v1", answer_first: float = 0.0, seed: int = 0
) -> list[str] | None:
    """The SFT responses of a benchmark version; ``None`` for v1 (``train_sft``'s default targets).

    For ``"v2"`` each example independently gets the ``answer_first`` style with probability
    ``answer_first`` (a seeded draw) and the ``worked`` style otherwise.

    Raises:
        ValueError: unknown benchmark version, or ``answer_first`` outside [0, 1].
    """
    if benchmark not in VERSIONS:
        raise ValueError(f"unknown benchmark version {benchmark!r}; valid: {', '.join(VERSIONS)}")
    if not 0.0 <= answer_first <= 1.0:
        raise ValueError(f"answer_first must be in [0, 1], got {answer_first}")
    if benchmark == "v1":
        return None
    first = np.random.default_rng([seed, 2]).random(len(examples)) < answer_first
    return [
        worked_response(e.prompt, style="answer_first" if f else "worked") for e, f in zip(examples, first, strict=True)
    ]


def _settings(seed: int, target: str, overrides: dict) -> dict:
    if target not in PRESETS:
        raise ValueError(f"unknown target {target!r}; valid: {sorted(PRESETS)}")
    unknown = set(overrides) - set(PRESETS[target])
    if unknown:
        raise ValueError(f"unknown build_tiny_policy settings {sorted(unknown)}; valid: {sorted(PRESETS[target])}")
    return {
        "recipe": _RECIPE_VERSION,
        "torch": torch.__version__.split("+")[0],
        "seed": seed,
        "target": target,
        **PRESETS[target],
        **overrides,
    }


def default_cache_dir() -> Path:
    """``$LASER_CACHE_DIR`` if set, else ``~/.cache/laser-rm``."""
    return Path(os.environ.get("LASER_CACHE_DIR") or Path.home() / ".cache" / "laser-rm")


def _key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _shipped(key: str) -> str | None:
    folder = SHIPPED_DIR / f"tiny-policy-{key}"
    return str(folder) if (folder / _INFO_FILE).exists() else None


def policy_key(seed: int = 0, target: str = "moderate", **overrides) -> str:
    """The cache key of a build: a hash of every setting, the recipe version and the torch version."""
    return _key(_settings(seed, target, overrides))


def shipped_policy(seed: int = 0, target: str = "moderate", **overrides) -> str | None:
    """The folder of the SFT start shipped with laser-rm for these settings, or None (see SHIPPED_DIR)."""
    return _shipped(policy_key(seed, target, **overrides))


def build_tiny_policy(
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    target: str = "moderate",
    shipped: bool = True,
    **overrides,
) -> str:
    """Train the embedded policy by SFT, or reuse a shipped or cached one, and return its folder.

    The folder (``<cache_dir>/tiny-policy-<hash>``) holds ``save_pretrained`` output of the model
    and tokenizer plus ``laser_sft.json`` (settings, SFT stats, test accuracy). The hash covers
    every setting, the recipe version and the torch version, so a changed setting retrains.
    Training writes to a temporary folder that is renamed into place when complete.

    Args:
        cache_dir: where checkpoints live; ``None`` uses ``default_cache_dir()``.
        seed: seeds data generation, initialisation and batch order.
        target: a key of ``PRESETS`` (``"moderate"`` is the demo default).
        shipped: return the package's own copy when one has this hash (``SHIPPED_DIR``: the
            demo's start, ``v2`` seed 0 on torch 2.13) instead of training; False trains it (once:
            the result is cached like any other build).
        **overrides: replace preset values (hidden, layers, heads, n_train_per_domain, steps, lr,
            batch_size, n_eval_per_domain: test examples per domain for the recorded accuracy).

    Returns:
        The folder path, loadable by ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.
    """
    settings = _settings(seed, target, overrides)
    key = _key(settings)
    if shipped and (found := _shipped(key)) is not None:
        return found
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"tiny-policy-{key}"
    if (folder / _INFO_FILE).exists():
        return str(folder)
    root.mkdir(parents=True, exist_ok=True)
    s = settings
    tokenizer = make_char_tokenizer()
    model = make_tiny_model(tokenizer, s["hidden"], s["layers"], s["heads"], seed=seed)
    version = s.get("benchmark", "v1")
    train = make_benchmark(s["n_train_per_domain"], seed=seed, split="train", version=version)
    responses = sft_targets(train, version, s.get("answer_first", 0.0), seed)
    stats = train_sft(model, tokenizer, train, s["steps"], s["lr"], s["batch_size"], seed=seed, responses=responses)
    test = make_benchmark(s["n_eval_per_domain"], seed=seed, split="test", version=version)
    info = {
        "settings": settings,
        "sft_seconds": stats["seconds"],
        "loss_first": stats["loss_first"],
        "loss_last": stats["loss_last"],
        "test_accuracy_greedy": evaluate_accuracy(model, tokenizer, test),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _INFO_FILE).write_text(json.dumps(info, indent=2))
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / _INFO_FILE).exists():  # not a concurrent builder that won the race
            raise
    return str(folder)
