"""Four policy updates on fixed samples and pairs under one engine, on 1 process or as a rank of 2.

Run by tests/training/test_engines.py: ``python tests/training/engine_update_script.py single OUT`` (one process)
and ``accelerate launch --multi_gpu --num_processes 2 tests/training/engine_update_script.py ENGINE OUT``
(two gloo processes; ENGINE ``ddp``, ``fsdp2``, ``zero1``, ``zero2`` or ``zero3`` is forced into
Accelerate's state by tests/training/engine_force.py; ENGINE ``auto`` takes what ``accelerate launch``'s
config sets up, as on a GPU machine: benchmarks/gpu_engines.py). Options: ``--lora`` trains LoRA adapters instead
of every weight; ``--full-and-lora`` runs the full-weight update, then the LoRA one, in the same
processes (one start-up instead of two: OUT/full and OUT/lora); ``--bf16`` asks for bf16 mixed precision.

Each step has four prompts; with two processes rank 0 holds prompts 0-1 and rank 1 prompts 2-3.
The pairs per prompt (``STEPS``) give the ranks 6/3, 0/3, 3/8 and 6/0 pairs, so the ranks hold
different numbers of pairs, one of them none in two steps; ``micro_batch_pairs=2`` cuts them into
up to 4 chunks. The reference is frozen before step 1 and again before step 2 (a new iteration:
the reference is then the policy after step 1, not the initial one).

After step 3 every process takes ``PolicyUpdate.state_dict()`` (full tensors) and the main process
saves it; after step 4, a *fresh* policy with other initial trainable weights and a fresh ``PolicyUpdate``
load that checkpoint and run step 4 again. Before that, the first model runs a step whose losses
on prompts 2-3 are NaN (``poisoned_step``). The main process writes OUT/result.pt: per step loss
and gradient norm, the state after step 4 (weights, reference, AdamW state), the poisoned step's
report and the resumed run's weights after its step 4.
"""

import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # engine_force; helpers
torch.set_num_threads(1)

from engine_force import cpu_engine_accelerator  # noqa: E402
from helpers import make_tiny_policy  # noqa: E402

from laser.policy.model import Samples  # noqa: E402
from laser.training.dist import Dist  # noqa: E402
from laser.training.update import PolicyUpdate  # noqa: E402

N = 4  # responses per prompt
STEPS = [
    [[(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)], [(2, 0)], [], [(3, 0), (3, 1), (2, 1)]],
    [[], [], [(0, 1), (2, 3)], [(1, 0)]],
    [[(3, 2)], [(0, 1), (1, 2)], [(0, 3), (1, 3), (2, 3), (0, 2)], [(1, 0), (2, 0), (3, 0), (2, 1)]],
    [[(0, 2), (1, 2), (3, 2)], [(0, 3), (1, 3), (2, 3)], [], []],
]


def fixed_samples(policy, prompts, index, step):
    """Deterministic responses to the prompts ``index``: digits then EOS, different per step, prompt and response."""
    ids = policy.encode_prompts([prompts[i] for i in index])
    tok = policy.tokenizer
    responses = [
        tok(str((7 * i + 3 * j + step) % 10) * (j + 1))["input_ids"] + [policy.eos_id] for i in index for j in range(N)
    ]
    texts = tok.batch_decode(responses, skip_special_tokens=True)
    return Samples([k for k in range(len(index)) for _ in range(N)], texts, responses, ids)


class Train:
    lr, weight_decay, beta, nll_weight, grad_clip, micro_batch_pairs = 2e-2, 0.01, 0.1, 1.0, 1.0, 2


def make_update(acc, seed: int, lora: bool) -> PolicyUpdate:
    """A fresh policy and update; ``seed`` draws the trainable weights (LoRA: the adapters, on the
    same frozen base, which a LoRA checkpoint does not hold)."""
    policy = make_tiny_policy(seed=5 if lora else seed)
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)  # the adapters' initialisation
        policy.model = get_peft_model(
            policy.model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        )
        for name, p in policy.model.named_parameters():  # B starts at 0: move it, so the adapters matter
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(seed))
    return PolicyUpdate(Train, policy, acc)


