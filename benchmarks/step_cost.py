"""What selection saves per training step: LASeR (one RM per step) against the K-RM ensembles.

The policy and K reward models are built in code from one size preset (no downloads): the policy
is a ``LlamaForCausalLM`` (LoRA r 16, alpha 32 on q/v, as in the paper, unless ``--full``), each
RM a ``LlamaForSequenceClassification`` of the same architecture with its own random weights,
wrapped in the project's ``HFClassifierRM``, so each RM call costs what a policy forward pass
costs. The tokenizer is word-level over ``vocab`` synthetic words, so the LM head has the size of
a real vocabulary; prompts are random words, and a random policy almost never samples EOS, so
every response is ``max_new_tokens`` long and every method does the same sampling work.

In one process, on the same prompts, every method is trained through the project's ``Trainer``
with the RMs resident on the device and then offloaded (weights in CPU memory, moved to the
device for each scoring call): first one ``warmup`` run per method, then ``rounds`` rounds in which
each method in turn runs ``steps`` steps from the same initial weights, so a change in the load
of a shared machine falls on all methods alike. Per step the loop's log gives the phases (context,
sample, score, update; "other" = feedback, selector update and logging); the table shows the
median over each method's measured steps and each ensemble's ratio to LASeR (``linucb``) with the
same placement. Sampling does the same work in every method, so its ratio shows the noise.

Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` over each method's run (reset before
it), in this process; it counts policy, optimizer state, resident RMs and activations. On CPU, a
process's peak RSS never goes down and freed memory stays with the allocator, so each method is
run again in a fresh subprocess that builds the same models, resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), trains and reads ``VmHWM``: ``peak_bytes`` is that process's peak RSS
during training and ``peak_delta_bytes`` the growth over its RSS after set-up. On CPU, offloading
moves nothing (CPU memory is the compute device), so the offload rows measure only its overhead.

Usage:
    python benchmarks/step_cost.py                                  # CPU default, K = 4
    python benchmarks/step_cost.py --device cuda --dtype bfloat16 --size 0.5b --json cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (hidden, layers, heads, intermediate, vocab); "0.5b" has 0.50e9 parameters per model
SIZES = {
    "tiny": (64, 2, 4, 256, 512),
    "cpu": (128, 2, 4, 512, 4096),
    "small": (512, 8, 8, 2048, 16000),
    "0.5b": (1024, 28, 16, 4096, 32000),
}
METHODS = ("linucb", "score_ensemble", "agreement_ensemble")
PHASES = ("context", "sample", "score", "update", "other")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="cpu", choices=sorted(SIZES))
    p.add_argument("--k", type=int, default=4, help="number of reward models")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=4, help="prompts per step")
    p.add_argument("--n-samples", type=int, default=4, help="responses per prompt")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt length in tokens")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="measured steps per method and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every method once, in turn")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps per method first")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--offload", default="both", choices=["both", "on", "off"])
    p.add_argument("--full", action="store_true", help="train all weights instead of LoRA adapters")
    p.add_argument(
        "--memory",
        default="auto",
        choices=["auto", "none"],
        help="auto: CUDA allocator peak on GPU, a fresh subprocess per method on CPU",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "method:offload" (CPU memory)
    return p.parse_args(argv)


# ----- models built in code --------------------------------------------------------------------
def make_word_tokenizer(vocab: int):
    """A word-level tokenizer over ``<pad> <bos> <eos> <unk> w0 w1 ...`` (``vocab`` entries).

    Texts are split on whitespace; every encoding starts with ``<bos>``; decoding joins words with
    spaces, so a decoded response encodes back to the same ids.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    words = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(vocab - len(specials))])}
    core = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=4096,
        model_input_names=["input_ids", "attention_mask"],
    )


def llama_config(size: str, tok, **kw):
    from transformers import LlamaConfig

    hidden, layers, heads, inter, _ = SIZES[size]
    return LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=inter,
        vocab_size=len(tok),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **kw,
    )


def build_models(a: argparse.Namespace):
    """(policy, tokenizer, RM modules on CPU, parameter counts); every weight seeded."""
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from laser.policy.model import Policy

    dtype = getattr(torch, a.dtype)
    tok = make_word_tokenizer(SIZES[a.size][4])

    def init(cls, seed: int, **kw):  # random init on the device: fast on a GPU
        torch.manual_seed(seed)
        with torch.device(a.device):
            return cls(llama_config(a.size, tok, **kw)).to(dtype)

    model = init(LlamaForCausalLM, a.seed)
    model.generation_config.pad_token_id = tok.pad_token_id
    n_policy = sum(p.numel() for p in model.parameters())
    if not a.full:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
            ),
        )
    policy = Policy(model.to(a.device), tok)
    rms = [init(LlamaForSequenceClassification, a.seed + 1 + k, num_labels=1).to("cpu").eval() for k in range(a.k)]
    return policy, tok, rms, {"policy": n_policy, "rm": sum(p.numel() for p in rms[0].parameters())}


