"""`laser compare` on a user's own set-up: a ``laser train`` run config and a test set.

The compare YAML's ``user:`` section::

    user:
      run: my_run.yaml          # a normal `laser train` config (policy, rewards, data, train)
      test: {task: gsm8k, path: data/test.jsonl, split: test, limit: 200}   # task: gsm8k|strategyqa|mmlu|jsonl
      max_new_tokens: 256       # greedy evaluation length
      batch_size: 16            # evaluation batch size

Each method is the run config with its selector (and for ``laser:<feedback>`` its bandit
feedback) overridden; each (method, seed) job trains from the run config's policy with ``seed``
and ``output_dir`` overridden, then evaluates greedy accuracy on the test set. Layout of ``OUT``::

    runs/user/<method>/seed<s>/run/          the Trainer's run folder (checkpoints, log.jsonl, final/)
    runs/user/<method>/seed<s>/result.json   written last: the job is finished (reruns skip it)
    runs/user/sft.json                       the start policy's greedy test correctness
    results.json, report.md                  the report

Relative paths inside the run config resolve against the working directory, as in ``laser train``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from laser.bench.compare import methods as M
from laser.config import option


@dataclass
class UserTestSet:
    """The ``user.test`` section: where the test prompts come from."""

    task: Literal["gsm8k", "strategyqa", "mmlu", "jsonl"] | None = option(
        None, "format of the test set (required); jsonl = a prompt file with answer and task fields"
    )
    path: str | None = option(None, "file or folder (required for jsonl; default: the Hub for gsm8k/mmlu)")
    split: str | None = option(None, "split file to pick from a task folder")
    limit: int | None = option(None, "use at most N test prompts (drawn with seed 0)", ge=1)


@dataclass
class UserConfig:
    """The ``user:`` section of a compare config: the user's own run config and test set."""

    run: str = option("", "a `laser train` run config (YAML; required)")
    test: UserTestSet | None = option(None, "the test set (required)")
    max_new_tokens: int = option(256, "greedy evaluation length", ge=1)
    batch_size: int = option(16, "evaluation batch size", ge=1)


SKIPPED = (
    "accuracy per iteration (each job is trained in one go)",
    ("RM agreement (needs sampled, labelled responses of the benchmark)"),
    "noise / add-RM / judged analyses",
    "plots",
)


def default_user_methods(rm_names: list[str]) -> list[str]:
    """LASeR, the paper's LASeR, the per-prompt variant, every baseline and each single RM."""
    return [M.PLAIN[0], "laser:neg_loss", *M.PLAIN[1:], *[f"single:{n}" for n in rm_names]]


def check_user_method(method: str, rm_names: list[str]) -> str | None:
    """A problem with a method name on a user set-up, or None when it is valid."""
    if method in ("classifier", "bayes_router"):
        return f"{method}: needs the benchmark's labelled split; not available with user:"
    if method in ("oracle", "verifier"):
        return (
            f"{method}: needs the benchmark's design (which RM is right per domain / the gold-answer RM); "
            "with user:, add it to your run config's rewards and compare single:<rm> instead"
        )
    return M.check_method(method, rm_names)


