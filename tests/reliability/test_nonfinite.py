"""Item 2: non-finite numbers. NaN scores mean "unscorable" (never 0); a prompt with nothing
scorable is skipped and counted; a non-finite loss, gradient norm or bandit reward stops the run
naming iteration, step and arm (or, with train.on_nonfinite=skip, skips up to a cap), and the last
checkpoint stays intact and resumable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import make_tiny_policy

from laser.rewards.base import CallableRM
from laser.routing.checkpoint import find_latest, verify
from laser.training.loop import NonFiniteError, Trainer

from ._helpers import (
    EXAMPLES,
    independent_verify,
    make_cfg,
    read_log,
    rms,
    trainer_hash,
)

pytestmark = pytest.mark.reliability
ITEM = "2 non-finite"
FAULT_STEP = 7  # global step 7 = iteration 1, step 1 (5 steps per iteration)


class PairSpy(Trainer):
    """Keeps (scores, pairs) of every step and the weights before/after each step."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen, self.unchanged = [], {}

    def _pairs(self, step):
        super()._pairs(step)
        self.seen.append((step.route.scores.copy(), step.route.pairs))

    def train_step(self, batch):
        before = {n: p.detach().clone() for n, p in self.params.items()}
        record = super().train_step(batch)
        self.unchanged[self.global_step + 1] = all(torch.equal(before[n], p) for n, p in self.params.items())
        return record


def neg_len_nan_when_even(prompt: str, response: str) -> float:
    """Negative scores, NaN for a third of the responses: were NaN read as 0 it would beat every
    finite score and be chosen."""
    code = sum(map(ord, response))
    return float("nan") if code % 3 == 0 else -1.0 - code % 13


def test_nan_scores_drop_out_of_pairs_and_are_never_zero(tmp_path, figures):
    cfg = make_cfg(tmp_path, "fixed", iterations=1, rewards=[{"name": "odd", "type": "length"}])
    tr = PairSpy(
        cfg, make_tiny_policy(), [CallableRM(neg_len_nan_when_even, name="odd")], EXAMPLES, show_progress=False
    )
    tr.run()
    used = nan_seen = 0
    for scores, pairs in tr.seen:
        nan_seen += int(np.isnan(scores).sum())
        for c, r in (cr for ps in pairs for cr in ps):
            assert np.isfinite(scores[c]) and np.isfinite(scores[r]) and scores[c] > scores[r]
            used += 1
    assert nan_seen > 0 and used > 0
    figures.set(
        ITEM, "NaN-scored responses seen / pairs built / pairs holding a NaN response", f"{nan_seen} / {used} / 0"
    )


def test_a_prompt_with_nothing_scorable_is_skipped_and_counted(tmp_path, figures):
    """Prompts p0 and p1 get NaN for every response: 2 skipped prompts per iteration."""
    unscorable = {EXAMPLES[0].prompt, EXAMPLES[1].prompt}

    def rm(prompt, response):
        return float("nan") if prompt in unscorable else float(len(response))

    cfg = make_cfg(tmp_path, "fixed", iterations=2, rewards=[{"name": "len", "type": "length"}])
    summary = PairSpy(cfg, make_tiny_policy(), [CallableRM(rm, name="len")], EXAMPLES, show_progress=False).run()
    log = read_log(tmp_path)
    assert summary["skipped_prompts"] == log[-1]["skipped_prompts"] == 2 * 2
    per_step = np.diff([0] + [r["skipped_prompts"] for r in log])
    assert per_step.sum() == 4 and set(per_step) <= {0, 1, 2}
    figures.set(
        ITEM,
        "prompts with nothing scorable: skipped and counted (2 prompts x 2 iterations)",
        summary["skipped_prompts"],
    )


def test_all_unscorable_trains_nothing_and_finishes(tmp_path):
    cfg = make_cfg(tmp_path, "linucb", iterations=1)
    nan_rm = [CallableRM(lambda p, r: float("nan"), name=n) for n in ("ones", "long")]
    tr = PairSpy(cfg, make_tiny_policy(), nan_rm, EXAMPLES, show_progress=False)
    summary = tr.run()
    assert summary["skipped_prompts"] == 20 and all(tr.unchanged.values())
    assert all(r["n_pairs"] == 0 and r["loss"] is None for r in read_log(tmp_path))
    assert tr.selector.counts_.sum() == tr.global_step == 5


