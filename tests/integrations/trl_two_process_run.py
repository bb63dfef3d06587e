"""One rank of the two-process router check; tests/integrations/test_trl_two_process.py launches two of these.

    accelerate launch --multi_gpu --num_processes 2 tests/integrations/trl_two_process_run.py OUT_DIR GRANULARITY STEPS

GRANULARITY ``reliability`` runs the label-free router instead (``selector="reliability"``) on
examples/trl_chat_reliability.py's chat prompts, RMs and tiny chat policy (no answer column).

On a machine without CUDA, ``GRPOConfig(use_cpu=True)`` makes accelerate run the two processes as
MULTI_CPU over gloo. Each rank trains GRPO on the embedded benchmark (the tiny SFT policy, the demo
RMs, the policy's hidden states as context) and writes what its router decided and learned to
``OUT_DIR/rank<r>.json``. Six prompts per device and four completions per prompt make the
second group of every round straddle the two ranks.
"""

from __future__ import annotations

import json
import os
import sys


class Counted:
    """An RM that counts the rows this process scored with it."""

    def __init__(self, rm):
        self.rm, self.name, self.rows = rm, rm.name, 0

    def score(self, prompts, responses):
        self.rows += len(responses)
        return self.rm.score(prompts, responses)


def reliability_setup(out_dir: str):
    """The chat example's policy (built per rank: no shared writes), dataset and router."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "trl_chat_reliability.py"
    spec = importlib.util.spec_from_file_location("trl_chat_reliability", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    from laser.integrations.trl import RMRouter

    folder = ex.tiny_chat_model(os.path.join(out_dir, f"policy-{os.environ.get('RANK', '0')}"))
    rms = [Counted(rm) for rm in ex.make_rms()]
    options = {"anchor": ex.ANCHOR, "warmup": 4, "min_votes": 12}
    router = RMRouter(rms, selector="reliability", selector_options=options, group_column="domain")
    return folder, ex.chat_dataset(40, 3, 0), rms, router


def main(out_dir: str, granularity: str, steps: int) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from laser.bench.policy import build_tiny_policy
    from laser.bench.rms import make_demo_rms
    from laser.bench.tasks import make_benchmark
    from laser.integrations.trl import RMRouter

    torch.set_num_threads(1)
    if granularity == "reliability":
        folder, data, rms, router = reliability_setup(out_dir)
    else:
        folder = build_tiny_policy(seed=0)
        data = Dataset.from_list(
            [
                {"prompt": e.prompt, "answer": e.answer, "task": e.task, "domain": e.domain}
                for e in make_benchmark(24, seed=1)
            ]
        )
        rms = [Counted(rm) for rm in make_demo_rms(0)]
        router = RMRouter(
            rms,
            selector="linucb",
            selector_options={"alpha": 0.5},
            context="auto",
            granularity=granularity,
            tag_column="domain",
        )
    args = GRPOConfig(
        output_dir=os.path.join(out_dir, "trainer"),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        disable_tqdm=True,
        save_strategy="no",
        per_device_train_batch_size=6,
        num_generations=4,
        max_steps=steps,
        max_completion_length=40,
        temperature=0.8,
        learning_rate=1e-5,
        beta=0.0,
        seed=0,
        logging_steps=steps,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder),
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(folder),
        reward_funcs=router.reward_funcs,
        callbacks=[router],
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    record = {
        "rank": rank,
        "num_processes": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "embedder": type(router.embedder).__name__,
        "history": router.history_,
        "selector": {k: v.tolist() for k, v in router.selector.state_dict().items()},
        "reliability": None
        if granularity != "reliability"
        else {
            g: {"acc": st.acc, "arm": router.names[router.selector.best(g)[0]]}
            for g, st in router.selector.groups_.items()
        },
        "rows_scored": router.responses_scored_.tolist(),
        "local_rows": [rm.rows for rm in rms],
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    print(
        f"rank {rank}/{record['num_processes']} ({record['distributed_type']}): arms per round "
        f"{[r['arms'] for r in router.history_]}",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