def _read_yaml(path: str) -> dict:
    """The run config file as plain data (already validated by :func:`check_user`)."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8-sig")) or {}


def check_user(cfg) -> tuple[list[str], list[str]]:
    """Every problem of a compare config with a ``user:`` section, and the run config's RM names.

    Nothing is loaded but YAML and the prompt file's existence checks of the run config.
    """
    from laser.config import ConfigError, load_config
    from laser.rewards.factory import check_specs

    u, p, rm_names = cfg.user, [], []
    if not u.run:
        p.append("user.run: missing (a `laser train` run config)")
    elif not Path(u.run).is_file():
        p.append(f"user.run: run config not found: {u.run}")
    else:
        try:
            rcfg = load_config(u.run)
            rm_names = [r.get("name", "") for r in rcfg.rewards]
            p += [f"user.run ({u.run}): {e}" for e in check_specs(rcfg.rewards)]
        except ConfigError as exc:
            p += [f"user.run ({u.run}): {e}" for e in exc.problems]
        except ValueError as exc:
            p.append(f"user.run ({u.run}): {exc}")
    t = u.test
    if t is None:
        p.append("user.test: missing (keys task, path, split, limit)")
    else:
        if t.task is None:
            p.append("user.test.task: missing (gsm8k, strategyqa, mmlu or jsonl)")
        if t.task == "jsonl" and not t.path:
            p.append("user.test.path: required for task jsonl")
        if t.path and not Path(t.path).exists():
            p.append(f"user.test.path: not found: {t.path}")
    if rm_names:
        p += [f"methods: {e}" for m in cfg.methods if (e := check_user_method(m, rm_names))]
    if any(s > 0 for s in cfg.noise) or cfg.add_rm is not None or cfg.judged:
        p.append("noise / add_rm / judged: benchmark-only analyses; not available with user:")
    return p, rm_names


def load_test(u: UserConfig) -> list:
    """The test examples of a ``user:`` section."""
    from laser.tasks.datasets import load_task, read_prompts_jsonl

    t = u.test
    if t.task == "jsonl":
        ex = read_prompts_jsonl(t.path)
        return ex[: t.limit] if t.limit else ex
    return load_task(t.task, t.path, split=t.split, limit=t.limit, seed=0 if t.limit else None)


def _slug(method: str) -> str:
    return method.replace(":", "_").replace("@", "_at_")


def run_user_job(cfg, method: str, seed: int, test: list, runs: Path) -> dict:
    """Train one (method, seed) on the user's run config and evaluate it; skipped when finished."""
    from laser.build import build, method_config
    from laser.config import load_config
    from laser.evaluation import evaluate_policy

    job = runs / _slug(method) / f"seed{seed}"
    if (job / "result.json").exists():
        return json.loads((job / "result.json").read_text())
    u = cfg.user
    data = copy.deepcopy(_read_yaml(u.run))
    data["selector"], data["train"] = method_config(method, data.get("selector"), data.get("train"))
    data["seed"], data["output_dir"] = seed, str(job / "run")
    rcfg = load_config(data=data)
    t = time.perf_counter()
    trainer = build(rcfg, show_progress=False)
    summary = trainer.run()
    examples = trainer.examples
    wall = time.perf_counter() - t
    ev = evaluate_policy(trainer.policy, test, u.max_new_tokens, u.batch_size, show_progress=False)
    group = {ex.id: ex.group for ex in examples}
    log = [json.loads(x) for x in (job / "run" / "log.jsonl").read_text().splitlines() if x.strip()]
    result = {
        "method": method,
        "seed": seed,
        "wall_time_s": wall,
        "accuracy": ev["accuracy"],
        "correct": [int(c) for c in ev["correct"]],
        "ids": [e.id for e in test],
        "domains": [e.group for e in test],
        "responses_scored_per_rm": summary["responses_scored"],
        "responses_scored": int(sum(summary["responses_scored"])),
        "feedback": log[-1].get("feedback") if log else None,
        "steps": [
            {
                "global_step": r["global_step"],
                "iteration": r["iteration"],
                "arms": r["prompt_arms"],
                "domains": [group.get(i, "?") for i in r["prompt_ids"]],
            }
            for r in log
        ],
    }
    (job / "result.json").write_text(json.dumps(result))
    return result


def _sft(cfg, test: list, runs: Path) -> dict:
    """The start policy's greedy test correctness (cached; greedy decoding needs no seed)."""
    from laser.config import load_config
    from laser.evaluation import evaluate_policy
    from laser.policy.model import Policy, load_model_and_tokenizer

    path = runs / "sft.json"
    if path.exists():
        return json.loads(path.read_text())
    rcfg = load_config(cfg.user.run)
    policy = Policy(*load_model_and_tokenizer(rcfg.policy), chat_template=rcfg.policy.chat_template)
    ev = evaluate_policy(policy, test, cfg.user.max_new_tokens, cfg.user.batch_size, show_progress=False)
    res = {
        "seed": 0,
        "accuracy": ev["accuracy"],
        "correct": [int(c) for c in ev["correct"]],
        "ids": [e.id for e in test],
        "domains": [e.group for e in test],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res))
    return res


