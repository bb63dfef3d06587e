"""Implicit reward of a DPO-trained chat model (RewardBench style).

A model trained with DPO against a reference defines the reward
``r(x, y) = beta * [log pi(y|x) - log pi_ref(y|x)]`` up to a prompt-only constant (Rafailov et al.
2023). RewardBench scores such models by the log-ratio summed over the response tokens of the
chat-templated conversation; LASeR's four RMs (Zephyr-7B-alpha, Qwen1.5-7B-Chat, Eurus-7B-KTO,
OLMo-7B-Instruct) are all used this way. beta is a constant factor and is left out.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch

from laser import hub as hf
from laser.rewards.base import check_scores
from laser.rewards.placement import Placement


def response_logps(
    model: Any,
    rows: Sequence[Sequence[int]],
    starts: Sequence[int],
    pad_id: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log p(token | previous tokens) over each row's tokens from ``starts[i]`` on.

    Args:
        model: a causal LM returning ``.logits`` of shape (B, T, V).
        rows: token ids, prompt part then response part.
        starts: index of each row's first response token (tokens before it are conditioning
            only). A start of 0 is treated as 1: the first token of a sequence has no prediction.
        pad_id: id used for right padding.
        batch_size: rows per forward pass.

    Returns:
        ``(logps, n_tokens)``: float64 sums and the number of tokens summed, shape (len(rows),).
        Log-probabilities are computed in float32 whatever the model dtype.
    """
    dev = hf.model_device(model)
    logps = np.zeros(len(rows))
    counts = np.zeros(len(rows), dtype=np.int64)
    for chunk in hf.batches(len(rows), batch_size):
        ids, mask = hf.pad_right([rows[i] for i in chunk], pad_id, dev)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = ids[:, 1:]
        # log_softmax(logits)[target] = logit[target] - logsumexp(logits), without a (B, T, V) copy
        tok_logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        pos = torch.arange(1, ids.shape[1], device=dev)  # index in ids of each target token
        lo = torch.tensor([max(starts[i], 1) for i in chunk], device=dev)
        keep = (pos[None, :] >= lo[:, None]) & mask[:, 1:].bool()
        logps[list(chunk)] = (tok_logp * keep).sum(-1).double().cpu().numpy()
        counts[list(chunk)] = keep.sum(-1).cpu().numpy()
    return logps, counts