def step(update, acc, s: int) -> dict:
    prompts = [f"{i}+{i}=" for i in range(4)]
    per_rank = len(prompts) // acc.num_processes
    mine = range(acc.process_index * per_rank, (acc.process_index + 1) * per_rank)
    samples = fixed_samples(update.policy, prompts, list(mine), s)
    flat = [(k, k * N + c, k * N + r) for k, i in enumerate(mine) for c, r in STEPS[s][i]]
    terms = update.run(samples, flat, len(mine), Dist(acc), after=True)
    assert terms["nonfinite"] is None, terms["nonfinite"]
    return {
        **{k: terms[k] for k in ("loss", "grad_norm", "n_pairs", "loss_after")},
        "weights": update.engine.full_params(),
    }


def poisoned_step(update, acc) -> dict:
    """Step 3's pairs again with the losses of prompts 2-3 (rank 1's, with two processes) made NaN:
    every process reports the non-finite loss and no weight moves."""
    orig, before = update.loss_terms, update.engine.full_params()

    def nan_loss(samples, flat, grad, ref):
        terms = orig(samples, flat, grad, ref)
        if grad:
            poisoned = torch.tensor([samples.prompt_index[c] + 2 * acc.process_index >= 2 for _, c, _ in flat])
            terms["loss"] = torch.where(poisoned, terms["loss"] * float("nan"), terms["loss"])
        return terms

    update.loss_terms = nan_loss
    prompts = [f"{i}+{i}=" for i in range(4)]
    per_rank = len(prompts) // acc.num_processes
    mine = list(range(acc.process_index * per_rank, (acc.process_index + 1) * per_rank))
    samples = fixed_samples(update.policy, prompts, mine, 2)
    flat = [(k, k * N + c, k * N + r) for k, i in enumerate(mine) for c, r in STEPS[2][i]]
    terms = update.run(samples, flat, len(mine), Dist(acc))
    update.loss_terms = orig
    after = update.engine.full_params()
    return {
        "nonfinite": terms["nonfinite"],
        "grad_norm": terms["grad_norm"],
        "moved": max(float((after[n] - before[n]).abs().max()) for n in before),
    }


def make_accelerator(engine: str, bf16: bool):
    if engine == "auto":  # whatever `accelerate launch`'s config sets up (the GPU check, on CUDA)
        from accelerate import Accelerator

        return Accelerator()
    return cpu_engine_accelerator(engine, mixed_precision="bf16" if bf16 else "no")


def run(acc, out: Path, lora: bool) -> None:
    """The four steps, the checkpoint, the poisoned step and the resumed step 4; writes OUT/result.pt."""
    update = make_update(acc, seed=5, lora=lora)
    update.freeze_reference()
    steps = []
    for s in range(4):
        if s == 1:
            update.freeze_reference()  # a new iteration
        if s == 3:
            ckpt = update.state_dict()
            if acc.is_main_process:
                out.mkdir(parents=True, exist_ok=True)
                torch.save(ckpt, out / "ckpt3.pt")
        steps.append(step(update, acc, s))
    final = update.state_dict()
    nan_step = poisoned_step(update, acc)
    acc.wait_for_everyone()
    resumed = make_update(acc, seed=11, lora=lora)  # other initial trainable weights: the load must set them all
    resumed.load_state_dict(torch.load(out / "ckpt3.pt", weights_only=True))
    resumed_steps = [step(resumed, acc, 3)]
    resumed_final = resumed.state_dict()
    if acc.is_main_process:
        torch.save(
            {
                "engine": update.engine.name,
                "processes": acc.num_processes,
                "steps": steps,
                "final": final,
                "resumed_steps": resumed_steps,
                "resumed": resumed_final,
                "nan_step": nan_step,
            },
            out / "result.pt",
        )
    acc.wait_for_everyone()


def main(engine: str, out: str, variants: list[bool], bf16: bool) -> None:
    """``variants``: ``[False]`` (full weights), ``[True]`` (LoRA) or ``[False, True]`` (both, one
    after the other in this process: OUT/full/result.pt, then OUT/lora/result.pt)."""
    acc = make_accelerator(engine, bf16)
    for lora in variants:
        run(acc, Path(out) / ("lora" if lora else "full") if len(variants) > 1 else Path(out), lora)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    variants = [False, True] if "--full-and-lora" in sys.argv else ["--lora" in sys.argv]
    main(args[0], args[1], variants, "--bf16" in sys.argv)
