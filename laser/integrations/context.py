"""Bandit contexts for the TRL router: what a prompt looks like to the selector.

Three embedders share one method, ``embed(texts) -> float64 (n, dim)``:

* :class:`PolicyEmbedder`: the policy's last-token hidden state of each prompt (the paper's
  context), read from the model the trainer trains;
* :class:`HashedNgramEmbedder`: a signed hashed bag of word and character n-grams, no model and
  no download, stable across processes and runs;
* ``laser.policy.encoder.SentenceEncoder``: a sentence encoder (all-MiniLM-L6-v2 by default).

TRL hands reward functions either plain strings or chat messages; :func:`prompt_text` and
:func:`completion_text` turn both into the plain text the embedders and reward models take.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

import numpy as np

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def _content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a content-block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def prompt_text(prompt: Any) -> str:
    """The text of one TRL prompt.

    A string is returned as is; a conversation (list of ``{"role", "content"}`` messages) gives the
    content of its last ``user`` message, the question the completion answers (system prompts and
    earlier turns are left out, as single-turn reward models expect).

    Raises:
        TypeError: neither a string nor a list of messages.
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        users = [m for m in prompt if m.get("role") == "user"]
        return _content_text((users or prompt)[-1].get("content")) if prompt else ""
    raise TypeError(f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or the joined content of its assistant messages.

    Raises:
        TypeError: neither a string nor a list of messages.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(m, dict) for m in completion):
        parts = [_content_text(m.get("content")) for m in completion if m.get("role", "assistant") == "assistant"]
        return "\n".join(p for p in parts if p)
    raise TypeError(f"completion must be a string or a list of chat messages, got {type(completion).__name__}")


class HashedNgramEmbedder:
    """A cheap, model-free context: signed feature hashing of n-grams, L2-normalised.

    For a text with features F (lower-cased word n-grams for n in ``word_ngrams``, character
    n-grams for n in ``char_ngrams``), with h(f) = blake2b(f) mod dim and s(f) = +-1 from another
    bit of the same digest:

        x[j] = sum over f in F with h(f) = j of s(f),     embed = x / ||x||   (0 for an empty text)

    The hash is blake2b, not Python's salted ``hash``, so every process and every run maps a
    prompt to the same vector. The signs make collisions cancel on average instead of piling up.

    Args:
        dim: output dimension (the selector's context size).
        word_ngrams: word n-gram orders.
        char_ngrams: character n-gram orders.
    """

    def __init__(self, dim: int = 256, word_ngrams: Sequence[int] = (1, 2), char_ngrams: Sequence[int] = (3,)) -> None:
        if int(dim) != dim or dim < 2:
            raise ValueError(f"HashedNgramEmbedder: dim must be an integer >= 2, got {dim!r}")
        orders = [*word_ngrams, *char_ngrams]
        if not orders or any(int(n) != n or n < 1 for n in orders):
            raise ValueError(
                f"HashedNgramEmbedder: n-gram orders must be integers >= 1, got "
                f"word_ngrams={word_ngrams!r}, char_ngrams={char_ngrams!r}"
            )
        self.dim = int(dim)
        self.word_ngrams, self.char_ngrams = tuple(word_ngrams), tuple(char_ngrams)

    def features(self, text: str) -> list[str]:
        """The n-gram features of one text (prefixed by kind and order, so they never collide)."""
        words = _WORD_RE.findall(text.lower())
        feats = [f"w{n}:" + " ".join(words[i : i + n]) for n in self.word_ngrams for i in range(len(words) - n + 1)]
        feats += [f"c{n}:" + text[i : i + n] for n in self.char_ngrams for i in range(len(text) - n + 1)]
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings: float64 ``(len(texts), dim)``, each row of norm 1 (or all zero)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not one string")
        out = np.zeros((len(texts), self.dim))
        for row, text in enumerate(texts):
            for f in self.features(text):
                digest = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
                out[row, (digest >> 1) % self.dim] += 1.0 if digest & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out

    def __repr__(self) -> str:
        return f"HashedNgramEmbedder(dim={self.dim}, word_ngrams={self.word_ngrams}, char_ngrams={self.char_ngrams})"


class PolicyEmbedder:
    """The policy's own view of a prompt: its last-token hidden state (the LASeR paper's context).

    embed(texts)[i] = h_L(last non-pad token of texts[i]), the final layer's hidden state, in
    float64. The model runs in eval mode under ``torch.no_grad`` (so no dropout and no draw from
    the global RNG), and its train/eval mode is restored afterwards. Every process must call
    ``embed`` together when the model is sharded (DeepSpeed ZeRO-3, FSDP), which the router does.

    Args:
        model: the policy (a transformers causal LM, possibly PEFT-wrapped).
        tokenizer: its tokenizer (the trainer's ``processing_class``).
        max_length: prompts are truncated to this many tokens.
        batch_size: prompts per forward pass.
    """

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 16) -> None:
        tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        if tok is None or not callable(tok):
            raise ValueError("PolicyEmbedder needs the trainer's tokenizer (processing_class)")
        if getattr(tok, "pad_token", None) is None:  # TRL's trainers set one; a bare tokenizer may not
            raise ValueError("PolicyEmbedder: the tokenizer has no pad token; set tokenizer.pad_token")
        self.model, self.tokenizer = model, tok
        self.max_length, self.batch_size = int(max_length), int(batch_size)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.dim = int(config.hidden_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings: float64 ``(len(texts), hidden_size)``."""
        import torch

        out = np.empty((len(texts), self.dim))
        was_training = self.model.training
        device = next(self.model.parameters()).device
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(texts), self.batch_size):
                    batch = list(texts[start : start + self.batch_size])
                    enc = self.tokenizer(
                        batch, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
                    )
                    enc = {k: v.to(device) for k, v in enc.items()}
                    hidden = self.model(**enc, output_hidden_states=True).hidden_states[-1]
                    mask = enc["attention_mask"]
                    positions = torch.arange(mask.shape[1], device=device)
                    last = (mask * positions).argmax(dim=1)  # last real token, left or right padding
                    rows = hidden[torch.arange(len(batch), device=device), last]
                    out[start : start + len(batch)] = rows.double().cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def __repr__(self) -> str:
        return f"PolicyEmbedder(dim={self.dim}, max_length={self.max_length})"
