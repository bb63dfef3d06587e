"""One policy update on fixed samples and pairs, on 1 process or as one rank of several.

Run by tests/training/test_ddp_update.py: ``python tests/training/ddp_update_script.py OUT`` (one process) and
``accelerate launch --multi_gpu --num_processes 2 tests/training/ddp_update_script.py OUT`` (two gloo
processes). Four prompts with 5, 1, 0 and 3 pairs: with two processes rank 0 holds prompts 0-1
(6 pairs) and rank 1 prompts 2-3 (3 pairs), so the ranks hold different numbers of pairs and
one prompt has none. ``micro_batch_pairs=2`` cuts each rank's pairs into several chunks. The main
process writes the updated weights and the synchronised gradients to OUT/weights.pt (AdamW's
first step is nearly scale-invariant, so the gradients are what shows a wrong loss scaling).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: helpers
torch.set_num_threads(1)

from accelerate import Accelerator  # noqa: E402
from helpers import make_tiny_policy  # noqa: E402

from laser.policy.model import Samples  # noqa: E402
from laser.training.dist import Dist  # noqa: E402
from laser.training.update import PolicyUpdate  # noqa: E402

N = 4  # responses per prompt
PAIRS = [[(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)], [(2, 0)], [], [(3, 0), (3, 1), (2, 1)]]


def fixed_samples(policy, prompts, index):
    """Deterministic responses to the prompts ``index``: digits then EOS, different per prompt and response."""
    ids = policy.encode_prompts([prompts[i] for i in index])
    tok = policy.tokenizer
    responses = [
        tok(str((7 * i + 3 * j) % 10) * (j + 1))["input_ids"] + [policy.eos_id] for i in index for j in range(N)
    ]
    texts = tok.batch_decode(responses, skip_special_tokens=True)
    return Samples([k for k in range(len(index)) for _ in range(N)], texts, responses, ids)


class Train:
    lr, weight_decay, beta, nll_weight, grad_clip, micro_batch_pairs = 5e-2, 0.0, 0.1, 1.0, 1.0, 2


def main(out: str) -> None:
    acc = Accelerator(cpu=True)
    policy = make_tiny_policy(seed=5)
    update = PolicyUpdate(Train, policy, acc)
    update.freeze_reference()
    prompts = [f"{i}+{i}=" for i in range(4)]
    per_rank = len(prompts) // acc.num_processes
    mine = range(acc.process_index * per_rank, (acc.process_index + 1) * per_rank)
    samples = fixed_samples(policy, prompts, list(mine))
    flat = [(k, k * N + c, k * N + r) for k, i in enumerate(mine) for c, r in PAIRS[i]]
    terms = update.run(samples, flat, len(mine), Dist(acc))
    if acc.is_main_process:
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "weights": {n: p.detach().clone() for n, p in update.params.items()},
                "grads": {n: p.grad.detach().clone() for n, p in update.params.items()},
                "loss": terms["loss"],
                "n_pairs": terms["n_pairs"],
                "processes": acc.num_processes,
            },
            Path(out) / "weights.pt",
        )
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
