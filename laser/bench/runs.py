"""The embedded benchmark's runs: sizes, the run config of one method, the SFT start.

Shared by ``laser demo`` and ``laser compare`` (which never imports the demo command module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from laser.bench.tasks import VERSIONS
from laser.config import option
from laser.routing.pairs import PAIRING_RULES

#: the feedback of the LinUCB methods (``laser_per_prompt``, ``classifier``, ``laser:auto_label_free``):
#: label-free, so they see no label the baselines do not (the label-based ``pair_accuracy`` runs as
#: ``laser:pair_accuracy``); see benchmarks/feedback_study.py
DEFAULT_FEEDBACK = "auto_label_free"  # majority_pair_accuracy on the benchmark; neg_loss on prompts without a task

#: what the embedded benchmark's ``laser`` runs: the label-free reliability router (issue 17: it
#: captures the oracle's headroom where LinUCB on label-free feedback is level with random; the
#: paper's method keeps its name ``laser:neg_loss``, LinUCB on label-free feedback is ``laser:auto_label_free``)
LASER = "laser:reliability"


@dataclass
class DemoSettings:
    """Sizes of one demo run (the defaults finish in under 5 minutes on 2 CPU cores)."""

    n_train_per_domain: int = option(32, "training prompts per domain and seed", ge=1)
    n_test_per_domain: int = option(200, "test prompts per domain and seed", ge=1)
    iterations: int = option(5, "passes over the training prompts", ge=1)
    batch_size: int = option(16, "prompts per step", ge=1)
    n_samples: int = option(12, "responses sampled per prompt", ge=2, why="to form a pair")
    max_new_tokens: int = option(40, "longest sampled response", ge=1)
    pairs_per_prompt: int = option(2, "preference pairs built per prompt", ge=1)
    pairing: Literal[PAIRING_RULES] = option(
        "topk_vs_bottomk",
        "how scored samples become pairs (best vs worst, 2nd best vs 2nd worst: fewer near-tie pairs)",
    )
    lr: float = option(2e-4, "AdamW learning rate", gt=0)
    beta: float = option(0.1, "DPO beta", gt=0)
    nll_weight: float = option(1.0, "weight of the NLL term on chosen responses", ge=0)
    sft_target: Literal["moderate", "smoke", "v2", "v2_smoke"] = option(
        "v2", "SFT recipe of the start policy (laser.bench.policy.PRESETS)"
    )
    group_batches: bool = option(True, "each batch from one domain, as when training on several datasets")
    benchmark: Literal[VERSIONS] = option("v2", "benchmark version: the prompts and the demo RMs' off-domain behaviour")


def benchmark_sets(s: DemoSettings, seed: int) -> tuple[list, list]:
    """(train, test) prompts of one seed."""
    from laser.bench.tasks import make_benchmark

    return (
        make_benchmark(s.n_train_per_domain, seed=seed, split="train", version=s.benchmark),
        make_benchmark(s.n_test_per_domain, seed=seed, split="test", version=s.benchmark),
    )


def demo_rms(s: DemoSettings, seed: int) -> list:
    """The demo's five RMs of the settings' benchmark version."""
    from laser.bench.rms import make_demo_rms

    return make_demo_rms(seed=seed, version=s.benchmark)


QUICK = DemoSettings(
    n_train_per_domain=4,
    n_test_per_domain=5,
    iterations=1,
    batch_size=8,
    n_samples=4,
    max_new_tokens=24,
    pairs_per_prompt=2,
    sft_target="v2_smoke",
)


#: window of ``laser@sliding_linucb``: the bandit library's default (200 updates) is longer than the
#: demo's whole run (40 steps), which would make it plain LinUCB; 16 = two iterations of the demo.
SLIDING_WINDOW = 16


#: the RM the demo names as better than chance on every domain: it fixes the reliability router's
#: sign and is its fallback (a user names such an RM; the router reads no label)
RELIABILITY_ANCHOR = "generalist"


def run_method(
    method: str,
    seed: int,
    policy_dir: str,
    train,
    rm_names: list[str],
    s: DemoSettings,
    out: Path,
    rms: list | None = None,
    selector=None,
    reward_specs: list[dict] | None = None,
    eta: float = 0.5,
    feedback: str | None = None,
    reliability: dict | None = None,
) -> tuple[dict, object, Path]:
    """Train one method from the SFT start; returns (trainer summary, policy, run folder).

    Args:
        method: a method name (:func:`laser.build.method_config`; ``laser`` is :data:`LASER`).
        rms: reward models to use instead of the demo's (e.g. noisy copies); names must match.
        selector: a pre-built selector object (e.g. a fitted classifier) for the Trainer.
        reward_specs: extra keys per RM spec (same order), e.g. ``{"add_at_step": 10}``.
        eta: the online ensemble's step size; feedback: the feedback of ``laser`` (default: the demo's).
        reliability: extra ``selector.kwargs`` of ``laser:reliability`` (e.g. ``labelled_pairs``).
    """
    from laser.build import build, method_config

    rms = rms or demo_rms(s, seed)
    if method == "verifier":  # the gold-answer RM alone: an upper bound that sees every label
        rms, rm_names, reward_specs, method = [gold_verifier(train)], ["verifier"], None, "single:verifier"
    run_dir = out / f"seed{seed}" / method.replace(":", "_").replace("@", "_at_")
    if method == "laser":
        method = LASER
    selector_conf, train_conf = method_config(
        method,
        {},
        {"feedback": feedback or DEFAULT_FEEDBACK},
        selector_kwargs={
            "online_ensemble": {"eta": eta},
            "sliding_linucb": {"window": SLIDING_WINDOW},
            "oracle": {"arms_by_group": oracle_map(rms)},
            "reliability": {"anchor": RELIABILITY_ANCHOR, **(reliability or {})},
        },
    )
    cfg = demo_run_config(seed, run_dir, rm_names, s, selector_conf, train_conf["feedback"], reward_specs)
    policy = load_sft_policy(policy_dir)
    trainer = build(cfg, train, policy, rms, selector=selector, show_progress=False)
    if all(ex.answer for ex in train) and "gold" not in trainer.router.references:
        # logged as pair_accuracy for the mechanism figures (gold accuracy of the trained pairs); no
        # method reads it unless it is its feedback
        trainer.router.references = (*trainer.router.references, "gold")
    return trainer.run(), policy, run_dir


def oracle_map(rms: list) -> dict[str, str]:
    """The benchmark's design: each domain -> the expert RM that is reliable on it."""
    return {d: rm.name for rm in rms if getattr(rm, "kind", None) == "expert" for d in rm.domains}


