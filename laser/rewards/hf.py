"""Sequence-classification reward models from Hugging Face transformers.

The RM reads (prompt, response) rendered with the tokenizer's chat template (user = prompt,
assistant = response) and returns one logit per pair: the usual form of Bradley-Terry RMs on
RewardBench (Skywork-Reward, ArmoRM's backbone, OpenAssistant DeBERTa, ...).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from laser import hub as hf
from laser.rewards.base import check_scores
from laser.rewards.placement import Placement


class HFClassifierRM:
    """A ``transformers`` sequence classifier used as a reward model.

    score(x, y) = logits[label_index] of ``AutoModelForSequenceClassification`` on the
    chat-templated conversation [user: x, assistant: y] (or ``x + y`` without a template). The
    logit is read where the model itself reads it (for decoder classifiers: the rightmost token
    that is not the pad id). Batches are right-padded with the config's pad id, so a batched
    score equals the one-at-a-time score.

    Over-long inputs (more than ``max_length`` tokens): with ``overflow="nan"`` (default) the
    pair is unscorable (NaN), because a cut conversation is not what the RM was trained on; with
    ``overflow="truncate_left"`` tokens are dropped from the start of the prompt, and only a
    response that alone exceeds ``max_length`` is NaN.

    Args:
        model: Hub name, local folder, ``(model, tokenizer)`` pair, or a model object.
        tokenizer: tokenizer object or name/path; defaults to the model's own.
        name: name used in logs; defaults to the model's name or path.
        batch_size: pairs per forward pass.
        max_length: the longest token sequence scored.
        use_chat_template: render with the tokenizer's chat template when it has one.
        label_index: which output logit is the score.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :mod:`laser.rewards.placement`).
        dtype: ``"float32"``, ``"bfloat16"``, ``"auto"`` (chosen for ``device``).
        gguf_file: a GGUF file inside the ``model`` folder.
        overflow: ``"nan"`` or ``"truncate_left"``.
        offload: keep the weights in CPU memory and move them to ``device`` for each call.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        name: str | None = None,
        batch_size: int = 8,
        max_length: int = 1024,
        use_chat_template: bool = True,
        label_index: int = 0,
        device: str = "auto",
        dtype: str = "auto",
        gguf_file: str | None = None,
        overflow: str = "nan",
        offload: bool = False,
    ):
        self.name = name or (str(model) if isinstance(model, str) else "hf_classifier")
        self.batch_size = batch_size
        self.max_length = max_length
        self.use_chat_template = use_chat_template
        self.label_index = label_index
        self.overflow = hf.check_overflow(overflow)
        self.placement = Placement(self.name, device, offload)
        self.model, self.tokenizer = hf.prepare(
            model,
            tokenizer,
            "AutoModelForSequenceClassification",
            gguf_file,
            self.placement.home,
            dtype,
            self.placement.dtype_device,
        )
        self.placement.attach(self.model)
        self.pad_id = self.model.config.pad_token_id
        n_labels = self.model.config.num_labels
        if not 0 <= label_index < n_labels:
            raise ValueError(f"label_index={label_index} but the model has {n_labels} labels")

    def encode(self, prompt: str, response: str) -> dict[str, list[int]] | None:
        """Model inputs (``input_ids``, maybe ``token_type_ids``) for one pair; None = too long.

        With a chat template the prompt and response parts come from :func:`hf.encode_pair`.
        Without one the pair is encoded as a text pair, ``tokenizer(prompt, response)``, which
        gives cross-encoder classifiers (BERT, DeBERTa) their ``[CLS] x [SEP] y [SEP]`` input and
        decoder tokenizers a plain concatenation.
        """
        tok = self.tokenizer
        if self.use_chat_template and hf.has_chat_template(tok):
            p_ids, r_ids = hf.encode_pair(tok, prompt, response, True)
            ids = hf.fit_left(p_ids, r_ids, self.max_length, self.overflow)
            return None if ids is None else {"input_ids": ids}
        enc = tok(prompt, response)
        if len(enc["input_ids"]) > self.max_length:
            if self.overflow == "nan":
                return None
            side, tok.truncation_side = tok.truncation_side, "left"
            try:
                enc = tok(prompt, response, truncation="only_first", max_length=self.max_length)
            except Exception:  # the response alone does not fit: unscorable, by the rule above
                return None
            finally:
                tok.truncation_side = side
        return {k: list(enc[k]) for k in ("input_ids", "token_type_ids") if k in enc}

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each pair; see the class docstring. Returns float64 of shape (len(responses),)."""
        hf.check_pairs(prompts, responses)
        rows = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        out = np.full(len(rows), np.nan)
        todo = [i for i, r in enumerate(rows) if r is not None]
        if todo:  # weights move outside inference mode: moved parameters stay ordinary tensors
            with self.placement.scoring() as dev, torch.inference_mode():
                self._forward(rows, todo, out, dev)
        return check_scores(out, len(responses), self.name)

    def _forward(self, rows: list, todo: list[int], out: np.ndarray, dev: torch.device) -> None:
        """Fill ``out[todo]`` with the score logits, ``batch_size`` rows per forward pass."""
        for chunk in hf.batches(len(todo), self.batch_size):
            idx = [todo[j] for j in chunk]
            ids, mask = hf.pad_right([rows[i]["input_ids"] for i in idx], self.pad_id, dev)
            inputs = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in rows[idx[0]]:
                types = [rows[i]["token_type_ids"] for i in idx]
                inputs["token_type_ids"] = hf.pad_right(types, 0, dev)[0]
            logits = self.model(**inputs).logits
            out[idx] = logits[:, self.label_index].float().cpu().numpy()

    def __repr__(self) -> str:
        return f"HFClassifierRM(name={self.name!r}, label_index={self.label_index})"