class ImplicitDPORM:
    """Implicit DPO reward of a chat model against its reference.

    score(x, y) = sum over response tokens t of [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)]

    where x is the chat template of ``[user: prompt]`` with the generation prompt and y the rest
    of the template of ``[user: prompt, assistant: response]`` (the response and the end-of-turn
    tokens the template appends), each tokenised on its own. Prompt tokens are never summed.
    ``length_normalize=True`` divides by the number of response tokens. Policy and reference
    must share the tokenizer (the policy's is used for both).

    Over-long pairs (``max_length``): ``overflow="nan"`` (default) makes them unscorable;
    ``"truncate_left"`` drops tokens from the start of the prompt (both models see the same cut).

    Args:
        policy: the DPO-trained model: Hub name, local folder, ``(model, tokenizer)`` pair or a
            model object (then ``tokenizer`` is required).
        reference: its reference (usually the SFT model), same forms; ``None`` is allowed only when
            ``policy`` is a peft model: the reference is then the policy with its adapters disabled.
        tokenizer: tokenizer object or name/path; defaults to the policy's own.
        name: name used in logs.
        batch_size: pairs per forward pass.
        use_chat_template: render with the tokenizer's chat template when it has one.
        length_normalize: divide each score by its number of response tokens.
        max_length: the longest token sequence scored.
        overflow: ``"nan"`` or ``"truncate_left"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :mod:`laser.rewards.placement`);
            the reference goes where the policy is.
        dtype: ``"float32"``, ``"bfloat16"``, ``"auto"`` (chosen for ``device``).
        gguf_file: a GGUF file inside the ``policy`` folder.
        reference_gguf_file: a GGUF file inside the ``reference`` folder.
        offload: keep both models in CPU memory and move them to ``device`` for each call.

    Raises:
        ValueError: no reference for a non-peft policy, or policy and reference vocabularies differ.
    """

    def __init__(
        self,
        policy: Any,
        reference: Any,
        tokenizer: Any = None,
        name: str | None = None,
        batch_size: int = 4,
        use_chat_template: bool = True,
        length_normalize: bool = False,
        max_length: int = 2048,
        overflow: str = "nan",
        device: str = "auto",
        dtype: str = "auto",
        gguf_file: str | None = None,
        reference_gguf_file: str | None = None,
        offload: bool = False,
    ):
        self.name = name or (f"implicit:{policy}" if isinstance(policy, str) else "implicit_dpo")
        self.batch_size = batch_size
        self.use_chat_template = use_chat_template
        self.length_normalize = length_normalize
        self.max_length = max_length
        self.overflow = hf.check_overflow(overflow)
        self.placement = Placement(self.name, device, offload)
        self.policy, self.tokenizer = hf.prepare(
            policy,
            tokenizer,
            "AutoModelForCausalLM",
            gguf_file,
            self.placement.home,
            dtype,
            self.placement.dtype_device,
        )
        self.reference = self._load_reference(reference, reference_gguf_file, dtype)
        self.placement.attach(self.policy, self.reference)
        self.pad_id = self.policy.config.pad_token_id

    def _load_reference(self, reference: Any, gguf_file: str | None, dtype: str) -> Any:
        if reference is None:
            if not hasattr(self.policy, "disable_adapter"):
                raise ValueError(
                    "reference=None needs a peft policy (its adapters are disabled to get the "
                    "reference); pass the reference model (e.g. the SFT model) explicitly"
                )
            return None
        if isinstance(reference, tuple):
            reference = reference[0]
        dev = hf.model_device(self.policy)
        ref, _ = hf.prepare(
            reference, self.tokenizer, "AutoModelForCausalLM", gguf_file, dev, dtype, self.placement.dtype_device
        )
        v_pol = getattr(self.policy.config, "vocab_size", None)
        v_ref = getattr(ref.config, "vocab_size", None)
        if v_pol is not None and v_ref is not None and v_pol != v_ref:
            raise ValueError(
                f"policy vocab_size {v_pol} != reference vocab_size {v_ref}: the implicit reward "
                "needs both models to share one tokenizer"
            )
        return ref

    def _reference_logps(self, rows: list, starts: list) -> tuple[np.ndarray, np.ndarray]:
        if self.reference is None:
            ctx = self.policy.disable_adapter()
            model = self.policy
        else:
            ctx, model = contextlib.nullcontext(), self.reference
        with ctx:
            return response_logps(model, rows, starts, self.pad_id, self.batch_size)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each pair; see the class docstring. Returns float64 of shape (len(responses),)."""
        hf.check_pairs(prompts, responses)
        rows, starts, todo = [], [], []
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            p_ids, r_ids = hf.encode_pair(self.tokenizer, p, r, self.use_chat_template)
            ids = hf.fit_left(p_ids, r_ids, self.max_length, self.overflow)
            if ids is not None:
                rows.append(ids)
                starts.append(len(ids) - len(r_ids))
                todo.append(i)
        out = np.full(len(responses), np.nan)
        if rows:  # weights move outside inference mode: moved parameters stay ordinary tensors
            with self.placement.scoring(), torch.inference_mode():
                pol, counts = response_logps(self.policy, rows, starts, self.pad_id, self.batch_size)
                ref, _ = self._reference_logps(rows, starts)
            diff = pol - ref
            if self.length_normalize:
                diff = np.where(counts > 0, diff / np.maximum(counts, 1), np.nan)
            out[todo] = diff
        return check_scores(out, len(responses), self.name)

    def __repr__(self) -> str:
        return f"ImplicitDPORM(name={self.name!r}, length_normalize={self.length_normalize})"
