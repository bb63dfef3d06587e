"""LASeR inside TRL: GRPO on the embedded benchmark with a bandit routing each round to one RM.

Runs offline on CPU (about a minute or two at OMP_NUM_THREADS=1): the tiny SFT policy
(``laser.bench.policy``), the embedded benchmark with every generation round drawn from one domain,
and the five demo RMs (two domain experts, a noisy generalist, a length lover, pure noise). It
then repeats the run with TRL's plain multi-reward set-up (every RM scores every completion, the
scores are summed) and prints the router's selection per domain over the last third of rounds,
RM calls of both runs and the time per step::

    OMP_NUM_THREADS=1 python examples/trl_grpo.py            # add --rounds 60 for a quicker look

Needs ``pip install 'laser-rm[trl]'``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def grouped_dataset(rounds: int, prompts_per_round: int, seed: int):
    """Rows in round order: round r holds ``prompts_per_round`` prompts of one domain; the domains
    cycle in a fresh random order every four rounds (GRPOTrainer reads it with shuffle off)."""
    from datasets import Dataset

    from laser.bench.tasks import DOMAINS, make_benchmark

    rng = np.random.default_rng(seed)
    per_domain = -(-rounds // len(DOMAINS)) * prompts_per_round + prompts_per_round
    pools = {d: make_benchmark(per_domain, seed=seed, split="train", domains=(d,)) for d in DOMAINS}
    order = [d for _ in range(-(-rounds // len(DOMAINS))) for d in rng.permutation(DOMAINS)][:rounds]
    used = {d: 0 for d in DOMAINS}
    rows = []
    for domain in order:
        for ex in pools[domain][used[domain] : used[domain] + prompts_per_round]:
            rows.append({"prompt": ex.prompt, "answer": ex.answer, "task": ex.task, "domain": ex.domain})
        used[domain] += prompts_per_round
    return Dataset.from_list(rows)


class Counted:
    """An RM that counts the completions it scored (rows), its ``score`` calls and their seconds."""

    def __init__(self, rm):
        self.rm, self.name, self.rows, self.calls, self.seconds = rm, rm.name, 0, 0, 0.0

    def score(self, prompts, responses):
        self.rows += len(responses)
        self.calls += 1
        start = time.perf_counter()
        try:
            return self.rm.score(prompts, responses)
        finally:
            self.seconds += time.perf_counter() - start


def step_timer():
    """A trainer callback recording each optimizer step's wall time (``.seconds``)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        seconds: list = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    timer = StepTimer()
    timer.seconds = []
    return timer


def plain_reward(rm: Counted):
    """TRL's usual reward function for one RM: it scores every completion."""

    def reward(prompts, completions, **kwargs):
        return [float(s) for s in rm.score(prompts, completions)]

    reward.__name__ = rm.name
    return reward