def gold_verifier(examples: list):
    """A verifier RM checking each training prompt's answer against its gold answer (its own task)."""
    from laser.rewards.rules import VerifierRM

    return VerifierRM(
        "verifier",
        gold={ex.prompt: ex.answer for ex in examples if ex.answer},
        tasks={ex.prompt: ex.task for ex in examples},
    )


def demo_run_config(
    seed: int,
    run_dir: Path,
    rm_names: list[str],
    s: DemoSettings,
    selector_conf: dict,
    feedback: str,
    reward_specs: list[dict] | None = None,
):
    """The validated run config of one demo method (the demo's RMs by name, the settings' sizes)."""
    from laser.config import load_config

    extra = reward_specs or [{} for _ in rm_names]
    return load_config(
        data={
            "seed": seed,
            "output_dir": str(run_dir),
            "rewards": [
                {
                    "name": n,
                    "type": "demo",
                    "seed": seed,
                    **({"version": s.benchmark} if s.benchmark != "v1" else {}),
                    **x,
                }
                for n, x in zip(rm_names, extra, strict=True)
            ],
            "selector": selector_conf,
            "data": {"group_batches": s.group_batches},
            "train": {
                "iterations": s.iterations,
                "batch_size": s.batch_size,
                "n_samples": s.n_samples,
                "max_new_tokens": s.max_new_tokens,
                "pairs_per_prompt": s.pairs_per_prompt,
                "lr": s.lr,
                "pairing": s.pairing,
                "beta": s.beta,
                "nll_weight": s.nll_weight,
                "feedback": feedback,
            },
            "checkpoint": {"every": 0, "keep_last": 1},
        },
        require_data=False,
    )


def load_sft_policy(policy_dir: str):
    """A fresh copy of the SFT start, left-padded for generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.policy.model import Policy

    tok = AutoTokenizer.from_pretrained(policy_dir)
    tok.padding_side = "left"
    return Policy(AutoModelForCausalLM.from_pretrained(policy_dir), tok)
