"""`laser compare`: methods x seeds on the same data, resumable, with the paper's analyses.

Layout of ``OUT``::

    runs/<variant>/<method>/seed<s>/   one job: progress.json (per-iteration evaluations, wall
                                       time), result.json (written last: the job is finished),
                                       and the Trainer's run folder with its checkpoint and log
    runs/sft/seed<s>.json              the SFT start's per-prompt test correctness
    runs/agreement/seed<s>.json        RM agreement counts on SFT samples
    results.json, report.md, *.png     the report (laser.bench.compare.report)

Variants: ``main``; ``noise=<sigma>`` (Gaussian noise on one or all RMs' scores);
``add=<rm>@<step>`` (that RM joins at a global step); ``judged`` (prompts without gold or
domain, compared by a pairwise judge). Accuracy per iteration comes from evaluating after every
iteration: each job trains iteration by iteration, resuming the Trainer from its own checkpoint
with ``iterations`` one larger (bit-identical to an uninterrupted run on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from laser.bench.compare import methods as M
from laser.bench.compare.user import UserConfig
from laser.bench.runs import DemoSettings, benchmark_sets, demo_rms
from laser.config import option


@dataclass
class CompareConfig:
    """Everything `laser compare` runs; a YAML file holds the same keys (``settings`` and ``user`` nested)."""

    out: str = option("compare_out", "report folder; reruns skip finished (method, seed) jobs")
    seeds: int = option(3, "number of seeds (seeds 0, 1, ... run)", ge=1)
    methods: list[str] = option(
        help="methods to run (empty: all, laser.bench.compare.methods.default_methods)", factory=list
    )
    settings: DemoSettings = option(help="sizes of each benchmark run", factory=DemoSettings)
    noise: list[float] = option(
        help="Gaussian noise sigmas on RM scores: each > 0 reruns analysis_methods", factory=lambda: [0.0], ge=0
    )
    noise_rm: str = option("all", "RM whose scores get the noise, or 'all'")
    add_rm: str | None = option(None, "an RM that joins the run late (with add_at)")
    add_at: int | None = option(None, "global step at which add_rm joins", ge=2)
    judged: bool = option(False, "also: prompts without gold, laser vs judged_baseline, judge win rate")
    judged_baseline: str = option("score_ensemble", "the baseline of the judged comparison")
    analysis_methods: list[str] = option(
        help="methods of the noise / add-RM analyses",
        factory=lambda: ["laser", "laser:neg_loss", "round_robin", "random", "score_ensemble"],
    )
    n_label_per_domain: int = option(50, "labelled prompts per domain for classifier and bayes_router", ge=1)
    eta: float = option(0.5, "step size of online_ensemble", gt=0)
    n_boot: int = option(2000, "bootstrap resamples of the intervals", ge=1)
    user: UserConfig | None = option(
        None, "your own run config and test set instead of the benchmark (laser.bench.compare.user)"
    )
    step_cost: str | None = option(
        None, "a `benchmarks/step_cost.py --json` file: the cost table with RMs of policy-like cost"
    )


def check_config(cfg: CompareConfig, rm_names: list[str]) -> list[str]:
    """Every problem with a benchmark compare config beyond types and ranges, one line each."""
    p = [f"methods: {e}" for m in cfg.methods if (e := M.check_method(m, rm_names))]
    if cfg.step_cost:
        from laser.bench.compare.report import load_step_cost

        try:
            load_step_cost(cfg.step_cost)
        except ValueError as exc:
            p.append(str(exc))
    p += [f"analysis_methods: {e}" for m in cfg.analysis_methods if (e := M.check_method(m, rm_names))]
    if cfg.noise_rm != "all" and cfg.noise_rm not in rm_names:
        p.append(f"noise_rm: {cfg.noise_rm!r} is not 'all' or an RM ({', '.join(rm_names)})")
    if (cfg.add_rm is None) != (cfg.add_at is None):
        p.append("add_rm / add_at: give both (an RM name and the global step it joins at) or neither")
    elif cfg.add_rm is not None and cfg.add_rm not in rm_names:
        p.append(f"add_rm: {cfg.add_rm!r} is not an RM ({', '.join(rm_names)})")
    if e := M.check_method(cfg.judged_baseline, rm_names):
        p.append(f"judged_baseline: {e}")
    return p


def load_compare_config(path: str | None, overrides: list[str] = (), **flags) -> CompareConfig:
    """A :class:`CompareConfig` from a YAML file (optional), flags and dotted overrides.

    Args:
        path: a YAML file with CompareConfig's keys, or None.
        overrides: ``key.sub=value`` strings, as ``laser train`` takes them (``settings.iterations=2``).
        **flags: CompareConfig keys (None = not given); ``settings`` may be a :class:`DemoSettings`.

    Raises:
        ConfigError: unknown keys, wrong types, bad values: every one, named by its dotted key,
            before anything runs.
    """
    from laser.config import ConfigError, apply_overrides, check_fields, parse_section, read_yaml

    data = read_yaml(path) if path else {}
    data.update(
        {k: dataclasses.asdict(v) if isinstance(v, DemoSettings) else v for k, v in flags.items() if v is not None}
    )
    apply_overrides(data, overrides, path)
    if data.get("settings", {}) is None:  # an empty `settings:` section: the defaults
        del data["settings"]
    problems: list[str] = []
    cfg = parse_section(CompareConfig, data, "", problems)
    problems += check_fields(cfg)
    if cfg.user is not None:
        from laser.bench.compare.user import check_user

        problems += check_user(cfg)[0]
    else:
        from laser.bench.rms import make_demo_rms

        problems += check_config(cfg, [rm.name for rm in make_demo_rms()])
    if problems:
        raise ConfigError(problems, path)
    return cfg


# ----------------------------------------------------------------------------- per seed
class SeedData:
    """The SFT start, train/test prompts and cached SFT evaluation and RM agreement of one seed."""

    def __init__(self, cfg: CompareConfig, seed: int, runs: Path):
        from laser.bench.policy import build_tiny_policy

        s = cfg.settings
        self.seed = seed
        self.policy_dir = build_tiny_policy(seed=seed, target=s.sft_target)
        self.train, self.test = benchmark_sets(s, seed)
        self.domain_of = {ex.id: ex.group for ex in self.train}
        self.sft = _cached(runs / "sft" / f"seed{seed}.json", lambda: evaluate(self._load(), self.test, s))
        self.agreement = _cached(runs / "agreement" / f"seed{seed}.json", lambda: self._agreement(s))

    def _load(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(self.policy_dir), AutoTokenizer.from_pretrained(self.policy_dir)

    def _agreement(self, s: DemoSettings) -> dict:
        from laser.bench.compare.analyses import agreement_counts
        from laser.bench.policy import generate

        model, tok = self._load()
        prompts = [ex.prompt for ex in self.train]
        texts = generate(
            model,
            tok,
            prompts,
            s.max_new_tokens,
            greedy=False,
            temperature=0.8,
            num_return_sequences=s.n_samples,
            seed=self.seed,
        )
        rep = [p for p in prompts for _ in range(s.n_samples)]
        scores = np.stack([np.asarray(rm.score(rep, texts)) for rm in demo_rms(s, self.seed)])
        n = s.n_samples
        correct = np.array([[float(ex.correct(texts[i * n + j])) for j in range(n)] for i, ex in enumerate(self.train)])
        return agreement_counts(scores.reshape(len(scores), -1, n), correct)


def _cached(path: Path, compute):
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return value


def evaluate(model_tok, test, s: DemoSettings, keep_texts: bool = False) -> dict:
    """Greedy test answers: per-prompt correctness and accuracy per domain (macro average)."""
    from laser.bench.policy import generate
    from laser.bench.tasks import format_prompt
    from laser.tasks.metrics import example_accuracy

    model, tok = model_tok
    texts = generate(model, tok, [format_prompt(e) for e in test], s.max_new_tokens)
    scored = example_accuracy(test, texts)  # Example.correct: the one correctness
    out = {
        "accuracy": scored["accuracy"],
        "correct": [int(c) for c in scored["correct"]],
        "ids": [e.id for e in test],
        "domains": [e.group for e in test],
    }
    return {**out, "texts": texts} if keep_texts else out


# ----------------------------------------------------------------------------- variants and jobs
def variants(cfg: CompareConfig, rm_names: list[str]) -> list[dict]:
    """(tag, methods, sigma, add spec, judged) of every variant this config runs."""
    methods = cfg.methods or M.default_methods(rm_names)
    out = [{"tag": "main", "methods": methods, "sigma": 0.0, "add": None, "judged": False}]
    for sigma in sorted(set(cfg.noise)):
        if sigma > 0:
            out.append(
                {
                    "tag": f"noise={sigma:g}",
                    "methods": cfg.analysis_methods,
                    "sigma": sigma,
                    "add": None,
                    "judged": False,
                }
            )
    if cfg.add_rm is not None:
        keep = [m for m in cfg.analysis_methods if m != f"single:{cfg.add_rm}"]
        out.append(
            {
                "tag": f"add={cfg.add_rm}@{cfg.add_at}",
                "methods": keep,
                "sigma": 0.0,
                "add": (cfg.add_rm, cfg.add_at),
                "judged": False,
            }
        )
    if cfg.judged:
        out.append(
            {"tag": "judged", "methods": ["laser", cfg.judged_baseline], "sigma": 0.0, "add": None, "judged": True}
        )
    return out


def _rms_for(variant: dict, cfg: CompareConfig, seed: int) -> list:
    from laser.rewards.factory import NoisyRM

    rms = demo_rms(cfg.settings, seed)
    if variant["sigma"] > 0:
        rms = [NoisyRM(rm, variant["sigma"], seed=seed) if cfg.noise_rm in ("all", rm.name) else rm for rm in rms]
    return rms


def run_job(cfg: CompareConfig, variant: dict, method: str, data: SeedData, runs: Path) -> dict:
    """Train and evaluate one (variant, method, seed), iteration by iteration; resumable."""
    from laser.bench.compare.judged import strip_gold

    job = runs / variant["tag"] / method.replace(":", "_").replace("@", "_at_") / f"seed{data.seed}"
    if (job / "result.json").exists():
        return json.loads((job / "result.json").read_text())
    job.mkdir(parents=True, exist_ok=True)
    prog_path = job / "progress.json"
    prog = json.loads(prog_path.read_text()) if prog_path.exists() else {"evals": [], "wall_time_s": 0.0}
    rms = _rms_for(variant, cfg, data.seed)
    names = [rm.name for rm in rms]
    specs = (
        [{"add_at_step": variant["add"][1]} if n == variant["add"][0] else {} for n in names]
        if variant["add"]
        else None
    )
    train_set = strip_gold(data.train) if variant["judged"] else data.train
    clf, label_share = None, None
    if method in ("classifier", "bayes_router"):  # the same labelled split, the same label budget
        if prog["evals"]:  # restored from the checkpoint
            clf = M.empty_labelled_selector(method, data.policy_dir, len(rms), data.seed)
        else:
            clf, label_share = M.fit_labelled_selector(
                method, data.policy_dir, rms, cfg.settings, cfg.n_label_per_domain, data.seed
            )
            prog["label_share"] = label_share
    run_dir = None
    for it in range(len(prog["evals"]) + 1, cfg.settings.iterations + 1):
        t = time.perf_counter()
        _, policy, run_dir = M.train(
            method,
            data.seed,
            data.policy_dir,
            train_set,
            names,
            dataclasses.replace(cfg.settings, iterations=it),
            job,
            rms,
            specs,
            classifier=clf,
            eta=cfg.eta,
        )
        prog["wall_time_s"] += time.perf_counter() - t
        prog["evals"].append(
            evaluate((policy.model, policy.tokenizer), data.test, cfg.settings, keep_texts=variant["judged"])
        )
        prog["run_dir"] = str(run_dir)
        prog_path.write_text(json.dumps(prog))
    result = {
        "method": method,
        "variant": variant["tag"],
        "seed": data.seed,
        "wall_time_s": prog["wall_time_s"],
        "accuracy_by_iteration": [data.sft["accuracy"]] + [e["accuracy"] for e in prog["evals"]],
        **{k: prog["evals"][-1][k] for k in ("accuracy", "correct", "ids", "domains")},
        "label_share": prog.get("label_share"),
        "texts": prog["evals"][-1].get("texts"),
        **_read_log(Path(prog["run_dir"]) / "log.jsonl", data.domain_of),
    }
    (job / "result.json").write_text(json.dumps(result))
    return result


def _read_log(path: Path, domain_of: dict[str, str]) -> dict:
    """Per-step arms (with each prompt's domain), RM calls and, for the online ensemble, weights."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [
        {
            "global_step": r["global_step"],
            "iteration": r["iteration"],
            "arms": r["prompt_arms"],
            "domains": [domain_of[p] for p in r["prompt_ids"]],
            "weights": r.get("weights"),
        }
        for r in records
    ]
    calls = records[-1]["responses_scored"]
    gold = [r["pair_accuracy"] for r in records if r.get("pair_accuracy") is not None]
    return {
        "steps": steps,
        "responses_scored_per_rm": calls,
        "responses_scored": int(sum(calls)),
        "feedback": records[-1].get("feedback"),
        "pair_gold": float(np.mean(gold)) if gold else None,
        "probes": int(sum(r.get("probes") or 0 for r in records)),
        "label_model_s": [r["label_model_s"] for r in records if r.get("label_model_s") is not None],
    }