def make_rms(modules: list, tok, a: argparse.Namespace, offload: bool) -> list:
    """The project's HF classifier RM around each module, resident on the device or offloaded."""
    from laser.rewards.hf import HFClassifierRM

    return [
        HFClassifierRM(
            (m, tok),
            name=f"rm{k}",
            batch_size=a.batch_size * a.n_samples,
            max_length=1024,
            use_chat_template=False,
            device=a.device,
            dtype=a.dtype,
            offload=offload,
        )
        for k, m in enumerate(modules)
    ]


def make_examples(a: argparse.Namespace) -> list:
    import numpy as np

    from laser.tasks.base import Example

    rng = np.random.default_rng(a.seed)
    n, words = max(a.warmup, a.steps) * a.batch_size, SIZES[a.size][4] - 4
    return [
        Example(id=f"p{i}", prompt=" ".join(f"w{w}" for w in rng.integers(0, words, a.prompt_len))) for i in range(n)
    ]


# ----- one method ------------------------------------------------------------------------------
def run_config(method: str, a: argparse.Namespace, out: Path):
    from laser.config import load_config

    return load_config(
        data={
            "seed": a.seed,
            "output_dir": str(out),
            "rewards": [{"name": f"rm{k}", "type": "hf_classifier"} for k in range(a.k)],
            "selector": {"name": method},
            "data": {"shuffle": False},
            "train": {
                "iterations": 1,
                "batch_size": a.batch_size,
                "n_samples": a.n_samples,
                "max_new_tokens": a.max_new_tokens,
                "pairs_per_prompt": max(1, a.n_samples // 2),
                "micro_batch_pairs": a.batch_size * a.n_samples,
                "lr": 1e-4,
                "feedback": "neg_loss",
            },
            "checkpoint": {"every": 0, "keep_last": 1},
        },
        require_data=False,
    )


def phases_of(records: list[dict]) -> dict:
    """Median seconds per phase and per step over the records (the loop's cumulative times)."""
    per = {p: [] for p in PHASES}
    steps = []
    for r in records:
        t, prev = r["time"], 0.0
        for p, key in zip(PHASES, ("context", "sample", "score", "update", "end"), strict=True):
            per[p].append(t[key] - prev)
            prev = t[key]
        steps.append(t["end"])
    return {"step_s": statistics.median(steps), "phases": {p: statistics.median(v) for p, v in per.items()}}


def run_method(
    method: str, policy, rms: list, examples: list, a: argparse.Namespace, initial: dict, steps: int
) -> list[dict]:
    """Train ``method`` for ``steps`` steps from the initial weights; the loop's log records."""
    import shutil

    import torch

    from laser.training.loop import Trainer

    with torch.no_grad():  # every method starts from the same policy
        for n, p in policy.model.named_parameters():
            if n in initial:
                p.copy_(initial[n])
    out = Path(tempfile.mkdtemp(prefix=f"step_cost_{method}_"))
    try:
        examples = examples[: steps * a.batch_size]  # one iteration of `steps` batches
        Trainer(run_config(method, a, out), policy, rms, examples, show_progress=False).run()
        return [json.loads(line) for line in open(out / "log.jsonl")]
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ----- memory ----------------------------------------------------------------------------------
def _status_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def worker(a: argparse.Namespace) -> None:
    """Fresh-process run of one method: print its peak RSS during training as JSON."""
    method, offload = a.worker.split(":")
    policy, tok, modules, _ = build_models(a)
    rms = make_rms(modules, tok, a, offload == "1")
    initial = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    examples = make_examples(a)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS (VmHWM) := current RSS
    before = _status_kib("VmRSS")
    run_method(method, policy, rms, examples, a, initial, a.warmup + a.steps)
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_bytes": peak * 1024, "peak_delta_bytes": (peak - before) * 1024}))


def cpu_peak(method: str, offload: bool, argv: list[str]) -> dict:
    """Run :func:`worker` in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, __file__, *argv, "--steps", "1", "--warmup", "1", "--worker", f"{method}:{int(offload)}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----- the comparison --------------------------------------------------------------------------
def measure(
    methods: list[str], policy, rms: list, examples: list, a: argparse.Namespace, initial: dict, suffix: str
) -> dict:
    """Warm-up runs, then ``rounds`` rounds that run every method in turn (load changes on a shared
    machine then hit all methods alike); median phases over each method's measured steps."""
    import torch

    cuda = a.device.startswith("cuda")
    records, peaks = {m: [] for m in methods}, dict.fromkeys(methods, 0)
    for method in methods:
        run_method(method, policy, rms, examples, a, initial, a.warmup)
    for _ in range(a.rounds):
        for method in methods:
            if cuda:  # the previous run's trainer is gone: count only what this one holds
                import gc

                gc.collect()
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            records[method] += run_method(method, policy, rms, examples, a, initial, a.steps)
            if cuda:
                peaks[method] = max(peaks[method], torch.cuda.max_memory_allocated())
    out = {}
    for method in methods:
        out[method + suffix] = {
            **phases_of(records[method]),
            "responses_scored_per_step": records[method][-1]["responses_scored_total"]
            / records[method][-1]["global_step"],
        }
        if cuda:
            out[method + suffix]["peak_bytes"] = peaks[method]
    return out


def compare(a: argparse.Namespace, argv: list[str]) -> dict:
    cuda = a.device.startswith("cuda")
    policy, tok, modules, params = build_models(a)
    initial = {n: p.detach().to("cpu", copy=True) for n, p in policy.model.named_parameters() if p.requires_grad}
    examples = make_examples(a)
    methods = [m for m in a.methods.split(",") if m]
    results = {}
    for offload in {"both": (False, True), "on": (True,), "off": (False,)}[a.offload]:
        rms = make_rms(modules, tok, a, offload)
        results.update(measure(methods, policy, rms, examples, a, initial, "/offload" if offload else ""))
        del rms
        if a.json:  # written after each placement: a run cut short keeps what it measured
            Path(a.json).write_text(json.dumps({"k": a.k, "partial": True, "methods": results}, indent=1))
    if not cuda and a.memory == "auto":
        for name in results:
            results[name].update(cpu_peak(name.split("/")[0], name.endswith("/offload"), argv))
            print(f"  peak RSS of {name}: {results[name].get('peak_bytes', 0) / 2**20:.1f} MiB", flush=True)
    return {
        "k": a.k,
        "device": device_name(a.device),
        "size": a.size,
        "dtype": a.dtype,
        "params": params,
        "lora": not a.full,
        "settings": {
            k: getattr(a, k)
            for k in ("batch_size", "n_samples", "prompt_len", "max_new_tokens", "steps", "rounds", "warmup", "threads")
        },
        "memory_measure": "torch.cuda.max_memory_allocated"
        if cuda
        else "peak RSS (VmHWM) of a fresh process per method, during training",
        "methods": results,
        "ratios": ratios(results),
    }


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))"


