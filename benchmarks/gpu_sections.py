"""The sections of benchmarks/gpu_check.py: each takes a :class:`Ctx` and returns its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Ctx:
    """What every section needs: the output folder, the mode and the device under test."""

    def __init__(self, out: Path, tiny: bool, in_process: bool):
        import torch

        self.out, self.tiny, self.in_process = out, tiny, in_process
        self.device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
        self.size = "tiny" if tiny else "0.5b"

    def sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()


def timed(ctx: Ctx, fn, repeat: int = 3) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls after one warm-up call."""
    import statistics

    fn()
    times = []
    for _ in range(repeat):
        ctx.sync()
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----- sections --------------------------------------------------------------------------------
def section_env(ctx: Ctx) -> dict:
    import accelerate
    import peft
    import torch
    import transformers

    out = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
        "device": ctx.device,
        "cuda_available": torch.cuda.is_available(),
        "tiny": ctx.tiny,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(
            gpu=props.name,
            gpus=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
            cuda=torch.version.cuda,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return out


def tiny_policy(ctx: Ctx, device: str, dtype):
    """The embedded policy (SFT ``smoke`` recipe, cached under DIR/cache) on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.bench.policy import build_tiny_policy
    from laser.policy.model import Policy

    folder = build_tiny_policy(cache_dir=ctx.out / "cache", target="smoke")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    # cast after loading: older transformers ignore a `dtype=` argument without a word
    return Policy(AutoModelForCausalLM.from_pretrained(folder).to(device=device, dtype=dtype), tok), folder


def _logps_loss_update(policy, batch) -> dict:
    """Log-probs of chosen/rejected, the LASeR loss against fixed reference log-probs, one update."""
    import torch

    from laser.training.losses import laser_loss

    prompts, chosen, rejected, ref_c, ref_r = batch
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    pc, lc = policy.sequence_logps(prompts, chosen)
    pr, _ = policy.sequence_logps(prompts, rejected)
    terms = laser_loss(pc, pr, ref_c, ref_r, lc, beta=0.1, nll_weight=1.0)
    terms["loss"].mean().backward()
    opt.step()
    with torch.no_grad():
        after, _ = policy.sequence_logps(prompts, chosen)
    return {
        "logps": torch.cat([pc, pr]).detach().float().cpu(),
        "loss": terms["loss"].detach().float().cpu(),
        "after": after.float().cpu(),
        "weights": {n: p.detach().float().cpu() for n, p in policy.model.named_parameters()},
    }


def section_cuda_vs_cpu(ctx: Ctx) -> dict:
    import torch

    from laser.bench.tasks import make_benchmark

    examples = make_benchmark(4, seed=0, split="test")[:8]
    ref, _ = tiny_policy(ctx, "cpu", torch.float32)
    prompts = ref.encode_prompts([ex.prompt for ex in examples])
    chosen = [ref.tokenizer(ex.answer + " ok", add_special_tokens=False)["input_ids"] for ex in examples]
    rejected = [ref.tokenizer("no " + ex.answer[::-1], add_special_tokens=False)["input_ids"] for ex in examples]
    with torch.no_grad():  # fixed reference log-probs: the frozen policy's, shifted so the DPO term is not 0
        ref_c = ref.sequence_logps(prompts, chosen)[0] - 0.5
        ref_r = ref.sequence_logps(prompts, rejected)[0] + 0.5
    batch = (prompts, chosen, rejected, ref_c, ref_r)
    cpu = _logps_loss_update(ref, batch)
    out = {"compared": f"cpu float32 vs {ctx.device}", "n_sequences": 2 * len(examples)}
    for dtype in (torch.float32, torch.bfloat16):
        pol, _ = tiny_policy(ctx, ctx.device, dtype)
        dev = _logps_loss_update(pol, tuple(t.to(ctx.device) if torch.is_tensor(t) else t for t in batch))
        weight_diff = max(float((dev["weights"][n] - w).abs().max()) for n, w in cpu["weights"].items())
        out[str(dtype).replace("torch.", "")] = {
            "max_abs_logp_diff": float((dev["logps"] - cpu["logps"]).abs().max()),
            "max_abs_loss_diff": float((dev["loss"] - cpu["loss"]).abs().max()),
            "max_abs_weight_diff_after_update": weight_diff,
            "max_abs_logp_diff_after_update": float((dev["after"] - cpu["after"]).abs().max()),
            "logp_scale": float(cpu["logps"].abs().max()),
        }
    return out


def section_offload(ctx: Ctx) -> dict:
    import numpy as np
    import step_cost as sc
    import torch
    from transformers import LlamaForSequenceClassification

    from laser.rewards.hf import HFClassifierRM

    tok = sc.make_word_tokenizer(sc.SIZES[ctx.size][4])
    dtype = "float32" if ctx.tiny else "bfloat16"
    torch.manual_seed(1)
    with torch.device(ctx.device):
        module = LlamaForSequenceClassification(sc.llama_config(ctx.size, tok, num_labels=1)).to(getattr(torch, dtype))
    rng = np.random.default_rng(0)
    prompts = [" ".join(f"w{w}" for w in rng.integers(0, 400, 64)) for _ in range(16)]
    responses = [" ".join(f"w{w}" for w in rng.integers(0, 400, 64)) for _ in range(16)]
    common = dict(batch_size=16, use_chat_template=False, device=ctx.device, dtype=dtype)
    resident = HFClassifierRM((module, tok), name="resident", **common)
    expected = resident.score(prompts, responses)
    t_resident = timed(ctx, lambda: resident.score(prompts, responses))
    allocated = torch.cuda.memory_allocated() if ctx.device == "cuda" else 0
    offloaded = HFClassifierRM((module, tok), name="offloaded", offload=True, **common)  # moves it to CPU
    got = offloaded.score(prompts, responses)
    released = allocated - torch.cuda.memory_allocated() if ctx.device == "cuda" else 0
    t_offloaded = timed(ctx, lambda: offloaded.score(prompts, responses))
    t_in = timed(ctx, lambda: (module.to(ctx.device), module.to("cpu")))
    return {
        "rm_params": sum(p.numel() for p in module.parameters()),
        "dtype": dtype,
        "rm_bytes": sum(p.numel() * p.element_size() for p in module.parameters()),
        "max_abs_score_diff": float(np.max(np.abs(got - expected))),
        "score_scale": float(np.max(np.abs(expected))),
        "score_call_s": {"resident": t_resident, "offloaded": t_offloaded},
        "gpu_bytes_released_by_offload": released,
        "move_in_and_out_s": t_in,
        "tiny_rm_types": _offload_types(ctx),
    }


def _tiny_rms(ctx: Ctx, offload: bool) -> dict:
    """One RM of each model-backed type on tiny random Llama models (same seeds every call)."""
    import step_cost as sc
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from laser.rewards.hf import HFClassifierRM
    from laser.rewards.implicit import ImplicitDPORM
    from laser.rewards.judge import YesNoJudgeRM

    tok = sc.make_word_tokenizer(sc.SIZES["tiny"][4])

    def model(cls, seed, **kw):
        torch.manual_seed(seed)
        return cls(sc.llama_config("tiny", tok, **kw)).eval()

    kw = dict(device=ctx.device, dtype="float32", offload=offload, use_chat_template=False)
    return {
        "hf_classifier": HFClassifierRM((model(LlamaForSequenceClassification, 0, num_labels=1), tok), **kw),
        "implicit_dpo": ImplicitDPORM((model(LlamaForCausalLM, 1), tok), (model(LlamaForCausalLM, 2), tok), **kw),
        "judge": YesNoJudgeRM(
            (model(LlamaForCausalLM, 3), tok),
            template="{prompt} w5 {response} w6",
            yes_tokens=("w1",),
            no_tokens=("w2",),
            **kw,
        ),
    }


def _offload_types(ctx: Ctx) -> dict:
    """Each model-backed RM type offloaded against resident: the largest |score difference|."""
    import numpy as np

    prompts, responses = ["w10 w11 w12", "w7 w8", "w300 w301 w2 w9"], ["w3 w4", "w100 w200 w300", "w5"]
    resident, offloaded = _tiny_rms(ctx, False), _tiny_rms(ctx, True)
    return {
        kind: float(np.max(np.abs(offloaded[kind].score(prompts, responses) - rm.score(prompts, responses))))
        for kind, rm in resident.items()
    }


def section_step_cost(ctx: Ctx) -> dict:
    import step_cost as sc

    path = ctx.out / "step_cost.json"
    if ctx.tiny:
        argv = ["--size", "tiny", "--steps", "1", "--rounds", "1", "--warmup", "1", "--memory", "none"]
    else:
        argv = [
            "--size",
            "0.5b",
            "--device",
            "cuda",
            "--dtype",
            "bfloat16",
            "--batch-size",
            "8",
            "--n-samples",
            "8",
            "--prompt-len",
            "64",
            "--max-new-tokens",
            "64",
            "--steps",
            "2",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--threads",
            "4",
        ]
    res = sc.main([*argv, "--k", "4", "--json", str(path)])
    (ctx.out / "step_cost.txt").write_text(sc.format_table(res) + "\n")
    return res


def section_generation(ctx: Ctx) -> dict:
    import step_cost as sc
    import torch
    from transformers import LlamaForCausalLM

    tok = sc.make_word_tokenizer(sc.SIZES[ctx.size][4])
    torch.manual_seed(0)
    with torch.device(ctx.device):
        dtype = torch.float32 if ctx.tiny else torch.bfloat16
        model = LlamaForCausalLM(sc.llama_config(ctx.size, tok)).to(dtype).eval()
    new, out = (8 if ctx.tiny else 128), {"params": sum(p.numel() for p in model.parameters()), "new_tokens": 0}
    out["new_tokens"] = new
    for batch in (1, 4) if ctx.tiny else (1, 16, 64):
        ids = torch.randint(4, len(tok), (batch, 64), device=ctx.device)

        def gen(ids=ids):
            with torch.no_grad():
                model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=tok.pad_token_id,
                )

        out[f"batch_{batch}_tokens_per_s"] = batch * new / timed(ctx, gen, repeat=2)
    return out


def run_cli(ctx: Ctx, args: list[str], log_name: str) -> None:
    """``laser <args>`` in a subprocess (in this process with ``--in-process``); raise on failure."""
    # `laser train` leaves the LoRA init to torch's global RNG, which is not seeded (and starts from a
    # random seed in a fresh process here): seed it, so the runs compared start from the same adapters
    if ctx.in_process:
        import torch

        from laser.cli.main import main

        torch.manual_seed(0)
        rc = main(args)
    else:
        code = "import sys, torch; from laser.cli.main import main; torch.manual_seed(0); sys.exit(main(sys.argv[1:]))"
        with open(ctx.out / log_name, "w") as f:
            rc = subprocess.run(
                [sys.executable, "-c", code, *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).returncode
    if rc != 0:
        tail = (ctx.out / log_name).read_text()[-2000:] if (ctx.out / log_name).exists() else ""
        raise RuntimeError(f"laser {' '.join(args)} exited with {rc}: {tail}")


def train_config(ctx: Ctx, policy_dir: str, rm_dir: Path, prompts: Path, out: Path, iterations: int) -> Path:
    import yaml

    cfg = {
        "seed": 0,
        "output_dir": str(out),
        "policy": {
            "model": policy_dir,
            "dtype": "bfloat16",
            "device": ctx.device,
            "lora": {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        },
        "data": {"prompts": str(prompts), "limit": 8},
        "rewards": [
            {"name": "math_expert", "type": "demo"},
            {"name": "generalist", "type": "demo"},
            {
                "name": "classifier",
                "type": "hf_classifier",
                "model": str(rm_dir),
                "use_chat_template": False,
                "device": ctx.device,
                "dtype": "bfloat16",
                "offload": True,
            },
        ],
        "selector": {"name": "linucb"},
        "train": {
            "iterations": iterations,
            "batch_size": 4,
            "n_samples": 4,
            "max_new_tokens": 16,
            "pairs_per_prompt": 2,
            "lr": 1e-3,
            "feedback": "neg_loss",
        },
        "checkpoint": {"every": 1, "keep_last": 2},
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def section_train(ctx: Ctx) -> dict:
    """bf16 LoRA ``laser train``: one iteration, resumed for a second, against two in one go."""
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    from laser.bench.policy import build_tiny_policy
    from laser.bench.tasks import make_benchmark
    from laser.routing.checkpoint import find_latest

    work = ctx.out / "train"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    policy_dir = build_tiny_policy(cache_dir=ctx.out / "cache", target="smoke")
    config = AutoConfig.from_pretrained(policy_dir, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(work / "rm")  # an RM of the policy's architecture
    AutoTokenizer.from_pretrained(policy_dir).save_pretrained(work / "rm")
    prompts = work / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": ex.id, "prompt": ex.prompt, "answer": ex.answer}) + "\n"
            for ex in make_benchmark(4, seed=0, split="train")
        )
    )
    resumed, whole = work / "resumed", work / "whole"
    cfg = train_config(ctx, policy_dir, work / "rm", prompts, resumed, 1)
    run_cli(ctx, ["train", "--config", str(cfg)], "train_first.log")
    run_cli(ctx, ["train", "--config", str(cfg), "--resume", "train.iterations=2"], "train_resume.log")
    run_cli(
        ctx,
        ["train", "--config", str(train_config(ctx, policy_dir, work / "rm", prompts, whole, 2))],
        "train_whole.log",
    )
    logs = {k: [json.loads(x) for x in open(d / "log.jsonl")] for k, d in (("resumed", resumed), ("whole", whole))}
    weights = {
        k: load_file(str(find_latest(d / "checkpoints")[0] / "trainable.safetensors"))
        for k, d in (("resumed", resumed), ("whole", whole))
    }
    diff = max(float((weights["resumed"][n].float() - w.float()).abs().max()) for n, w in weights["whole"].items())
    return {
        "steps": {k: [r["global_step"] for r in v] for k, v in logs.items()},
        "arms": {k: [r["arm_name"] for r in v] for k, v in logs.items()},
        "loss": {k: [r["loss"] for r in v] for k, v in logs.items()},
        "same_arms": [r["arm"] for r in logs["resumed"]] == [r["arm"] for r in logs["whole"]],
        "max_abs_adapter_diff": diff,
        "adapter_dtypes": sorted({str(w.dtype) for w in weights["whole"].values()}),
        "step_time_s": {k: [r["time"]["end"] for r in v] for k, v in logs.items()},
        "note": "policy.dtype=bfloat16 (weights in bf16; LoRA adapters as peft makes them); no autocast; "
        "torch.manual_seed(0) before each `laser train` (it does not seed the LoRA init)",
    }


from gpu_engines import section_engines  # noqa: E402  (benchmarks/ is on the path)

SECTION_FNS = {
    "env": section_env,
    "cuda_vs_cpu": section_cuda_vs_cpu,
    "offload": section_offload,
    "step_cost": section_step_cost,
    "train": section_train,
    "generation": section_generation,
    "engines": section_engines,
}
