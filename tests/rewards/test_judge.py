"""Generative judges (YesNoJudgeRM, PairwiseJudge) on a tiny random Llama built in code."""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from tokenizers import Regex, Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from laser.rewards.judge import (  # noqa: E402
    DEFAULT_PAIRWISE_TEMPLATE,
    DEFAULT_TEMPLATE,
    PairwiseJudge,
    YesNoJudgeRM,
)

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '</s>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
PROMPTS = ["What is 2+3?", "Name a colour.", "Why?", "Add 10 and 32.", "Hi"]
GOOD = ["5", "Blue.", "Because.", "42", "Hello!"]
BAD = ["7", "Seven.", "No idea at all, sorry.", "52", "..."]


@pytest.fixture(scope="module")
def tok():
    """Character-level tokenizer plus whole-word tokens "Yes" and "No" (so they are single tokens)."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    chars = list(string.ascii_letters + string.digits + string.punctuation + " \n")
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + chars)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    t = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    t.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    t.add_tokens(["Yes", "No"])
    t.chat_template = TEMPLATE
    return t


@pytest.fixture(scope="module")
def lm(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tok),
        initializer_range=0.3,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(cfg).eval()


def next_token_probs(tok, lm, message: str) -> torch.Tensor:
    """softmax of the logits after one unpadded chat-templated user message."""
    text = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return torch.softmax(lm(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)


def test_yes_no_matches_manual_probability(tok, lm):
    judge = YesNoJudgeRM((lm, tok), batch_size=2, device="cpu")
    # of the default variants only "Yes" and "No" are single tokens here (" Yes" is space + Yes)
    assert judge.yes_ids == [tok.convert_tokens_to_ids("Yes")]
    assert judge.no_ids == [tok.convert_tokens_to_ids("No")]
    got = judge.score(PROMPTS, GOOD)
    want = []
    for p, r in zip(PROMPTS, GOOD, strict=True):
        probs = next_token_probs(tok, lm, DEFAULT_TEMPLATE.format(prompt=p, response=r))
        py, pn = probs[judge.yes_ids[0]], probs[judge.no_ids[0]]
        want.append(float(py / (py + pn)))
    assert got.dtype == np.float64 and np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.ptp(got) > 1e-3  # the responses really get different probabilities


def test_yes_no_sums_probability_over_token_variants(tok, lm):
    """With yes_tokens ("Yes", "a") P(Yes) is p(Yes) + p(a); "zz" (two tokens) is skipped."""
    judge = YesNoJudgeRM(lm, tok, yes_tokens=("Yes", "a", "zz"), no_tokens=("No",), template="Q {prompt} R {response}")
    a = tok.convert_tokens_to_ids("a")
    assert judge.yes_ids == [tok.convert_tokens_to_ids("Yes"), a]
    probs = next_token_probs(tok, lm, "Q Hi R Yo")
    py = probs[judge.yes_ids[0]] + probs[a]
    np.testing.assert_allclose(judge.score(["Hi"], ["Yo"]), [float(py / (py + probs[judge.no_ids[0]]))], atol=1e-6)


def test_yes_no_batched_equals_one_at_a_time(tok, lm):
    judge = YesNoJudgeRM(lm, tok, batch_size=5)
    single = YesNoJudgeRM(lm, tok, batch_size=1)
    np.testing.assert_allclose(judge.score(PROMPTS, BAD), single.score(PROMPTS, BAD), atol=1e-6)


def test_yes_no_errors(tok, lm):
    with pytest.raises(ValueError, match="none of the yes tokens"):
        YesNoJudgeRM(lm, tok, yes_tokens=("Yeah yeah",))
    with pytest.raises(ValueError, match=r"\{response\}"):
        YesNoJudgeRM(lm, tok, template="Is {prompt} answered?")
    with pytest.raises(ValueError, match="share ids"):
        YesNoJudgeRM(lm, tok, yes_tokens=("Yes",), no_tokens=("Yes",))


def test_pairwise_is_order_symmetric_and_in_unit_interval(tok, lm):
    judge = PairwiseJudge(lm, tok, batch_size=3)
    ab = judge.prefer(PROMPTS, GOOD, BAD)
    ba = judge.prefer(PROMPTS, BAD, GOOD)
    assert np.all((ab >= 0) & (ab <= 1))
    np.testing.assert_allclose(ab + ba, 1.0, atol=1e-6)
    # a response against itself is exactly a coin flip
    np.testing.assert_allclose(judge.prefer(PROMPTS, GOOD, GOOD), 0.5, atol=1e-6)


def test_pairwise_matches_manual_two_order_average(tok, lm):
    """prefer(a, b) = (q(a, b) + 1 - q(b, a)) / 2 with q = P(A) / (P(A) + P(B)) after the message."""
    judge = PairwiseJudge(lm, tok, batch_size=4)
    ida, idb = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
    assert judge.a_ids == [ida] and judge.b_ids == [idb]  # " A" / " B" are two tokens here

    def q(p, first, second):
        probs = next_token_probs(
            tok, lm, DEFAULT_PAIRWISE_TEMPLATE.format(prompt=p, response_a=first, response_b=second)
        )
        return float(probs[ida] / (probs[ida] + probs[idb]))

    want = [0.5 * (q(p, a, b) + 1 - q(p, b, a)) for p, a, b in zip(PROMPTS, GOOD, BAD, strict=True)]
    np.testing.assert_allclose(judge.prefer(PROMPTS, GOOD, BAD), want, atol=1e-6)
    with pytest.raises(ValueError, match="responses_b"):
        judge.prefer(PROMPTS, GOOD, BAD[:2])
