"""Generative judges: a chat LLM asked a question about a response, read from its next token.

``YesNoJudgeRM`` is a reward model: score = P(Yes) / (P(Yes) + P(No)) for "is this response
correct and helpful?". ``PairwiseJudge`` gives P(response a is better than response b) for win
rates, asking in both presentation orders to cancel position bias.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from laser import hub as hf
from laser.rewards.base import check_scores
from laser.rewards.placement import Placement

DEFAULT_TEMPLATE = (
    "Here is a question and a proposed response.\n\n"
    "Question: {prompt}\n\n"
    "Response: {response}\n\n"
    "Is the response correct and helpful? Answer with Yes or No only."
)

DEFAULT_PAIRWISE_TEMPLATE = (
    "Here is a question and two responses, A and B.\n\n"
    "Question: {prompt}\n\n"
    "Response A: {response_a}\n\n"
    "Response B: {response_b}\n\n"
    "Which response is more correct and helpful? Answer with A or B only."
)


def resolve_token_ids(tokenizer: Any, variants: Sequence[str], what: str) -> list[int]:
    """Ids of the variants that are single tokens in the vocabulary (deduplicated, in order).

    Raises:
        ValueError: none of the variants is a single token.
    """
    ids: list[int] = []
    for v in variants:
        enc = tokenizer(v, add_special_tokens=False)["input_ids"]
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(enc[0])
    if not ids:
        raise ValueError(f"none of the {what} tokens {list(variants)!r} is a single token in this vocabulary")
    return ids


def choice_probs(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    first_ids: Sequence[int],
    second_ids: Sequence[int],
    pad_id: int,
    batch_size: int,
) -> np.ndarray:
    """P(first) / (P(first) + P(second)) for the token after each text.

    P(first) sums the next-token probabilities of ``first_ids`` (likewise for ``second``); the
    ratio is computed from log-probabilities in float32 as sigmoid(logsumexp(first) -
    logsumexp(second)), so a small total mass on both does not underflow.

    Returns:
        float64 array of shape (len(texts),).
    """
    dev = hf.model_device(model)
    a = torch.tensor(list(first_ids), device=dev)
    b = torch.tensor(list(second_ids), device=dev)
    out = np.empty(len(texts))
    for chunk in hf.batches(len(texts), batch_size):
        rows = [tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in chunk]
        ids, mask = hf.pad_right(rows, pad_id, dev)
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = logits[torch.arange(len(rows), device=dev), mask.sum(1) - 1].float()
        margin = last[:, a].logsumexp(-1) - last[:, b].logsumexp(-1)
        out[list(chunk)] = torch.sigmoid(margin).double().cpu().numpy()
    return out


class _Judge:
    """Shared set-up of the judges: load the model, resolve answer tokens."""

    def __init__(self, model, tokenizer, batch_size, use_chat_template, device, dtype, gguf_file, name, offload):
        self.batch_size = batch_size
        self.use_chat_template = use_chat_template
        self.placement = Placement(name, device, offload)
        self.model, self.tokenizer = hf.prepare(
            model,
            tokenizer,
            "AutoModelForCausalLM",
            gguf_file,
            self.placement.home,
            dtype,
            self.placement.dtype_device,
        )
        self.placement.attach(self.model)
        self.pad_id = self.model.config.pad_token_id

    def render(self, content: str) -> str:
        """The judge's full input text: one user message plus the generation prompt."""
        text = hf.chat_text(self.tokenizer, content, self.use_chat_template)
        if not (self.use_chat_template and hf.has_chat_template(self.tokenizer)):
            bos = self.tokenizer.bos_token
            text = (bos or "") + text
        return text

    def probs(self, contents: list[str], first: list[int], second: list[int]) -> np.ndarray:
        texts = [self.render(c) for c in contents]
        with self.placement.scoring(), torch.inference_mode():
            return choice_probs(self.model, self.tokenizer, texts, first, second, self.pad_id, self.batch_size)


