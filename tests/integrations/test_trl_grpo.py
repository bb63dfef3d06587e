"""The router inside real TRL trainers (GRPO, RLOO) on a tiny random policy, CPU only: the reward
contract, one RM per round, logged metrics, evaluation, resume, and bad data refused before
training. Small runs (a few steps of 8-16 completions) keep the module to seconds after imports."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer  # noqa: E402

from laser.integrations.trl import STATE_DIR, RMRouter  # noqa: E402
from laser.routing.checkpoint import find_latest, verify  # noqa: E402


class CountRM:
    """Scores a response by its count of digits (plus its length / 100); records each call."""

    def __init__(self, name):
        self.name, self.calls = name, []

    def score(self, prompts, responses):
        self.calls.append(len(responses))
        return np.array([sum(c.isdigit() for c in r) + len(r) / 100 for r in responses])


def rms():
    return [CountRM("a"), CountRM("b"), CountRM("c")]


def dataset(n=8, answer=True):
    rows = [{"prompt": f"{i}+{i % 3}=", "task": "gsm8k", "domain": "even" if i % 2 == 0 else "odd"} for i in range(n)]
    if answer:
        for i, row in enumerate(rows):
            row["answer"] = str(i + i % 3)
    return Dataset.from_list(rows)


COMMON = dict(
    use_cpu=True,
    bf16=False,
    gradient_checkpointing=False,
    report_to=[],
    disable_tqdm=True,
    max_completion_length=8,
    logging_steps=1,
    seed=0,
    beta=0.0,
    temperature=1.0,
)


def trainer(model_dir, router, out, cls=GRPOTrainer, cfg_cls=GRPOConfig, data=None, **over):
    settings = dict(
        COMMON, output_dir=str(out), per_device_train_batch_size=8, num_generations=4, max_steps=4, save_strategy="no"
    )
    settings.update(over)
    eval_data = settings.pop("eval_dataset", None)
    return cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=cfg_cls(**settings),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        reward_funcs=router.reward_funcs,
        train_dataset=data if data is not None else dataset(),
        eval_dataset=eval_data,
        callbacks=[router],
    )


@pytest.mark.parametrize("ga, iterations, rounds", [(2, 1, 4), (1, 2, 2)])
def test_grpo_one_rm_per_round(tiny_model_dir, tmp_path, ga, iterations, rounds):
    """4 optimizer steps; a round every steps_per_generation (= gradient_accumulation_steps) x
    num_iterations micro-steps, of per_device_train_batch_size x steps_per_generation completions:
    GA 2 -> 8 micro-steps / 2 = 4 rounds of 16; num_iterations 2 -> 4 / 2 = 2 rounds of 8. Each
    round calls exactly one RM, on all of its rows."""
    models = rms()
    router = RMRouter(models, context="auto", tag_column="domain")  # auto: the policy's hidden states
    tr = trainer(tiny_model_dir, router, tmp_path, gradient_accumulation_steps=ga, num_iterations=iterations)
    tr.train()
    assert type(router.embedder).__name__ == "PolicyEmbedder" and router.embedder.dim == 32
    assert len(router.history_) == rounds == router.selector.counts_.sum() + router.skipped_
    rows = 8 * ga
    assert sorted(c for m in models for c in m.calls) == [rows] * rounds  # one call per round, whole round
    for rec in router.history_:
        assert len(set(rec["arms"])) == 1 and set(rec["tags"]) <= {"even", "odd"}
    logged = {k for entry in tr.state.log_history for k in entry}
    assert {"laser/arm", "laser/share/a", "laser/score/b", "rewards/c/mean"} <= logged
    assert router.responses_scored_.sum() == rows * rounds


def test_rloo_takes_the_same_contract(tiny_model_dir, tmp_path):
    models = rms()
    router = RMRouter(models, context="hashed", context_dim=16, feedback="majority_pair_accuracy")
    trainer(tiny_model_dir, router, tmp_path, cls=RLOOTrainer, cfg_cls=RLOOConfig, max_steps=3).train()
    assert len(router.history_) == 3 and sorted(c for m in models for c in m.calls) == [8, 8, 8]


class Snapshot(TrainerCallback):
    """Records the selector's state after each step and at each evaluation."""

    def __init__(self, router):
        self.router, self.pairs = router, []

    def on_step_end(self, args, state, control, **kw):
        self.last = self.router.selector.state_dict()

    def on_evaluate(self, args, state, control, **kw):
        now = self.router.selector.state_dict()
        self.pairs.append(all(np.array_equal(self.last[k], now[k]) for k in now))


