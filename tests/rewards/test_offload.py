"""RM placement: ``device`` and ``offload`` for every model-backed RM (laser/rewards/placement.py).

On this CPU-only machine the compute device and CPU memory are the same device, so the CPU tests
check the protocol (the weights are moved exactly once each way per scoring call, and only while
the forward passes run) and that offloading changes no score; the CUDA test, skipped here, checks
the real move and the score tolerance on a GPU (benchmarks/gpu_check.py checks it too).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification  # noqa: E402

from laser.bench.policy import make_char_tokenizer  # noqa: E402
from laser.rewards.base import RewardModelError  # noqa: E402
from laser.rewards.factory import build_reward_models, check_devices, check_specs  # noqa: E402
from laser.rewards.hf import HFClassifierRM  # noqa: E402
from laser.rewards.implicit import ImplicitDPORM  # noqa: E402
from laser.rewards.judge import YesNoJudgeRM  # noqa: E402
from laser.rewards.placement import Placement, compute_device  # noqa: E402
from laser.routing.pool import RewardPool  # noqa: E402

PROMPTS = ["1+2=", "7*3=", "Name a colour:", "9-4="]
RESPONSES = ["3", "21 is it", "Blue", "5, because 9-4=5"]


def _config(tok, **kw) -> LlamaConfig:
    return LlamaConfig(
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
        **kw,
    )


def _seeded(cls, tok, seed: int, **kw):
    torch.manual_seed(seed)
    return cls(_config(tok, **kw)).eval()


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer("right")


def make_rms(tok, offload: bool, device: str = "cpu") -> dict:
    """One RM of each model-backed type, each on its own copy of fixed random weights."""
    cls = _seeded(LlamaForSequenceClassification, tok, 0, num_labels=1)
    pol, ref, judge = (_seeded(LlamaForCausalLM, tok, s) for s in (1, 2, 3))
    return {
        "hf_classifier": HFClassifierRM(
            (copy.deepcopy(cls), tok), name="cls", batch_size=3, device=device, offload=offload
        ),
        "implicit_dpo": ImplicitDPORM(
            (copy.deepcopy(pol), tok),
            (copy.deepcopy(ref), tok),
            name="dpo",
            batch_size=3,
            device=device,
            offload=offload,
        ),
        "judge": YesNoJudgeRM(
            (copy.deepcopy(judge), tok),
            name="judge",
            yes_tokens=("Y",),
            no_tokens=("N",),
            batch_size=3,
            device=device,
            offload=offload,
        ),
    }


def spy(rm) -> list:
    """Record, in order, every ``.to(...)`` of the RM's modules and every forward pass."""
    events = []
    for m in rm.placement.modules:
        real_to = m.to

        def to(*args, _real=real_to, **kwargs):
            events.append(("to", str(args[0]) if args else str(kwargs.get("device"))))
            return _real(*args, **kwargs)

        m.to = to  # an instance attribute shadows nn.Module.to for this module only
        m.register_forward_pre_hook(lambda mod, args: events.append(("forward", None)))
    return events


@pytest.mark.parametrize("kind", ["hf_classifier", "implicit_dpo", "judge"])
def test_offload_changes_no_score_and_moves_once_each_way(tok, kind):
    resident, offloaded = make_rms(tok, offload=False)[kind], make_rms(tok, offload=True)[kind]
    ev_resident, ev_offloaded = spy(resident), spy(offloaded)
    expected = resident.score(PROMPTS, RESPONSES)
    got = offloaded.score(PROMPTS, RESPONSES)
    np.testing.assert_array_equal(got, expected)  # same weights, same device: bit-equal
    assert np.isfinite(expected).all() and np.ptp(expected) > 0  # real, varied scores
    assert [e for e in ev_resident if e[0] == "to"] == []  # a resident RM never moves
    n_modules = len(offloaded.placement.modules)  # the implicit RM moves policy and reference
    assert n_modules == (2 if kind == "implicit_dpo" else 1)
    kinds = [e[0] for e in ev_offloaded]
    first_fwd, last_fwd = kinds.index("forward"), len(kinds) - 1 - kinds[::-1].index("forward")
    assert ev_offloaded[:first_fwd] == [("to", "cpu")] * n_modules  # to the compute device (cpu here)
    assert ev_offloaded[last_fwd + 1 :] == [("to", "cpu")] * n_modules  # back to CPU memory
    assert "to" not in kinds[first_fwd : last_fwd + 1]  # no move between the forward passes
    assert offloaded.placement.moves == 1
    offloaded.score(PROMPTS[:1], RESPONSES[:1])
    assert offloaded.placement.moves == 2  # one move in per scoring call


