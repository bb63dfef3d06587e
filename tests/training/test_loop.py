"""End-to-end runs of the training loop on a tiny policy built in code (seconds each)."""

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_policy

from laser.config import load_config
from laser.rewards.base import CallableRM, RewardModelError
from laser.rewards.rules import LengthRM, RegexRM
from laser.routing.pool import AllRewardModelsDown
from laser.tasks.base import Example
from laser.training.loop import NonFiniteError, Trainer

EXAMPLES = [Example(id=f"p{i}", prompt=f"{i}+{i}=") for i in range(8)]


def make_cfg(out, selector="linucb", iterations=2, batch_size=4, **train):
    specs = [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}]
    tr = {
        "iterations": iterations,
        "batch_size": batch_size,
        "n_samples": 6,
        "max_new_tokens": 10,
        "lr": 1e-2,
        "pairs_per_prompt": 3,
        **train,
    }
    sel = {"name": selector, **({"arm": "ones"} if selector == "fixed" else {})}
    return load_config(
        data={"output_dir": str(out), "seed": 3, "rewards": specs, "selector": sel, "train": tr}, require_data=False
    )


def rms():
    return [RegexRM("ones", "1"), LengthRM("long")]


def read_log(out):
    return [json.loads(line) for line in open(out / "log.jsonl")]


