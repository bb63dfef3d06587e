"""`laser bon`: best-of-n with a bandit choosing the reward model per prompt (no training).

See :mod:`laser.evaluation` for the feedback the bandit gets and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from laser.evaluation import best_index
from laser.tasks.extract import is_correct
from laser.training.pairs import ensemble_scores


def run_bon(cfg, policy, rms: list, examples: list, context_fn=None, show_progress: bool = True) -> dict:
    """Best-of-n over ``examples``; returns per-method accuracy (or agreement) and RM calls.

    Methods: ``bandit`` (cfg.selector, one RM per prompt), ``single:<rm>``, ``random`` (seeded
    uniform RM per prompt), ``score_ensemble`` and, for reference, ``first_sample`` (no
    selection) and ``oracle`` (any correct response among the n).
    """
    from tqdm.auto import tqdm

    from laser.bandits import QuantileNormalizer, make_selector

    t = cfg.train
    names = [rm.name for rm in rms]
    labelled = all(ex.answer for ex in examples)
    rng = np.random.default_rng([cfg.seed, 17])
    ctx_fn = context_fn or policy.context
    dim = int(np.asarray(ctx_fn([examples[0].prompt])).shape[1])
    kwargs = dict(cfg.selector.kwargs)
    if cfg.selector.name in ("linucb", "discounted_linucb", "sliding_linucb"):
        kwargs.setdefault("alpha", cfg.selector.alpha)
    selector = make_selector(cfg.selector.name, len(rms), dim, seed=cfg.seed, **kwargs)
    normalizer = QuantileNormalizer(cfg.selector.normalizer_low, cfg.selector.normalizer_high)
    picks = {m: [] for m in ["bandit", "random", "score_ensemble", "first_sample", *[f"single:{n}" for n in names]]}
    oracle, arms = [], []
    batches = range(0, len(examples), t.batch_size)
    for step, i in enumerate(tqdm(batches, desc="best-of-n", disable=not show_progress)):
        chunk = examples[i:i + t.batch_size]
        prompts = [ex.prompt for ex in chunk]
        contexts = np.asarray(ctx_fn(prompts), dtype=np.float64)
        samples = policy.sample(prompts, t.n_samples, t.temperature, t.top_p, t.max_new_tokens,
                                seed=int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0]))
        flat_prompts = [prompts[j] for j in samples.prompt_index]
        matrix = np.stack([np.asarray(rm.score(flat_prompts, samples.texts), dtype=np.float64) for rm in rms])
        for j, ex in enumerate(chunk):
            sl = slice(j * t.n_samples, (j + 1) * t.n_samples)
            texts = samples.texts[sl]
            ok = [is_correct(ex.task, x, ex.answer) for x in texts] if labelled else None
            choice = {f"single:{n}": best_index(matrix[k, sl]) for k, n in enumerate(names)}
            choice["score_ensemble"] = best_index(ensemble_scores(matrix[:, sl]))
            choice["random"] = choice[f"single:{names[int(rng.integers(len(rms)))]}"]
            choice["first_sample"] = 0
            arm = int(selector.select(contexts[j]))
            choice["bandit"] = choice[f"single:{names[arm]}"]
            arms.append(arm)
            for m, c in choice.items():
                picks[m].append(bool(ok[c]) if (ok is not None and c is not None)
                                else (c is not None and c == choice["score_ensemble"]))
            oracle.append(any(ok) if ok is not None else True)
            reward = picks["bandit"][-1]  # metric of the picked response (or consensus without labels)
            selector.update(arm, contexts[j], normalizer.normalize(float(reward)))
    n = len(examples)
    calls = {m: n * t.n_samples for m in picks if m.startswith("single:") or m in ("bandit", "random")}
    calls["score_ensemble"] = n * t.n_samples * len(rms)
    calls["first_sample"] = 0
    metric = "accuracy" if labelled else "agreement_with_ensemble"
    result = {"metric": metric, "n": n, "n_samples": t.n_samples,
              "methods": {m: {metric: float(np.mean(v)), "rm_calls": calls[m]} for m, v in picks.items()},
              "selection": {names[k]: arms.count(k) / n for k in range(len(rms))}}
    if labelled:
        result["methods"]["oracle"] = {metric: float(np.mean(oracle)), "rm_calls": 0}
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "bon_results.json").write_text(json.dumps(result, indent=1))
    return result


def format_bon(result: dict) -> str:
    metric = result["metric"]
    lines = [f"{'method':<28}{metric:>26}{'RM calls':>10}"]
    for m, e in result["methods"].items():
        lines.append(f"{m:<28}{100 * e[metric]:>25.1f}%{e['rm_calls']:>10}")
    lines.append("bandit selection share: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in result["selection"].items()))
    return "\n".join(lines)