def test_moved_weights_stay_ordinary_tensors(tok):
    """The move happens outside inference mode: moved parameters are not inference tensors
    (which could never again take part in a backward pass)."""
    rm = make_rms(tok, offload=True)["hf_classifier"]
    rm.score(PROMPTS, RESPONSES)
    assert not any(p.is_inference() for p in rm.model.parameters())


def failing_to(module, fail_times: float):
    """Make ``module.to`` raise like a CUDA out-of-memory error the first ``fail_times`` calls."""
    real_to, calls = module.to, {"n": 0}

    def to(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= fail_times:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_to(*args, **kwargs)

    module.to = to
    return calls


def test_a_failed_move_is_retried_once(tok):
    rm = make_rms(tok, offload=True)["hf_classifier"]
    expected = make_rms(tok, offload=False)["hf_classifier"].score(PROMPTS, RESPONSES)
    calls = failing_to(rm.model, fail_times=1)
    np.testing.assert_array_equal(rm.score(PROMPTS, RESPONSES), expected)
    # failed move in, release (back to CPU), move in, move back
    assert calls["n"] == 4 and rm.placement.moves == 1


def test_a_move_that_keeps_failing_is_an_rm_failure_the_pool_masks(tok):
    from laser.bandits import make_selector

    good, bad = make_rms(tok, offload=True)["hf_classifier"], make_rms(tok, offload=True)["judge"]
    failing_to(bad.model, fail_times=float("inf"))
    pool = RewardPool([good, bad])
    selector = make_selector("linucb", 2, 3, seed=0)
    with pytest.raises(RewardModelError) as info:
        pool.score(1, PROMPTS, RESPONSES)
    msg = str(info.value)
    assert "'judge'" in msg and "after 2 attempt(s)" in msg and "CUDA out of memory (injected)" in msg
    event = pool.mark_down(1, info.value, selector)
    assert pool.down == {1} and "'judge' failed and is masked" in event
    assert np.isfinite(pool.score(0, PROMPTS, RESPONSES)).all()  # the other RM still scores
    assert pool.responses_scored.tolist() == [len(PROMPTS), len(PROMPTS)]  # the failed call is counted
    assert pool.score_calls.tolist() == [1, 1]


def test_the_loop_masks_an_rm_whose_move_fails_and_goes_on(tok, tmp_path):
    """score_ensemble calls every RM each step: the failing one is masked at step 1, the event is
    logged, and the run finishes on the other RM."""
    import json

    from helpers import make_tiny_policy

    from laser.config import load_config
    from laser.tasks.base import Example
    from laser.training.loop import Trainer

    policy = make_tiny_policy()
    good = make_rms(policy.tokenizer, offload=True)["hf_classifier"]
    bad = make_rms(policy.tokenizer, offload=True)["judge"]
    failing_to(bad.model, fail_times=float("inf"))
    cfg = load_config(
        data={
            "output_dir": str(tmp_path),
            "rewards": [{"name": "cls", "type": "hf_classifier"}, {"name": "judge", "type": "judge"}],
            "selector": {"name": "score_ensemble"},
            "train": {
                "iterations": 1,
                "batch_size": 2,
                "n_samples": 3,
                "max_new_tokens": 4,
                "pairs_per_prompt": 1,
                "feedback": "neg_loss",
            },
            "checkpoint": {"every": 0},
        },
        require_data=False,
    )
    examples = [Example(id=f"p{i}", prompt=p) for i, p in enumerate(PROMPTS)]
    summary = Trainer(cfg, policy, [good, bad], examples, show_progress=False).run()
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert summary["global_step"] == 2 and len(records) == 2
    assert any("'judge' failed and is masked" in e and "CUDA out of memory" in e for e in records[0]["events"])
    # 2 prompts x 3 samples = 6 responses a step; at step 1 cls scores them, judge fails, the loop
    # decides again without judge and cls scores them again: 6 + 6 + 6 (step 2) = 18
    assert summary["responses_scored"][0] == 18


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            {"name": "a", "type": "hf_classifier", "model": "m", "device": "gpu"},
            "rewards[0].device: reward model 'a': 'gpu' is not auto, cpu, cuda or cuda:N",
        ),
        (
            {"name": "a", "type": "hf_classifier", "model": "m", "device": "cuda:x"},
            "rewards[0].device: reward model 'a': 'cuda:x' is not auto, cpu, cuda or cuda:N",
        ),
        (
            {"name": "b", "type": "judge", "model": "m", "offload": "yes"},
            "rewards[0].offload: reward model 'b': must be true or false, got 'yes'",
        ),
        (
            {"name": "c", "type": "demo", "offload": True},
            "rewards[0].offload: reward model 'c' (type demo) takes no offload; only hf_classifier, implicit_dpo, "
            "judge load a model",
        ),
        (
            {"name": "d", "type": "remote", "url": "http://127.0.0.1:1", "device": "cuda"},
            "rewards[0].device: reward model 'd' (type remote) takes no device; it is placed by its server",
        ),
    ],
)
def test_bad_placement_keys_are_refused_by_name(spec, expected):
    problems = check_specs([spec])
    assert any(p.startswith(expected) for p in problems), problems
    assert len(problems) == 1  # not reported a second time as an unknown argument


