"""The ``laser`` command: demo, train, validate, serve-rm."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from laser.build import build_rms, load_run
from laser.config import ConfigError

log = logging.getLogger("laser")


def _at_least_one(text: str) -> int:
    """argparse type: an integer >= 1 (``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="laser",
        description="LASeR: train a language model with several reward "
        "models while a contextual bandit picks which one to trust.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run LASeR (or a baseline) from a YAML config")
    t.add_argument("--config", required=True, help="run config (YAML)")
    t.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-5 selector.name=random")

    v = sub.add_parser("validate", help="check a config and its prompt file without loading any model")
    v.add_argument("--config", help="run config (YAML); required unless --explain")
    v.add_argument("--explain", action="store_true", help="print every config key: type, default, range, help")
    v.add_argument("overrides", nargs="*")

    d = sub.add_parser("demo", help="LASeR vs the baselines on the embedded benchmark (CPU, no downloads)")
    d.add_argument("--out", default="demo_out", help="folder for results.json and logs")
    d.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ...)")
    d.add_argument("--quick", action="store_true", help="a reduced run in seconds (for tests)")
    d.add_argument(
        "--feedbacks",
        default="",
        help="extra LASeR variants by bandit feedback, e.g. "
        "loss_decrease,margin_gain (each adds a method laser:<feedback>)",
    )
    d.add_argument("--methods", default="", help="comma-separated subset of methods to run")
    d.add_argument(
        "--workers",
        type=_at_least_one,
        default=min(2, os.cpu_count() or 1),
        help="methods trained at once, one process and one torch thread each (default: 2 where there are "
        "2 cores; 1 runs them in this process); the results do not depend on it",
    )
    d.add_argument(
        "--train-sft",
        action="store_true",
        help="train the SFT start (about 2 minutes) even where laser-rm ships it (seed 0 of the default "
        "settings: the same bytes this recipe trains on torch 2.13 CPU)",
    )

    e = sub.add_parser("eval", help="greedy accuracy of a policy on a task split, as JSON")
    e.add_argument("--model", required=True, help="Hub name, local folder, or a run's final/ folder")
    e.add_argument("--gguf-file", default=None)
    e.add_argument(
        "--task",
        required=True,
        choices=["gsm8k", "strategyqa", "mmlu", "jsonl"],
        help="dataset format; jsonl = a prompt file with answer and task fields",
    )
    e.add_argument("--data", default=None, help="file or folder (default: the Hub, GSM8K/MMLU)")
    e.add_argument("--split", default="test")
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--chat-template", action="store_true")
    e.add_argument("--out", default=None, help="write the JSON result here too")

    b = sub.add_parser("bon", help="best-of-n with a bandit choosing the RM per prompt (no training)")
    b.add_argument("--config", required=True)
    b.add_argument("overrides", nargs="*")

    from laser.bench.compare import add_compare_parser

    add_compare_parser(sub)

    s = sub.add_parser("serve-rm", help="serve configured reward models over HTTP on 127.0.0.1")
    s.add_argument(
        "--config",
        required=True,
        help="YAML with a `rewards:` list and, to serve them as one routed "
        "reward, a `router:` section (docs/remote_rm.md)",
    )
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--host", default="127.0.0.1")
    return p


def cmd_validate(args) -> int:
    if args.explain:
        from laser.config import RunConfig, explain

        print("\n".join(explain(RunConfig)))
        return 0
    if not args.config:
        print("error: laser validate needs --config (or --explain)", file=sys.stderr)
        return 2
    cfg, examples = load_run(args.config, args.overrides)
    print(
        f"{args.config}: OK ({len(examples)} prompts, {len(cfg.rewards)} reward models, selector {cfg.selector.name})"
    )
    return 0


def cmd_train(args) -> int:
    from pathlib import Path

    from laser.build import build
    from laser.routing.checkpoint import find_latest

    cfg, examples = load_run(args.config, args.overrides)
    existing, _ = find_latest(Path(cfg.output_dir) / "checkpoints")
    if existing is not None and not args.resume:
        print(
            f"error: {cfg.output_dir} already holds checkpoint {existing.name}; pass --resume to continue "
            "it or set output_dir to a new folder",
            file=sys.stderr,
        )
        return 2
    if existing is not None:  # a checkpoint of another set-up is refused before anything loads
        from laser.training.checkpoint import check_resume_config

        problems = check_resume_config(existing, cfg)
        if problems:
            raise ConfigError(problems, args.config)
    trainer = build(cfg, examples)
    summary = trainer.run()
    if trainer.acc.is_main_process:
        print(json.dumps(summary))
    trainer.acc.end_training()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # a clean exit for every rank (no abort at interpreter shutdown)
    return 0


def cmd_eval(args) -> int:
    from laser.evaluation import evaluate_policy, load_policy
    from laser.tasks.datasets import load_task, read_prompts_jsonl

    if args.task == "jsonl":
        examples = read_prompts_jsonl(args.data)[: args.limit]
    else:
        examples = load_task(
            args.task, args.data, split=args.split, limit=args.limit, seed=args.seed if args.limit else None
        )
    policy = load_policy(args.model, gguf_file=args.gguf_file, chat_template=args.chat_template)
    result = evaluate_policy(policy, examples, args.max_new_tokens, args.batch_size)
    summary = {
        "model": args.model,
        "task": args.task,
        "split": args.split,
        "n": result["n"],
        "accuracy": result["accuracy"],
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**summary, "correct": result["correct"], "responses": result["responses"]}, f, indent=1)
    return 0


def cmd_bon(args) -> int:
    from laser.bon import format_bon, run_bon
    from laser.build import context_fn_for, load_policy

    cfg, examples = load_run(args.config, args.overrides)
    print(format_bon(run_bon(cfg, load_policy(cfg), build_rms(cfg, examples), examples, context_fn_for(cfg))))
    return 0


def cmd_demo(args) -> int:
    from laser.bench.demo import run_demo

    feedbacks = [f for f in args.feedbacks.split(",") if f]
    methods = [m for m in args.methods.split(",") if m] or None
    run_demo(
        out=args.out,
        seeds=args.seeds,
        quick=args.quick,
        feedbacks=feedbacks,
        methods=methods,
        workers=args.workers,
        train_sft=args.train_sft,
    )
    return 0


def cmd_compare(args) -> int:
    from laser.bench.compare import compare_main

    return compare_main(args)


def cmd_serve_rm(args) -> int:
    from laser.rewards.server import serve_rm_main

    serve_rm_main(args.config, args.port, host=args.host)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    handlers = {
        "train": cmd_train,
        "validate": cmd_validate,
        "demo": cmd_demo,
        "serve-rm": cmd_serve_rm,
        "eval": cmd_eval,
        "bon": cmd_bon,
        "compare": cmd_compare,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the after-load check (model shapes) of laser.training.checkpoint
        if exc.__class__.__name__ in ("ResumeError", "AllRewardModelsDown", "EngineError"):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    except ValueError as exc:  # data errors name file:line and field
        if exc.__class__.__name__ in ("DataError",):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
