"""The embedded tiny policy: character tokenizer, SFT, save/load, cache, generation, accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from laser.bench import policy as tiny
from laser.bench.policy import (
    PRESETS,
    build_tiny_policy,
    evaluate_accuracy,
    generate,
    make_char_tokenizer,
    make_tiny_model,
    train_sft,
)
from laser.bench.tasks import (
    DOMAINS,
    SEP,
    make_benchmark,
    worked_response,
    wrong_response,
)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


@pytest.fixture(scope="module")
def examples():
    return make_benchmark(10, seed=0, split="train")


def _small_model(tok, seed=0):
    return make_tiny_model(tok, hidden=32, layers=1, heads=2, seed=seed)


def test_tokenizer_is_one_token_per_character_after_bos(tok, examples):
    for e in examples:
        text = e.prompt + worked_response(e.prompt)
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1
        assert tok.convert_ids_to_tokens(ids[1:]) == list(text)
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok("é")["input_ids"] == [tok.bos_token_id, tok.unk_token_id]
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4


def test_tokenizer_save_load_round_trip(tok, examples, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path, padding_side="left")
    texts = [e.prompt for e in examples]
    assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
    for name in ("pad_token", "bos_token", "eos_token", "unk_token"):
        assert getattr(loaded, name) == getattr(tok, name)
    batch = loaded(["ab", "abcd"], padding=True)
    assert batch["input_ids"][0][:2] == [tok.pad_token_id] * 2  # left padding
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1]


def test_sft_labels_cover_response_and_eos_only(tok, examples):
    _ids, mask, labels = tiny._sft_tensors(tok, examples, None)
    for row, e in enumerate(examples):
        prompt_len = len(e.prompt) + 1  # <bos> + one token per character
        response = worked_response(e.prompt)
        kept = labels[row][labels[row] != -100].tolist()
        assert kept == tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert (labels[row, :prompt_len] == -100).all()
        assert int(mask[row].sum()) == prompt_len + len(response) + 1


def _response_loss(model, tok, examples) -> float:
    """Mean cross-entropy over response tokens, computed from the logits independently of HF's
    internal loss: logits at position t predict token t + 1."""
    ids, mask, labels = tiny._sft_tensors(tok, examples, None)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    targets = labels[:, 1:]
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    keep = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(-(picked * keep).sum() / keep.sum())


def test_a_few_sft_steps_lower_the_response_loss(tok, examples):
    model = _small_model(tok)
    before = _response_loss(model, tok, examples)
    stats = train_sft(model, tok, examples, steps=30, lr=3e-3, batch_size=16, seed=0)
    after = _response_loss(model, tok, examples)
    assert stats["steps"] == 30 and len(stats["losses"]) == 30
    assert after < before - 1.0, (before, after)  # ~4.6 (uniform over 100 tokens) falls fast
    assert stats["loss_last"] < stats["loss_first"]


def test_sft_is_deterministic_per_seed(tok, examples):
    runs = []
    for _ in range(2):
        model = _small_model(tok, seed=3)
        runs.append(train_sft(model, tok, examples, steps=4, batch_size=8, seed=5)["losses"])
    assert runs[0] == runs[1]


def test_save_load_folder_gives_identical_logits(tok, examples, tmp_path):
    model = _small_model(tok)
    train_sft(model, tok, examples, steps=3, batch_size=8, seed=0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    enc = loaded_tok([e.prompt for e in examples], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, loaded(**enc).logits)


def test_build_caches_and_a_hit_skips_training(tmp_path, monkeypatch):
    folder = build_tiny_policy(tmp_path, seed=0, target="smoke")
    info = json.loads((Path(folder) / "laser_sft.json").read_text())
    assert info["settings"]["steps"] == PRESETS["smoke"]["steps"]
    assert set(info["test_accuracy_greedy"]) == {*DOMAINS, "average"}

    def boom(*args, **kwargs):
        raise AssertionError("train_sft called on a cache hit")

    monkeypatch.setattr(tiny, "train_sft", boom)
    assert build_tiny_policy(tmp_path, seed=0, target="smoke") == folder
    with pytest.raises(AssertionError, match="cache hit"):  # another setting is another key
        build_tiny_policy(tmp_path, seed=1, target="smoke")
    assert [p.name for p in tmp_path.iterdir()] == [Path(folder).name]  # no temp folder left
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == PRESETS["smoke"]["layers"]


def test_the_shipped_sft_start_is_the_recipes_and_a_build_returns_it_without_training(tmp_path, monkeypatch):
    """The package ships the demo's start (v2, seed 0) under its cache key. The key hashes the
    recipe, the preset and the torch version, so a change to any of them must re-ship the folder
    (this test fails until then); on torch 2.13 a build returns the shipped folder untrained, and
    ``shipped=False`` trains instead."""
    shipped = sorted(tiny.SHIPPED_DIR.glob("tiny-policy-*"))
    assert [p.name for p in shipped] == ["tiny-policy-15fecb9b2a6e3df1"]
    info = json.loads((shipped[0] / "laser_sft.json").read_text())
    settings = info["settings"]
    assert settings == {**tiny._settings(0, "v2", {}), "torch": "2.13.0"}, "recipe or preset changed: re-ship"
    key = tiny.hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    assert shipped[0].name == f"tiny-policy-{key}"
    model = transformers.AutoModelForCausalLM.from_pretrained(shipped[0])
    assert model.config.hidden_size == PRESETS["v2"]["hidden"]

    def boom(*args, **kwargs):
        raise AssertionError("train_sft called")

    monkeypatch.setattr(tiny, "train_sft", boom)
    if torch.__version__.split("+")[0] != "2.13.0":
        assert tiny.shipped_policy(0, "v2") is None  # another torch: another key, trained as before
        return
    assert build_tiny_policy(tmp_path, seed=0, target="v2") == str(shipped[0])
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing cached
    assert tiny.shipped_policy(1, "v2") is None and tiny.shipped_policy(0, "v2", steps=10) is None
    with pytest.raises(AssertionError, match="train_sft called"):
        build_tiny_policy(tmp_path, seed=0, target="v2", shipped=False)


@pytest.mark.slow
def test_training_the_shipped_sft_start_again_gives_the_same_bytes(tmp_path):
    """About 2 minutes: the recipe, run again here (one torch thread, as the demo), writes a
    model.safetensors byte-equal to the shipped one (run on the CPU that trained it; another
    instruction set may round differently, which is why the start ships)."""
    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip("the shipped start is keyed to torch 2.13")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = Path(build_tiny_policy(tmp_path, seed=0, target="v2", shipped=False))
    finally:
        torch.set_num_threads(threads)
    shipped = Path(tiny.shipped_policy(0, "v2"))
    assert folder.parent == tmp_path and folder.name == shipped.name
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (folder / name).read_bytes() == (shipped / name).read_bytes(), name


def test_build_rejects_unknown_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown target"):
        build_tiny_policy(tmp_path, target="huge")
    with pytest.raises(ValueError, match="widht"):
        build_tiny_policy(tmp_path, target="smoke", widht=3)


def test_batched_left_padded_generation_matches_one_by_one(tok, examples):
    model = _small_model(tok)
    train_sft(model, tok, examples, steps=20, batch_size=16, seed=0)
    prompts = [examples[0].prompt, examples[-1].prompt, "1+2*3=?" + SEP]
    batched = generate(model, tok, prompts, max_new_tokens=12)
    single = [generate(model, tok, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"  # restored after generation


def test_sampling_is_seeded_and_prompt_major(tok, examples):
    model = _small_model(tok)
    prompts = [e.prompt for e in examples[:3]]
    a = generate(model, tok, prompts, 8, greedy=False, num_return_sequences=4, seed=1)
    b = generate(model, tok, prompts, 8, greedy=False, num_return_sequences=4, seed=1)
    c = generate(model, tok, prompts, 8, greedy=False, num_return_sequences=4, seed=2)
    assert len(a) == 12 and a == b and a != c


def test_evaluate_accuracy_scores_with_the_shared_extractor(tok, monkeypatch):
    test = make_benchmark(5, seed=0, split="test")
    by_prompt = {e.prompt: e for e in test}
    rng = np.random.default_rng(0)

    def fake_generate(model, tokenizer, prompts, *args, **kwargs):
        # right answers on even-numbered examples of each domain, wrong on odd ones
        return [
            worked_response(p) if int(by_prompt[p].id.rsplit("-", 1)[1]) % 2 == 0 else wrong_response(by_prompt[p], rng)
            for p in prompts
        ]

    monkeypatch.setattr(tiny, "generate", fake_generate)
    acc = evaluate_accuracy(None, tok, test)
    assert acc == {**{d: pytest.approx(3 / 5) for d in DOMAINS}, "average": pytest.approx(0.6)}


# ---------------------------------------------------------------- v2 (issue 13: a benchmark with power)
def test_v1_presets_are_unchanged():
    """The v1 demo's start must stay bit-identical: same settings, hence the same cache key."""
    assert PRESETS["moderate"] == {
        "hidden": 64,
        "layers": 2,
        "heads": 4,
        "n_train_per_domain": 1000,
        "steps": 600,
        "lr": 3e-3,
        "batch_size": 32,
        "n_eval_per_domain": 100,
    }
    assert tiny.sft_targets(make_benchmark(3, seed=0), "v1", 0.0, seed=0) is None  # train_sft's own targets