def inject(tr: Trainer, what: str, steps) -> None:
    """Make the loss, the gradient norm or the bandit reward non-finite at the given global steps."""

    def now():
        return tr.global_step + 1

    if what == "loss":
        real = tr.update.loss_terms

        def poisoned(samples, flat, grad, ref=None):
            terms = real(samples, flat, grad, ref)
            if grad and now() in steps:
                terms["loss"] = terms["loss"] * float("nan")
            return terms

        tr.update.loss_terms = poisoned
    elif what == "gradient norm":  # the loss stays finite, one gradient becomes infinite
        p = next(iter(tr.params.values()))
        p.register_hook(lambda g: g * float("inf") if now() in steps else g)
    else:
        real_fb = tr.router.fb
        tr.router.fb = dataclasses.replace(real_fb, fn=lambda s: float("inf") if now() in steps else real_fb.fn(s))


@pytest.fixture(scope="module")
def clean_hash(tmp_path_factory):
    tr = Trainer(
        make_cfg(tmp_path_factory.mktemp("clean"), "fixed", iterations=2),
        make_tiny_policy(),
        rms(),
        EXAMPLES,
        show_progress=False,
    )
    tr.run()
    return trainer_hash(tr)


@pytest.mark.parametrize("what", ["loss", "gradient norm", "bandit reward"])
def test_nonfinite_stops_naming_iteration_step_arm_and_keeps_the_checkpoint(tmp_path, clean_hash, figures, what):
    with figures.case(ITEM, "non-finite loss / grad norm / bandit reward: stop names it, checkpoint resumes"):
        tr = Trainer(
            make_cfg(tmp_path, "fixed", iterations=2), make_tiny_policy(), rms(), EXAMPLES, show_progress=False
        )
        inject(tr, what, {FAULT_STEP})
        with pytest.raises(NonFiniteError) as err:
            tr.run()
        msg = str(err.value)
        assert f"non-finite {what}" in msg and "iteration 1, step 1 (global step 7)" in msg and "arm ones" in msg
        folder, skipped = find_latest(tmp_path / "checkpoints")
        assert folder.name == f"ckpt-{FAULT_STEP - 1:08d}" and not skipped
        assert verify(folder) is None and independent_verify(folder) is None
        resumed = Trainer(
            make_cfg(tmp_path, "fixed", iterations=2), make_tiny_policy(), rms(), EXAMPLES, show_progress=False
        )
        resumed.run()  # the fault was transient: the resumed run ends where a clean run ends
        assert trainer_hash(resumed) == clean_hash


def test_skip_mode_skips_up_to_the_cap_then_stops(tmp_path, figures):
    cfg = make_cfg(tmp_path / "a", "fixed", iterations=2, on_nonfinite="skip", max_skipped_steps=2)
    tr = PairSpy(cfg, make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    inject(tr, "loss", {3, 5})
    summary = tr.run()
    assert summary["skipped_steps"] == 2 and summary["global_step"] == 10
    assert tr.selector.counts_.sum() == 10 - 2  # a skipped step teaches the bandit nothing (routing core's rule)
    assert tr.unchanged[3] and tr.unchanged[5] and not tr.unchanged[4]  # skipped steps leave the weights
    log = read_log(tmp_path / "a")
    assert log[2]["loss"] is None and log[2]["grad_norm"] is None and log[3]["loss"] is not None

    cfg = make_cfg(tmp_path / "b", "fixed", iterations=2, on_nonfinite="skip", max_skipped_steps=2)
    tr = PairSpy(cfg, make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    inject(tr, "loss", {3, 5, FAULT_STEP})
    with pytest.raises(NonFiniteError, match=r"iteration 1, step 1 \(global step 7\), arm ones"):
        tr.run()
    assert tr.skipped_steps == 2
    assert verify(find_latest(tmp_path / "b" / "checkpoints")[0]) is None
    figures.set(ITEM, "on_nonfinite=skip, cap 2: faults skipped / error at the 3rd", "2 skipped / stopped at step 7")