def run(args, reward_funcs, callbacks, out_dir) -> float:
    """Train GRPO for ``args.rounds`` rounds (one round per step); returns the median seconds per
    step after the first five (warm-up), robust to other jobs on the machine."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    model = AutoModelForCausalLM.from_pretrained(args.policy)
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    config = GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations,
        gradient_accumulation_steps=1,
        max_steps=args.rounds,
        shuffle_dataset=False,
        max_completion_length=40,
        temperature=0.8,
        learning_rate=args.lr,
        beta=0.0,
        seed=args.seed,
        logging_steps=max(1, args.rounds // 4),
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model,
        args=config,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        train_dataset=grouped_dataset(args.rounds, args.prompts, args.seed),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # keep the output to the tables below
    timer = step_timer()
    trainer.add_callback(timer)
    trainer.train()
    return float(np.median(timer.seconds[5:] or timer.seconds))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=120, help="GRPO steps = generation rounds")
    p.add_argument("--prompts", type=int, default=4, help="prompts per round (all from one domain)")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt")
    p.add_argument("--context", default="hashed", help="auto | policy | hashed | encoder")
    p.add_argument("--selector", default="linucb", help="a laser.bandits name, or reliability (label-free)")
    p.add_argument("--alpha", type=float, default=1.0, help="LinUCB exploration weight")
    p.add_argument("--feedback", default="pair_accuracy", help="pair_accuracy | majority_pair_accuracy")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-plain", action="store_true", help="skip the all-RMs baseline run")
    args = p.parse_args(argv)

    import torch

    from laser.bench.policy import build_tiny_policy
    from laser.bench.rms import make_demo_rms
    from laser.integrations.trl import RMRouter, require_trl

    require_trl()
    torch.set_num_threads(1)
    args.policy = build_tiny_policy(seed=args.seed)
    options = {"alpha": args.alpha} if args.selector in ("linucb", "sliding_linucb") else {}
    routed = [Counted(rm) for rm in make_demo_rms(args.seed)]
    if args.selector == "reliability":  # label-free: the RMs' agreement per domain, the generalist as anchor
        router = RMRouter(
            routed, selector="reliability", selector_options={"anchor": "generalist"}, group_column="domain"
        )
    else:
        router = RMRouter(
            routed,
            selector=args.selector,
            selector_options=options,
            context=args.context,
            feedback=args.feedback,
            tag_column="domain",
            seed=args.seed,
        )
    with tempfile.TemporaryDirectory() as tmp:
        router_step = run(args, router.reward_funcs, [router], tmp)
        plain = [Counted(rm) for rm in make_demo_rms(args.seed)]
        plain_step = None if args.skip_plain else run(args, [plain_reward(rm) for rm in plain], [], tmp)
    return report(args, router, routed, plain, router_step, plain_step)


def report(args, router, routed, plain, router_step, plain_step) -> dict:
    table = router.selection_table(last_fraction=1 / 3)
    names = router.names
    print(f"\nselection per domain, last third of {args.rounds} rounds (share of rounds routed to each RM)")
    print(f"{'domain':<9}" + "".join(f"{n:>14}" for n in names))
    for domain, shares in table.items():
        print(f"{domain:<9}" + "".join(f"{shares[n]:>14.2f}" for n in names))
    if hasattr(router.selector, "groups_"):  # reliability: each domain's routed RM now and why
        for domain in sorted(router.selector.groups_):
            arm, status = router.selector.best(domain)
            print(f"reliability: {domain} -> {names[arm]} ({status})")
    print("\nRM calls (completions scored / score() calls)")
    print(f"{'RM':<14}{'router':>16}" + ("" if plain_step is None else f"{'plain TRL':>16}"))
    for i, rm in enumerate(routed):
        right = "" if plain_step is None else f"{plain[i].rows:>10} / {plain[i].calls:<4}"
        print(f"{rm.name:<14}{rm.rows:>10} / {rm.calls:<4}" + right)
    total_r, total_p = sum(rm.rows for rm in routed), sum(rm.rows for rm in plain)
    ratio = (
        ""
        if plain_step is None
        else (f"{'':7}{total_p:>10}   (ratio {total_r / total_p:.3f}, 1/K = {1 / len(names):.3f})")
    )
    print(f"{'total':<14}{total_r:>10}" + ratio)
    line = f"\nmedian time per step: router {router_step * 1000:.0f} ms"
    if plain_step is not None:
        line += f", plain TRL {plain_step * 1000:.0f} ms (ratio {router_step / plain_step:.2f})"
    print(line + " (other jobs share this machine: a single run's ratio varies)")
    rounds = args.rounds
    line = (
        f"per round: routing {router.seconds_['route'] / rounds * 1000:.1f} ms (context, decision, feedback), "
        f"RM scoring {sum(rm.seconds for rm in routed) / rounds * 1000:.1f} ms"
    )
    if plain_step is not None:
        line += f" (plain TRL: RM scoring {sum(rm.seconds for rm in plain) / rounds * 1000:.1f} ms)"
    print(line)
    return {
        "table": table,
        "router_rows": total_r,
        "plain_rows": total_p,
        "router_step": router_step,
        "plain_step": plain_step,
    }


if __name__ == "__main__":
    main()