def ratios(results: dict) -> dict:
    """Each method's step and phase times over LASeR's (``linucb``) with the same placement."""
    out = {}
    for name, r in results.items():
        base = results.get("linucb" + ("/offload" if name.endswith("/offload") else ""))
        if base is None or name.startswith("linucb"):
            continue
        div = lambda x, y: x / y if y > 0 else None  # noqa: E731
        out[name] = {
            "step": div(r["step_s"], base["step_s"]),
            "phases": {p: div(r["phases"][p], base["phases"][p]) for p in PHASES},
        }
    return out


def format_table(res: dict) -> str:
    mib = lambda b: f"{b / 2**20:9.1f}" if isinstance(b, (int, float)) else f"{'n/a':>9}"  # noqa: E731
    delta = any("peak_delta_bytes" in r for r in res["methods"].values())
    head = (
        f"{'method':<28}{'step s':>8}"
        + "".join(f"{p:>9}" for p in PHASES)
        + f"{'peak MiB':>9}"
        + (f"{'+MiB':>9}" if delta else "")
        + f"{'ratio':>7}"
    )
    lines = [
        f"K = {res['k']} RMs, {res['size']} ({res['params']['policy'] / 1e6:.1f}M params per model), "
        f"{res['dtype']}, {res['device']}; median seconds per step",
        head,
        "-" * len(head),
    ]
    for name, r in res["methods"].items():
        ratio = res["ratios"].get(name, {}).get("step")
        lines.append(
            f"{name:<28}{r['step_s']:8.3f}"
            + "".join(f"{r['phases'][p]:9.3f}" for p in PHASES)
            + mib(r.get("peak_bytes"))
            + (mib(r.get("peak_delta_bytes")) if delta else "")
            + (f"{ratio:7.2f}" if ratio else f"{'1.00' if name.startswith('linucb') else '':>7}")
        )
    if delta:
        lines.append("peak MiB: peak RSS of a fresh process per method while training; +MiB: its growth over set-up")
    lines += ["", "ensemble / LASeR, per phase:"]
    for name, r in res["ratios"].items():
        lines.append(
            f"{name:<28}" + "  ".join(f"{p} {v:.2f}" if v is not None else f"{p} n/a" for p, v in r["phases"].items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if a.worker:
        return worker(a)
    t0 = time.perf_counter()
    res = compare(a, argv)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    print(format_table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