def test_evaluation_rounds_leave_the_bandit_alone(tiny_model_dir, tmp_path):
    router = RMRouter(rms(), context="hashed", context_dim=16)
    snap = Snapshot(router)
    tr = trainer(
        tiny_model_dir,
        router,
        tmp_path,
        eval_dataset=dataset(4),
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=8,
    )
    tr.add_callback(snap)
    tr.train()
    # 2 evaluations (steps 2 and 4) x 16 rows (4 prompts x 4) in batches of 8 = 4 evaluation rounds
    assert router.eval_rounds_ == 4 and snap.pairs == [True, True]
    # a round without a pair: learned as the lowest reward (tied_) or, identical completions, skipped (skipped_)
    assert len(router.history_) == 4 and len(router.normalizer.history_) == 4 - router.skipped_ - router.tied_
    assert any("eval_laser/share/a" in entry for entry in tr.state.log_history)


def test_resumed_run_makes_the_same_decisions(tiny_model_dir, tmp_path):
    """6 rounds (a round per step) with a checkpoint every 2 steps, Exp3 (its draws use the owned RNG)
    and the label-free feedback; fresh trainers and routers resumed from checkpoint-2 (in the same
    output_dir, and from another folder through resume_from) repeat rounds 2-5 exactly: same arms,
    raw feedback, rewards and bandit state."""

    def router():
        return RMRouter(rms(), selector="exp3", context="hashed", context_dim=16, feedback="majority_pair_accuracy")

    full = router()
    trainer(tiny_model_dir, full, tmp_path, max_steps=6, save_strategy="steps", save_steps=2).train()
    # the router's state goes through the loop's atomic writer: a manifest (sha256) that verifies
    folder, skipped = find_latest(tmp_path / "checkpoint-2" / STATE_DIR)
    assert folder.name == "ckpt-00000002" and not skipped and verify(folder) is None
    assert len({r["arms"][0] for r in full.history_}) > 1  # the decisions are not all the same arm
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "checkpoint-2", saved)
    for out, path in ((tmp_path, tmp_path / "checkpoint-2"), (tmp_path / "elsewhere", saved)):
        resumed = router()
        if out != tmp_path:
            resumed.resume_from(str(path))
        trainer(tiny_model_dir, resumed, out, max_steps=6, save_strategy="steps", save_steps=2).train(
            resume_from_checkpoint=str(path)
        )
        assert resumed.history_ == full.history_ and len(full.history_) == 6
        a, b = full.selector.state_dict(), resumed.selector.state_dict()
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_data_and_settings_refused_before_training(tiny_model_dir, tmp_path):
    models = rms()
    router = RMRouter(models, context="hashed", context_dim=16)
    tr = trainer(tiny_model_dir, router, tmp_path, data=dataset(answer=False))
    with pytest.raises(ValueError, match=r"no column\(s\) \['answer'\]"):
        tr.train()
    assert tr.state.global_step == 0 and not any(m.calls for m in models)
    router = RMRouter(rms(), context="hashed", context_dim=16)
    tr = trainer(tiny_model_dir, router, tmp_path, steps_per_generation=4, save_strategy="steps", save_steps=3)
    with pytest.raises(ValueError, match="save_steps=3 x gradient_accumulation_steps=1 .*num_iterations=4"):
        tr.train()