def test_good_placement_keys_pass():
    specs = [
        {"name": "a", "type": "hf_classifier", "model": "m", "device": "cuda:1", "offload": True},
        {"name": "b", "type": "implicit_dpo", "policy": "p", "reference": "r", "device": "cpu", "offload": False},
        {"name": "c", "type": "judge", "model": "m", "device": "auto"},
    ]
    assert check_specs(specs) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_missing_cuda_device_is_refused_before_any_model_loads():
    specs = [
        {"name": "ok", "type": "hf_classifier", "model": "/does/not/exist", "device": "cpu"},
        {"name": "gpu_rm", "type": "hf_classifier", "model": "/does/not/exist", "device": "cuda:0", "offload": True},
    ]
    assert check_devices(specs) == [
        f"rewards[1].device: reward model 'gpu_rm': 'cuda:0' but CUDA is not available here (torch {torch.__version__})"
    ]
    with pytest.raises(ValueError, match=r"rewards\[1\].device: reward model 'gpu_rm'"):
        build_reward_models(specs)  # the missing folder of rewards[0] is never reached
    with pytest.raises(ValueError, match="reward model 'x': device='cuda' but CUDA is not available"):
        Placement("x", "cuda")


def test_cuda_means_this_process_gpu(monkeypatch):
    """Under a launcher each process computes on ``cuda:$LOCAL_RANK``; ``cuda:N`` is taken as given;
    a launcher that shows each process only its own GPU leaves the current device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert compute_device("auto") == torch.device("cuda", 3)
    assert compute_device("cuda") == torch.device("cuda", 3)
    assert compute_device("cuda:1") == torch.device("cuda", 1)
    assert compute_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # e.g. CUDA_VISIBLE_DEVICES per task
    assert compute_device("cuda") == torch.device("cuda", 0)
    monkeypatch.delenv("LOCAL_RANK")
    assert compute_device("auto") == torch.device("cuda", 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["hf_classifier", "implicit_dpo", "judge"])
def test_offload_to_cuda(tok, kind):
    on_cpu = make_rms(tok, offload=False, device="cpu")[kind].score(PROMPTS, RESPONSES)
    resident = make_rms(tok, offload=False, device="cuda")[kind]
    offloaded = make_rms(tok, offload=True, device="cuda")[kind]
    assert all(next(m.parameters()).device.type == "cpu" for m in offloaded.placement.modules)
    before = torch.cuda.memory_allocated()
    got, expected = offloaded.score(PROMPTS, RESPONSES), resident.score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # float32 on the same GPU
    np.testing.assert_allclose(got, on_cpu, rtol=1e-3, atol=1e-3)  # float32, CPU vs GPU kernels
    assert all(next(m.parameters()).device.type == "cpu" for m in offloaded.placement.modules)
    assert torch.cuda.memory_allocated() <= before  # the weights left the GPU after the call