def run_user_compare(cfg) -> dict:
    """Every (method, seed) of a ``user:`` compare config not finished yet, then the report."""
    from laser.bench.compare import analyses as A
    from laser.bench.compare.report import TESTS, format_table

    problems, rm_names = check_user(cfg)
    if problems:
        raise ValueError("invalid compare config:\n  " + "\n  ".join(problems))
    out = Path(cfg.out)
    runs = out / "runs" / "user"
    t0 = time.perf_counter()
    test = load_test(cfg.user)
    sft = _sft(cfg, test, runs)
    methods = cfg.methods or default_user_methods(rm_names)
    jobs: dict[str, list[dict]] = {}
    total = len(methods) * cfg.seeds
    for method in methods:
        for seed in range(cfg.seeds):
            t = time.perf_counter()
            res = run_user_job(cfg, method, seed, test, runs)
            jobs.setdefault(method, []).append(res)
            print(
                f"[{sum(map(len, jobs.values())):3d}/{total}] {method:<24} seed {seed}: acc "
                f"{res['accuracy']['average']:.3f} (start {sft['accuracy']['average']:.3f}) "
                f"train {res['wall_time_s']:6.1f}s ({time.perf_counter() - t:5.1f}s now)",
                flush=True,
            )
    domains = sorted({d for r in next(iter(jobs.values())) for d in r["domains"]})
    res = {
        "user": dataclasses.asdict(cfg.user),
        "seeds": list(range(cfg.seeds)),
        "rms": rm_names,
        "domains": domains,
        "n_test": len(test),
        "tests": TESTS,
        "skipped": list(SKIPPED),
        "sft": {"accuracy": A.method_summary([sft], domains, cfg.n_boot)},
        "methods": {},
        "selection": {},
    }
    for m, rs in jobs.items():
        e = {
            "accuracy": A.method_summary(rs, domains, cfg.n_boot),
            "per_seed": {str(r["seed"]): r["accuracy"]["average"] for r in rs},
            "responses_scored": float(np.mean([r["responses_scored"] for r in rs])),
            "wall_time_s": float(np.mean([r["wall_time_s"] for r in rs])),
            "wall_time_std": float(np.std([r["wall_time_s"] for r in rs])),
            "feedback": rs[0].get("feedback"),
        }
        if m != "laser" and "laser" in jobs:
            e["vs_laser"] = A.paired_test(jobs["laser"], rs)
        res["methods"][m] = e
        if M.selects_arms(m) and any(r["steps"] for r in rs):
            res["selection"][m] = A.selection_shares(rs, rm_names)
    if hr := A.headroom(jobs):  # an `oracle` method (selector.kwargs.arms_by_group) and `random` ran
        res["oracle_vs_random"] = hr["oracle_vs_random"]
        for m, share in hr["methods"].items():
            if m in res["methods"]:
                res["methods"][m]["headroom"] = share
    res["wall_time_s"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "report.md").write_text(render_user(res))
    print(format_table(res))
    print(f"\nreport: {out / 'report.md'}  wall time {res['wall_time_s']:.0f}s")
    return res


def render_user(res: dict) -> str:
    """The Markdown report of a user compare run."""
    from laser.bench.compare.markdown import _p, _table, cost_table, headroom_table, paired_table

    doms, u = res["domains"], res["user"]
    lines = [
        "# laser compare report (user set-up)",
        "",
        (
            f"Run config `{u['run']}`; test set {u['test'].get('task')} `{u['test'].get('path') or 'Hub'}` "
            f"({res['n_test']} prompts); seeds {res['seeds']}; RMs {', '.join(res['rms'])}. Wall time of this "
            f"invocation {res['wall_time_s']:.0f} s (finished jobs are not rerun)."
        ),
        "",
        "## Accuracy (%)",
        "",
        (
            "Greedy test accuracy: mean over seeds x test prompts, +- the std of the per-seed accuracies, and "
            "the 95% bootstrap interval. `sft` is the run config's start policy."
        ),
        "",
    ]
    rows = [
        [
            name,
            *[
                f"{_p(e['accuracy'][d]['mean'])} +-{_p(e['accuracy'][d]['std_seeds'])} "
                f"[{_p(e['accuracy'][d]['ci_low'])}, {_p(e['accuracy'][d]['ci_high'])}]"
                for d in [*doms, "average"]
            ],
        ]
        for name, e in [("sft", res["sft"]), *res["methods"].items()]
    ]
    lines += _table(["method", *doms, "average"], rows)
    lines += paired_table(res["methods"], res["tests"])
    lines += headroom_table(res)
    lines += cost_table(res["methods"])
    if res["selection"]:
        lines += [
            "## Which RM each selecting method used",
            "",
            "Share of each train domain's prompts scored by each RM (all iterations, seeds pooled).",
            "",
        ]
        lines += _table(
            ["method", "domain", *res["rms"]],
            [
                [m, d, *[_p(r[n]) for n in res["rms"]]]
                for m, sel in res["selection"].items()
                for d, r in sel["by_domain"].items()
            ],
        )
    lines += [
        "## Not in this report",
        "",
        "Benchmark-only parts skipped for a user set-up: " + "; ".join(res["skipped"]) + ".",
        "",
    ]
    return "\n".join(lines)