class YesNoJudgeRM(_Judge):
    """A chat LLM as a reward model: the probability that it answers "Yes".

    score(x, y) = P(Yes | m) / (P(Yes | m) + P(No | m)), m = the chat template of one user message
    ``template.format(prompt=x, response=y)`` with the generation prompt; P(Yes) sums the
    next-token probabilities of every variant in ``yes_tokens`` that is a single token of the
    vocabulary (ids resolved once, at construction). Without a chat template (base models) the
    message is used as is, after the BOS token: end the template with a cue such as "Answer:".

    Args:
        model: Hub name, local folder, ``(model, tokenizer)`` pair, or a model object.
        tokenizer: tokenizer object or name/path; defaults to the model's own.
        name: name used in logs.
        template: message text with ``{prompt}`` and ``{response}`` placeholders.
        yes_tokens: spellings of "Yes" (with and without a leading space).
        no_tokens: spellings of "No".
        batch_size: judge calls per forward pass.
        use_chat_template: render with the tokenizer's chat template when it has one.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :mod:`laser.rewards.placement`).
        dtype: ``"float32"``, ``"bfloat16"``, ``"auto"`` (chosen for ``device``).
        gguf_file: a GGUF file inside the ``model`` folder.
        offload: keep the weights in CPU memory and move them to ``device`` for each call.

    Raises:
        ValueError: the template lacks a placeholder, or no yes/no variant is a single token.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        name: str | None = None,
        template: str = DEFAULT_TEMPLATE,
        yes_tokens: Sequence[str] = ("Yes", " Yes", "yes", " yes", "YES"),
        no_tokens: Sequence[str] = ("No", " No", "no", " no", "NO"),
        batch_size: int = 4,
        use_chat_template: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        gguf_file: str | None = None,
        offload: bool = False,
    ):
        for key in ("{prompt}", "{response}"):
            if key not in template:
                raise ValueError(f"judge template lacks the placeholder {key}: {template!r}")
        self.name = name or (f"judge:{model}" if isinstance(model, str) else "yes_no_judge")
        super().__init__(model, tokenizer, batch_size, use_chat_template, device, dtype, gguf_file, self.name, offload)
        self.template = template
        self.yes_ids = resolve_token_ids(self.tokenizer, yes_tokens, "yes")
        self.no_ids = resolve_token_ids(self.tokenizer, no_tokens, "no")
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"yes and no tokens share ids {set(self.yes_ids) & set(self.no_ids)}")

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """P(Yes) normalised over Yes/No for each pair, float64 in [0, 1]."""
        hf.check_pairs(prompts, responses)
        contents = [self.template.format(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)]
        return check_scores(self.probs(contents, self.yes_ids, self.no_ids), len(responses), self.name)

    def __repr__(self) -> str:
        return f"YesNoJudgeRM(name={self.name!r})"


class PairwiseJudge(_Judge):
    """A chat LLM asked which of two responses is better, in both presentation orders.

    With q(u, v) = P(A) / (P(A) + P(B)) for the message ``template.format(prompt=x,
    response_a=u, response_b=v)`` (next-token probabilities summed over the ``a_tokens`` /
    ``b_tokens`` variants), ``prefer`` returns

        P(a better than b) = ( q(a, b) + 1 - q(b, a) ) / 2,

    the mean of "a chosen when shown first" and "a chosen when shown second". A judge that always
    picks the first slot gets 0.5 for every pair, and prefer(a, b) + prefer(b, a) = 1 exactly.

    Args:
        model, tokenizer, batch_size, use_chat_template, device, dtype, gguf_file, offload: as
            for :class:`YesNoJudgeRM`.
        template: message with ``{prompt}``, ``{response_a}`` and ``{response_b}`` placeholders.
        a_tokens: spellings of the answer "A".
        b_tokens: spellings of the answer "B".
        name: name used in logs.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        name: str | None = None,
        template: str = DEFAULT_PAIRWISE_TEMPLATE,
        a_tokens: Sequence[str] = ("A", " A"),
        b_tokens: Sequence[str] = ("B", " B"),
        batch_size: int = 4,
        use_chat_template: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        gguf_file: str | None = None,
        offload: bool = False,
    ):
        for key in ("{prompt}", "{response_a}", "{response_b}"):
            if key not in template:
                raise ValueError(f"pairwise template lacks the placeholder {key}: {template!r}")
        self.name = name or (f"pairwise:{model}" if isinstance(model, str) else "pairwise_judge")
        super().__init__(model, tokenizer, batch_size, use_chat_template, device, dtype, gguf_file, self.name, offload)
        self.template = template
        self.a_ids = resolve_token_ids(self.tokenizer, a_tokens, "A")
        self.b_ids = resolve_token_ids(self.tokenizer, b_tokens, "B")
        if set(self.a_ids) & set(self.b_ids):
            raise ValueError(f"A and B tokens share ids {set(self.a_ids) & set(self.b_ids)}")

    def prefer(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> np.ndarray:
        """P(responses_a[i] is better than responses_b[i]), float64 in [0, 1], shape (n,)."""
        if not len(prompts) == len(responses_a) == len(responses_b):
            raise ValueError(f"{len(prompts)} prompts, {len(responses_a)} responses_a, {len(responses_b)} responses_b")
        fmt = self.template.format
        triples = list(zip(prompts, responses_a, responses_b, strict=True))
        ab = [fmt(prompt=p, response_a=a, response_b=b) for p, a, b in triples]
        ba = [fmt(prompt=p, response_a=b, response_b=a) for p, a, b in triples]
        q = self.probs(ab + ba, self.a_ids, self.b_ids)
        n = len(prompts)
        return 0.5 * (q[:n] + 1.0 - q[n:])

    def __repr__(self) -> str:
        return f"PairwiseJudge(name={self.name!r})"