def run_compare(cfg: CompareConfig) -> dict:
    """Run every (variant, method, seed) not finished yet, then write the report; returns results."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.user is not None:  # the user's own model: keep torch's threads; one job trains in one go
        from laser.bench.compare.user import run_user_compare

        return run_user_compare(cfg)
    torch.set_num_threads(1)  # the tiny model is faster on one thread on a shared 2-core machine
    logger = logging.getLogger("laser")
    level = logger.level
    logger.setLevel(logging.WARNING)  # every iteration resumes: "resumed from ..." lines would drown the table
    try:
        return _run_all(cfg)
    finally:
        logger.setLevel(level)


def _run_all(cfg: CompareConfig) -> dict:
    from laser.bench.compare import report
    from laser.bench.rms import make_demo_rms

    rm_names = [rm.name for rm in make_demo_rms()]
    problems = check_config(cfg, rm_names)
    if problems:
        raise ValueError("invalid compare config:\n  " + "\n  ".join(problems))
    out = Path(cfg.out)
    runs = out / "runs"
    t0 = time.perf_counter()
    data: dict[int, SeedData] = {}
    jobs: dict[str, dict[str, list[dict]]] = {}
    plan = variants(cfg, rm_names)
    total, done = sum(len(v["methods"]) for v in plan) * cfg.seeds, 0
    for v in plan:
        for method in v["methods"]:
            for seed in range(cfg.seeds):
                if seed not in data:
                    data[seed] = SeedData(cfg, seed, runs)
                t = time.perf_counter()
                res = run_job(cfg, v, method, data[seed], runs)
                jobs.setdefault(v["tag"], {}).setdefault(method, []).append(res)
                done += 1
                print(
                    f"[{done:3d}/{total}] {v['tag']:<14} {method:<24} seed {seed}: avg acc "
                    f"{res['accuracy']['average']:.3f} (SFT {data[seed].sft['accuracy']['average']:.3f}) "
                    f"train {res['wall_time_s']:5.1f}s ({time.perf_counter() - t:4.1f}s now)",
                    flush=True,
                )
    return report.write_report(cfg, jobs, data, rm_names, out, wall_time_s=time.perf_counter() - t0)
