"""The policy wrapper: response log-probs, context, sampling, against plain computations."""

import numpy as np
import torch
from helpers import make_tiny_policy


def plain_logp(model, prompt, response):
    """Unbatched, unpadded: sum_t log p(r_t | prompt, r_<t) read off one forward pass."""
    logits = model(input_ids=torch.tensor([prompt + response])).logits[0].log_softmax(-1)
    return sum(logits[len(prompt) - 1 + j, tok].item() for j, tok in enumerate(response))


def test_sequence_logps_equal_unbatched_computation_and_skip_prompt_tokens():
    pol = make_tiny_policy(hidden=32, layers=2)
    prompts = [pol.encode_prompts(["12+3="])[0], pol.encode_prompts(["7="])[0], pol.encode_prompts(["abc"])[0]]
    responses = [[5, 6, 7, 8], [9, 10], [11]]
    with torch.no_grad():
        logps, lengths = pol.sequence_logps(prompts, responses)
    expected = [plain_logp(pol.model, p, r) for p, r in zip(prompts, responses, strict=True)]
    assert np.allclose(logps.numpy(), expected, atol=1e-4)
    assert lengths.tolist() == [4.0, 2.0, 1.0]


def test_context_is_last_token_state_and_ignores_padding():
    pol = make_tiny_policy(hidden=32, layers=2)
    batch = pol.context(["1+1=", "a much longer prompt"])
    alone = pol.context(["1+1="])
    assert batch.shape == (2, 32) and batch.dtype == np.float64
    assert np.allclose(batch[0], alone[0], atol=1e-5)  # left padding does not move the embedding
    ids = torch.tensor([pol.encode_prompts(["1+1="])[0]])
    last = pol.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1].detach().numpy()
    assert np.allclose(alone[0], last, atol=1e-5)


def test_sampling_is_seeded_and_keeps_generated_ids():
    pol = make_tiny_policy()
    a = pol.sample(["1+2=", "3="], n=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=5)
    b = pol.sample(["1+2=", "3="], n=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=5)
    assert a.texts == b.texts and a.response_ids == b.response_ids
    assert a.prompt_index == [0, 0, 0, 1, 1, 1] and len(a.texts) == 6
    for ids, text in zip(a.response_ids, a.texts, strict=True):
        assert 1 <= len(ids) <= 6
        assert pol.eos_id not in ids[:-1]  # cut after the first EOS
        assert pol.tokenizer.decode(ids, skip_special_tokens=True) == text