def test_loss_goes_down_and_records_are_complete(tmp_path):
    """With one fixed RM (count of '1'), 10 iterations on 8 prompts: the RM's mean score rises
    and the training loss falls (the policy learns what the RM prefers)."""
    cfg = make_cfg(tmp_path, selector="fixed", iterations=10, batch_size=8, n_samples=8, max_new_tokens=12)
    summary = Trainer(cfg, make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    log = read_log(tmp_path)
    assert summary["global_step"] == len(log) == 10
    keys = {
        "iteration",
        "step",
        "arm",
        "arm_name",
        "ucb",
        "reward",
        "raw_reward",
        "loss",
        "dpo",
        "nll",
        "n_pairs",
        "responses_scored",
        "score_calls",
        "time",
        "prompt_ids",
        "prompt_arms",
    }
    assert keys <= set(log[0])
    assert [r["iteration"] for r in log] == list(range(10))
    assert all(r["arm_name"] == "ones" for r in log)
    # the first step of every iteration has policy == reference, so DPO is exactly log 2
    assert all(r["dpo"] == pytest.approx(np.log(2), abs=1e-6) for r in log)
    assert np.mean([r["loss"] for r in log[-3:]]) < log[0]["loss"] - 0.3
    assert np.mean([r["score_mean"] for r in log[-3:]]) > 3 * log[0]["score_mean"]
    assert log[-1]["responses_scored"] == [10 * 8 * 8, 0]  # one call per response scored, only the fixed RM


def test_score_ensemble_costs_k_times_the_calls(tmp_path):
    a = Trainer(make_cfg(tmp_path / "a", "linucb"), make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    b = Trainer(
        make_cfg(tmp_path / "b", "score_ensemble"), make_tiny_policy(), rms(), EXAMPLES, show_progress=False
    ).run()
    assert sum(b["responses_scored"]) == 2 * sum(a["responses_scored"]) == 2 * (2 * 8 * 6)


def test_linucb_logs_decision_time_ucb_and_rewards_in_unit_interval(tmp_path):
    Trainer(make_cfg(tmp_path), make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    log = read_log(tmp_path)
    for r in log:
        assert len(r["ucb"]) == 2 and r["arm"] in (0, 1)
        assert all(0.0 <= x <= 1.0 for x in r["reward"])
    # at the first decision every arm has A = I, b = 0: equal UCBs (random tie-break decides)
    assert log[0]["ucb"][0] == pytest.approx(log[0]["ucb"][1])


class Crash(RuntimeError):
    pass


class CrashingTrainer(Trainer):
    crash_at = 0

    def train_step(self, batch):
        record = super().train_step(batch)  # the update has happened in memory, not checkpointed
        if self.global_step + 1 == self.crash_at:
            raise Crash(f"injected at step {self.crash_at}")
        return record


@pytest.mark.parametrize("crash_at", [1, 3])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, crash_at):
    ref_out, out = tmp_path / "ref", tmp_path / "crash"
    ref = Trainer(make_cfg(ref_out), make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    ref.run()
    crashing = CrashingTrainer(make_cfg(out), make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    crashing.crash_at = crash_at
    with pytest.raises(Crash):
        crashing.run()
    resumed = Trainer(make_cfg(out), make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    resumed.run()
    for name, p in ref.params.items():
        assert torch.equal(p, resumed.params[name]), name
    assert [r["arm"] for r in read_log(out)] == [r["arm"] for r in read_log(ref_out)]
    assert [r["loss"] for r in read_log(out)] == [r["loss"] for r in read_log(ref_out)]
    assert resumed.selector.counts_.sum() == resumed.global_step == 4
    a, b = ref.selector.state_dict(), resumed.selector.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_checkpointing_every_step_or_never_gives_identical_weights(tmp_path):
    a = Trainer(make_cfg(tmp_path / "a"), make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    a.run()
    cfg = make_cfg(tmp_path / "b")
    cfg.checkpoint.every = 0
    b = Trainer(cfg, make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    b.run()
    assert all(torch.equal(p, b.params[n]) for n, p in a.params.items())


def test_failing_rm_is_masked_and_run_continues(tmp_path):
    def broken(prompts, responses):
        raise RewardModelError("endpoint down")

    cfg = make_cfg(tmp_path, selector="round_robin")
    pool = [CallableRM(broken, name="ones", batched=True), LengthRM("long")]
    Trainer(cfg, make_tiny_policy(), pool, EXAMPLES, show_progress=False).run()
    log = read_log(tmp_path)
    assert all(r["arm_name"] == "long" for r in log)
    assert any("failed and is masked" in e for e in log[0]["events"])


def test_all_rms_down_names_each(tmp_path):
    def broken(prompts, responses):
        raise RewardModelError("boom")

    pool = [CallableRM(broken, name="ones", batched=True), CallableRM(broken, name="long", batched=True)]
    with pytest.raises(AllRewardModelsDown, match="ones.*boom.*long.*boom"):
        Trainer(make_cfg(tmp_path), make_tiny_policy(), pool, EXAMPLES, show_progress=False).run()


def test_nonfinite_loss_stops_with_position_and_keeps_checkpoint(tmp_path, monkeypatch):
    tr = Trainer(make_cfg(tmp_path, selector="fixed"), make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    real = tr.update.loss_terms
    calls = {"n": 0}

    def poisoned(samples, flat, grad, ref=None):
        terms = real(samples, flat, grad, ref)
        calls["n"] += 1
        if tr.global_step == 2 and grad:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(tr.update, "loss_terms", poisoned)
    with pytest.raises(NonFiniteError, match=r"non-finite loss .* iteration 1, step 0 .*arm ones"):
        tr.run()
    assert (tmp_path / "checkpoints" / "ckpt-00000002").is_dir()


def test_rm_added_mid_run_is_only_picked_after_it_joins(tmp_path):
    cfg = make_cfg(tmp_path, selector="round_robin", iterations=3)
    cfg.rewards[1]["add_at_step"] = 4
    Trainer(cfg, make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    log = read_log(tmp_path)
    assert [r["arm_name"] for r in log[:3]] == ["ones"] * 3
    assert "long" in [r["arm_name"] for r in log[3:]]
    assert any("joins at step 4" in e for e in log[3]["events"])


def test_noise_sigma_wraps_any_rm_reproducibly():
    from laser.rewards.factory import build_reward_models

    (noisy,) = build_reward_models([{"name": "long", "type": "length", "noise_sigma": 0.3, "noise_seed": 1}])
    prompts, responses = ["q"] * 2000, [f"r{i}" for i in range(2000)]
    base = LengthRM("long").score(prompts, responses)
    a, b = noisy.score(prompts, responses), noisy.score(prompts, responses)
    assert np.array_equal(a, b) and noisy.name == "long"
    noise = a - base
    assert abs(noise.mean()) < 0.03 and abs(noise.std() - 0.3) < 0.02  # 2000 draws: se 0.0067 / 0.0047


@pytest.mark.parametrize(
    "selector, named", [("linucb", True), ("exp3", True), ("random", False), ("round_robin", False), ("fixed", False)]
)
def test_the_log_names_the_feedback_only_for_a_strategy_that_learns_from_it(tmp_path, selector, named):
    cfg = make_cfg(tmp_path, selector=selector, iterations=1, feedback="neg_loss")
    Trainer(cfg, make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    assert [r["feedback"] for r in read_log(tmp_path)] == ["neg_loss" if named else None] * 2


def test_loss_decrease_feedback_is_before_minus_after(tmp_path):
    cfg = make_cfg(tmp_path, selector="linucb", feedback="loss_decrease")
    Trainer(cfg, make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    for r in read_log(tmp_path):
        if r["n_pairs"]:
            assert r["raw_reward"][0] == pytest.approx(r["loss"] - r["loss_after"], rel=1e-9, abs=1e-12)
            assert r["loss_after"] < r["loss"]  # one step of lr 1e-2 lowers the loss on its own pairs


def test_pair_accuracy_feedback_uses_gold_answers(tmp_path, monkeypatch):
    """Prompts 'k+0=' with gold k. RM 'ones' prefers responses with many '1's; the reward is
    mean(correct(chosen) - correct(rejected)) over the step's pairs, checked independently here."""
    from laser.tasks.extract import is_correct
    from laser.training.loop import resolve_feedback

    labelled = [Example(id=f"p{i}", prompt=f"{i}+0=", answer=str(i), task="gsm8k") for i in range(8)]
    assert resolve_feedback("auto", labelled) == "pair_accuracy"
    assert resolve_feedback("auto", EXAMPLES) == "neg_loss"  # no task: nothing to check answers with
    some = [Example(id=f"p{i}", prompt=f"{i}+0=", answer=str(i) if i < 2 else "", task="gsm8k") for i in range(8)]
    unlabelled = [Example(id=f"p{i}", prompt=f"{i}+0=", task="gsm8k") for i in range(8)]
    assert resolve_feedback("auto", some) == "mixed_pair_accuracy"
    assert resolve_feedback("auto", unlabelled) == "majority_pair_accuracy"
    assert resolve_feedback("auto_label_free", labelled) == "majority_pair_accuracy"  # never the gold answers
    assert resolve_feedback("auto_label_free", EXAMPLES) == "neg_loss"
    with pytest.raises(ValueError, match="needs a gold answer.*'p0'"):
        resolve_feedback("pair_accuracy", EXAMPLES)
    tr = Trainer(make_cfg(tmp_path, selector="fixed"), make_tiny_policy(), rms(), labelled, show_progress=False)
    seen = []
    import laser.routing.router as router_module

    real = router_module.correctness

    def spy(batch, reference, coll=None):
        out = real(batch, reference, coll)
        texts = batch.texts
        diffs = [
            is_correct("gsm8k", texts[c], gold) - is_correct("gsm8k", texts[r], gold)
            for gold, ps in zip(batch.answers, batch.pairs, strict=True)
            for c, r in ps
        ]
        seen.append((out.mean, float(np.mean(diffs)) if diffs else float("nan")))
        return out

    monkeypatch.setattr(router_module, "correctness", spy)
    tr.run()
    log = read_log(tmp_path)
    assert all(r["feedback"] is None for r in log)  # `fixed` reads no feedback; it is computed all the same
    for got, expected in seen:
        assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected)
    for r, (got, _) in zip(log, seen, strict=True):
        assert r["raw_reward"][0] == (None if np.isnan(got) or not r["n_pairs"] else pytest.approx(got))


def test_sentence_encoder_can_replace_the_policy_context(tmp_path):
    """selector.context=encoder: LinUCB runs on all-MiniLM-L6-v2 embeddings (384-d), not hidden states."""
    encoder_mod = pytest.importorskip("laser.policy.encoder")
    try:
        encoder = encoder_mod.SentenceEncoder()
    except ImportError as exc:
        pytest.skip(str(exc))
    tr = Trainer(make_cfg(tmp_path), make_tiny_policy(), rms(), EXAMPLES, show_progress=False, context_fn=encoder.embed)
    assert tr.selector.dim == 384
    tr.run()
    log = read_log(tmp_path)
    assert len(log) == 4 and all(len(r["ucb"]) == 2 for r in log)
    assert tr.selector.counts_.sum() == 4


def test_oracle_scores_each_prompt_with_its_groups_rm(tmp_path):
    """selector.name=oracle with arms_by_group {even: ones, odd: long}: every prompt's arm is its
    group's RM, on the plain Trainer, and the log carries the strategy's name."""
    examples = [Example(id=f"p{i}", prompt=f"{i}+{i}=", domain="even" if i % 2 == 0 else "odd") for i in range(8)]
    cfg = make_cfg(tmp_path, selector="random")
    cfg.selector.name, cfg.selector.kwargs = "oracle", {"arms_by_group": {"even": "ones", "odd": "long"}}
    tr = Trainer(cfg, make_tiny_policy(), rms(), examples, show_progress=False)
    assert tr.strategy.name == "oracle" and tr.selector is None
    tr.run()
    group = {ex.id: ex.group for ex in examples}
    for r in read_log(tmp_path):
        assert r["prompt_arms"] == [0 if group[p] == "even" else 1 for p in r["prompt_ids"]]
    state = json.loads(next((tmp_path / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["selector"] == "oracle"


def test_oracle_mapping_is_checked_before_anything_loads(tmp_path):
    from laser.config import ConfigError

    specs = [{"name": "ones", "type": "regex", "pattern": "1"}, {"name": "long", "type": "length"}]
    with pytest.raises(ConfigError, match=r"selector.kwargs.arms_by_group: unknown reward model\(s\) \['nope'\]"):
        load_config(
            data={
                "output_dir": str(tmp_path),
                "rewards": specs,
                "selector": {"name": "oracle", "kwargs": {"arms_by_group": {"a": "nope"}}},
            },
            require_data=False,
        )
    with pytest.raises(ConfigError, match="arms_by_group: required"):
        load_config(
            data={"output_dir": str(tmp_path), "rewards": specs, "selector": {"name": "oracle"}}, require_data=False
        )


@pytest.mark.parametrize("feedback", ["majority_pair_accuracy", "mixed_pair_accuracy"])
def test_label_free_and_mixed_feedback_check_pairs_against_majority_or_gold(tmp_path, monkeypatch, feedback):
    """Prompts 'k+0=' (task gsm8k); half carry gold k. majority_pair_accuracy checks each pair against
    the most common extracted answer of the prompt's own samples (gold ignored); mixed uses gold where
    a prompt has it. Recomputed here from the logged samples with Counter and is_correct."""
    from collections import Counter

    import laser.routing.router as router_module
    from laser.tasks.extract import extract_answer, is_correct

    examples = [Example(id=f"p{i}", prompt=f"{i}+0=", answer=str(i) if i % 2 else "", task="gsm8k") for i in range(8)]
    tr = Trainer(
        make_cfg(tmp_path, selector="linucb", feedback=feedback),  # a learner: the log names its feedback
        make_tiny_policy(),
        rms(),
        examples,
        show_progress=False,
    )
    seen, real = [], router_module.correctness

    def spy(batch, reference, coll=None):
        out = real(batch, reference, coll)
        texts = batch.texts
        n, diffs = len(texts) // len(batch.prompts), []
        for i, (gold, ps) in enumerate(zip(batch.answers, batch.pairs, strict=True)):
            answers = [a for a in (extract_answer("gsm8k", t) for t in texts[i * n : (i + 1) * n]) if a]
            counts = Counter(answers)
            top = max(counts.values()) if counts else 0
            majority = next((a for a in answers if counts[a] == top), None)
            ref = gold if (feedback == "mixed_pair_accuracy" and gold) else majority
            for c, r in ps:
                diffs.append(
                    0.0
                    if ref is None
                    else float(is_correct("gsm8k", texts[c], ref)) - float(is_correct("gsm8k", texts[r], ref))
                )
        seen.append((out.mean, float(np.mean(diffs)) if diffs else float("nan")))
        return out

    monkeypatch.setattr(router_module, "correctness", spy)
    tr.run()
    log = read_log(tmp_path)
    assert len(seen) == len(log) and all(r["feedback"] == feedback for r in log)
    assert any(np.isfinite(got) for got, _ in seen)
    for (got, expected), r in zip(seen, log, strict=True):
        assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected)
        assert r[feedback] == (None if np.isnan(got) else pytest.approx(got))


def test_verifier_checks_each_prompt_with_its_own_task():
    from laser.rewards.rules import VerifierRM

    rm = VerifierRM("v", gold={"2+2=": "4", "Is 5>3?": "yes"}, tasks={"Is 5>3?": "strategyqa"})
    scores = rm.score(["2+2=", "Is 5>3?", "Is 5>3?", "unknown"], ["The answer is 4", "Yes.", "No.", "4"])
    assert scores[:3].tolist() == [1.0, 1.0, 0.0] and np.isnan(scores[3])


def test_mmlu_reply_naming_the_option_text_counts_for_the_verifier_and_feedback():
    """A reply that names only the option's text ('Paris') is read as that option's letter when the
    prompt lists its options, in the verifier RM and in the pair-correctness feedback."""
    from laser.rewards.rules import VerifierRM
    from laser.routing.feedback import majority_answer, pair_correctness
    from laser.tasks.choice import parse_options

    prompt = "Capital of France?\nA. Rome\nB. Paris\nC. Madrid\nD. Berlin\nAnswer:"
    rm = VerifierRM("v", task="mmlu", gold={prompt: "B"})
    assert rm.score([prompt, prompt], ["It is Paris.", "It is Rome."]).tolist() == [1.0, 0.0]
    texts = ["It is Paris.", "The answer is B", "Rome, I think"]
    options = parse_options(prompt)
    assert majority_answer("mmlu", texts, options) == "B"
    assert pair_correctness("mmlu", texts, [(0, 2), (2, 1)], "B", options) == [1.0, -1.0]


# ---------------------------------------------------------------- the routing core's rules, in the loop
def test_no_pair_rule_in_the_loop_tied_is_lowest_identical_is_skipped(tmp_path):
    """An RM that ties every (different) sample: each step has no pair and is learned as the lowest
    reward (0) -- arm counts = steps. A policy whose n samples are identical: no RM could order
    them, the steps are skipped -- no bandit update at all."""
    from laser.policy.model import Samples
    from laser.routing import LOWEST

    flat = [CallableRM(lambda p, r: 0.5, name="ones"), LengthRM("long")]
    tr = Trainer(make_cfg(tmp_path / "tied", selector="fixed"), make_tiny_policy(), flat, EXAMPLES, show_progress=False)
    tr.run()
    log = read_log(tmp_path / "tied")
    assert all(r["n_pairs"] == 0 and r["reward"] == [LOWEST] and r["raw_reward"] == [None] for r in log)
    assert tr.selector.counts_.sum() == tr.global_step == tr.router.tied_ == 4

    policy = make_tiny_policy()
    real = policy.sample

    def same_n_times(prompts, n, *a, **k):  # every response of a prompt is its first sample
        s = real(prompts, n, *a, **k)
        first = [s.prompt_index.index(i) for i in range(len(prompts))]
        return Samples(
            s.prompt_index,
            [s.texts[first[i]] for i in s.prompt_index],
            [s.response_ids[first[i]] for i in s.prompt_index],
            s.prompt_ids,
        )

    policy.sample = same_n_times
    tr = Trainer(make_cfg(tmp_path / "same", selector="fixed"), policy, rms(), EXAMPLES, show_progress=False)
    tr.run()
    log = read_log(tmp_path / "same")
    assert all(r["n_pairs"] == 0 and r["reward"] == [None] for r in log)
    assert tr.selector.counts_.sum() == 0 and tr.router.skipped_ == tr.global_step == 4


def test_any_exception_of_a_local_rm_is_isolated_in_the_loop(tmp_path):
    """A local RM with a bug (IndexError, not a RewardModelError) is masked; the run finishes on the other."""

    def buggy(prompts, responses):
        return [][0]

    pool = [CallableRM(buggy, name="ones", batched=True), LengthRM("long")]
    Trainer(make_cfg(tmp_path, selector="round_robin"), make_tiny_policy(), pool, EXAMPLES, show_progress=False).run()
    log = read_log(tmp_path)
    assert all(r["arm_name"] == "long" for r in log)
    assert any("'ones' failed and is masked" in e and "IndexError" in e for e in log[0]["events"])


def test_counters_responses_scored_and_score_calls_in_the_log(tmp_path):
    """fixed 'ones', 4 prompts x 6 samples per step: one score() call of 24 responses per step."""
    Trainer(make_cfg(tmp_path, selector="fixed"), make_tiny_policy(), rms(), EXAMPLES, show_progress=False).run()
    for i, r in enumerate(read_log(tmp_path), start=1):
        assert r["responses_scored"] == [24 * i, 0] and r["score_calls"] == [i, 0]
        assert r["responses_scored_total"] == 24 * i and r["score_calls_total"] == i


def test_a_checkpoint_written_before_the_routing_core_still_resumes(tmp_path):
    """Counters in the old layout (rm_calls / rm_down / rm_errors, no pool or router entry) load
    into the pool: responses_scored from rm_calls, score_calls unknown (0)."""
    tr = Trainer(
        make_cfg(tmp_path, selector="fixed", iterations=1), make_tiny_policy(), rms(), EXAMPLES, show_progress=False
    )
    sd = tr.state_dict()
    c = sd["counters"]
    del c["pool"], c["router"]
    c.update(rm_calls=[48, 0], rm_down=[1], rm_errors={"1": "RewardModelError: gone"})
    fresh = Trainer(
        make_cfg(tmp_path, selector="fixed", iterations=1), make_tiny_policy(), rms(), EXAMPLES, show_progress=False
    )
    fresh.load_state_dict(sd)
    assert fresh.pool.responses_scored.tolist() == [48, 0] and fresh.pool.score_calls.tolist() == [0, 0]
    assert fresh.pool.down == {1} and fresh.pool.last_errors == {1: "RewardModelError: gone"}