def test_v2_sft_targets_mix_the_two_styles_by_a_seeded_draw():
    examples = make_benchmark(200, seed=0, split="train", version="v2")
    worked = [worked_response(e.prompt, style="worked") for e in examples]
    first = [worked_response(e.prompt, style="answer_first") for e in examples]
    assert tiny.sft_targets(examples, "v2", 0.0) == worked
    assert tiny.sft_targets(examples, "v2", 1.0) == first
    mixed = tiny.sft_targets(examples, "v2", 0.6, seed=3)
    assert mixed == tiny.sft_targets(examples, "v2", 0.6, seed=3) != tiny.sft_targets(examples, "v2", 0.6, seed=4)
    assert all(m in (w, f) for m, w, f in zip(mixed, worked, first, strict=True))
    share = np.mean([m == f for m, f in zip(mixed, first, strict=True)])
    assert 0.55 < share < 0.65  # 800 Bernoulli(0.6) draws: sd 0.017
    with pytest.raises(ValueError, match="benchmark version"):
        tiny.sft_targets(examples, "v7", 0.5)
    with pytest.raises(ValueError, match="answer_first"):
        tiny.sft_targets(examples, "v2", 1.5)


def test_v2_build_trains_on_v2_items_and_targets(tmp_path, monkeypatch):
    seen = {}
    real = tiny.train_sft

    def spy(model, tokenizer, examples, *args, responses=None, **kwargs):
        seen["examples"], seen["responses"] = examples, responses
        return real(model, tokenizer, examples, *args, responses=responses, **kwargs)

    monkeypatch.setattr(tiny, "train_sft", spy)
    folder = build_tiny_policy(tmp_path, seed=0, target="v2_smoke")
    n = PRESETS["v2_smoke"]["n_train_per_domain"]
    assert seen["examples"] == make_benchmark(n, seed=0, split="train", version="v2")
    assert seen["responses"] == tiny.sft_targets(seen["examples"], "v2", PRESETS["v2_smoke"]["answer_first"], 0)
    info = json.loads((Path(folder) / "laser_sft.json").read_text())
    assert info["settings"]["benchmark"] == "v2"
