"""Item 1a: an exception inside the loop at step k, then resume: the run ends bit-identical to an
uninterrupted one (weights, optimizer state, arm sequence, selector and RNG state), and
checkpointing every step or never gives the same weights."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from helpers import make_tiny_policy

from laser.bandits.base import rng_state_array
from laser.training.loop import Trainer

from ._helpers import EXAMPLES, make_cfg, read_log, rms, trainer_hash

pytestmark = pytest.mark.reliability
ITEM = "1 crash/resume"


class Crash(RuntimeError):
    pass


class TracingTrainer(Trainer):
    """Records every step's random draws (sampled texts, selector RNG after the step, torch RNG) and
    raises after step ``crash_at``'s in-memory update, before that step is logged or checkpointed."""

    crash_at: int | None = None
    rng_lost: bool = False  # negative control: forget the selector's RNG state after resuming

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trace: dict[int, dict] = {}
        real = self.policy.sample

        def sample(*a, **k):
            out = real(*a, **k)
            self._texts = list(out.texts)
            return out

        self.policy.sample = sample

    def run(self):
        if self.rng_lost:
            real_load = self.load_state_dict

            def forgetful(sd):
                real_load(sd)
                self.selector.rng_ = np.random.default_rng(12345)

            self.load_state_dict = forgetful
        return super().run()

    def train_step(self, batch):
        record = super().train_step(batch)
        step = self.global_step + 1
        self.trace[step] = {
            "texts": self._texts,
            "arm": record["arm"],
            "loss": repr(record["loss"]),
            "reward": repr(record["reward"]),
            "selector_rng": rng_state_array(self.selector.rng_).tobytes(),
            "torch_rng": hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
        }
        if step == self.crash_at:
            raise Crash(f"injected after the update of step {step}")
        return record


def run(out, selector="linucb", crash_at=None, every=1, rng_lost=False):
    tr = TracingTrainer(make_cfg(out, selector, every=every), make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    tr.crash_at, tr.rng_lost = crash_at, rng_lost
    tr.run()
    return tr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return {sel: run(tmp_path_factory.mktemp(f"ref-{sel}"), sel) for sel in ("linucb", "lints")}


def same_optimizer_state(a: Trainer, b: Trainer) -> bool:
    sa, sb = a.update.optimizer.state_dict(), b.update.optimizer.state_dict()
    if sa["param_groups"] != sb["param_groups"] or sa["state"].keys() != sb["state"].keys():
        return False
    return all(torch.equal(sa["state"][i][k], sb["state"][i][k]) for i in sa["state"] for k in sa["state"][i])


def crash_and_resume(out, selector, k, rng_lost=False):
    crashing = TracingTrainer(make_cfg(out, selector), make_tiny_policy(), rms(), EXAMPLES, show_progress=False)
    crashing.crash_at = k
    with pytest.raises(Crash):
        crashing.run()
    resumed = run(out, selector, rng_lost=rng_lost)
    return crashing, resumed


@pytest.mark.parametrize("selector,k", [("linucb", 1), ("linucb", 7), ("linucb", 13), ("linucb", 19), ("lints", 7)])
def test_crash_at_step_k_then_resume_is_bit_identical(tmp_path, reference, figures, selector, k):
    """LinUCB draws from its RNG only on ties, so LinTS (a Gaussian draw per arm every step) is run
    too: its arm sequence depends on the restored selector RNG at every step after the resume."""
    with figures.case(ITEM, "raise at step k in {1,7,13,19} (+ LinTS at 7), resume: bit-identical"):
        ref = reference[selector]
        crashing, resumed = crash_and_resume(tmp_path, selector, k)
        assert resumed.global_step == 20 and min(resumed.trace) == k  # resumed from the checkpoint of k-1
        for name, p in ref.params.items():
            assert torch.equal(p, resumed.params[name]), name
        assert same_optimizer_state(ref, resumed)
        a, b = ref.selector.state_dict(), resumed.selector.state_dict()
        assert a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a)
        assert [r["arm"] for r in read_log(tmp_path)] == [r["arm"] for r in read_log(ref.out)]
        assert [r["global_step"] for r in read_log(tmp_path)] == list(range(1, 21))  # each step logged once
        for step in range(1, 21):  # every draw before the crash and after the resume equals the reference's
            got = crashing.trace[step] if step < k else resumed.trace[step]
            assert got == ref.trace[step], step
        assert resumed.selector.counts_.sum() == resumed.global_step == 20
        assert trainer_hash(resumed) == trainer_hash(ref)


def test_negative_control_lost_selector_rng_changes_the_run(tmp_path, reference, figures):
    """The comparison above has teeth: resuming LinTS with a fresh selector RNG (state deliberately
    not restored) gives other draws after the resume."""
    _, resumed = crash_and_resume(tmp_path, "lints", 7, rng_lost=True)
    ref = reference["lints"]
    diverged = [s for s in range(7, 21) if resumed.trace[s]["selector_rng"] != ref.trace[s]["selector_rng"]]
    assert diverged and diverged[0] == 7
    figures.set(ITEM, "negative control: LinTS resumed without its RNG state diverges at step", diverged[0])


def test_checkpoint_every_step_or_never_gives_identical_weights(tmp_path, reference, figures):
    never = run(tmp_path, "linucb", every=0)
    ref = reference["linucb"]
    assert all(torch.equal(p, never.params[n]) for n, p in ref.params.items())
    assert same_optimizer_state(ref, never)
    assert [never.trace[s] for s in range(1, 21)] == [ref.trace[s] for s in range(1, 21)]
    assert trainer_hash(never) == trainer_hash(ref)
    figures.set(ITEM, "checkpoint every step vs never: state hash", f"identical ({trainer_hash(ref)[:12]})")
