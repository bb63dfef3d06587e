"""`laser bon`: best-of-n with a bandit choosing the reward model per prompt (no training).

Best-of-n is the training step with the update switched off: the same Trainer decides, samples
and scores through the reward pool, so an RM that fails is retried, masked and reported exactly
as in training (the step's ``events``). The picked RM chooses the best of the n samples; the
bandit's reward is whether that response is correct (with gold answers) or agrees with the score
ensemble's pick (without). For comparison every RM also scores the same samples, giving
``single:<rm>``, ``random`` and ``score_ensemble`` on identical responses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from laser.evaluation import best_index
from laser.rewards.base import RewardModelError
from laser.tasks.extract import is_correct
from laser.training.pairs import ensemble_scores
from laser.training.strategies.base import response_prompts


def _every_rm(trainer, step) -> np.ndarray:
    """``(K, N)`` scores of the step's samples by every RM; a failing RM is masked and its row NaN."""
    pool = trainer.pool
    matrix = np.full((len(pool.rms), len(step.samples.texts)), np.nan)
    for k in range(len(pool.rms)):
        if k in pool.down:
            continue
        try:
            matrix[k] = pool.score(k, response_prompts(step), step.samples.texts)
        except RewardModelError as exc:
            step.events.append(pool.mark_down(k, exc, trainer.selector))
    return matrix


def run_bon(trainer, show_progress: bool = True) -> dict:
    """Best-of-n over ``trainer.examples`` with ``trainer.cfg``; returns per-method accuracy and RM calls.

    Methods: ``bandit`` (the configured selector, one RM per prompt), ``single:<rm>``, ``random``
    (seeded uniform RM per prompt), ``score_ensemble`` and, for reference, ``first_sample`` (no
    selection) and ``oracle`` (any correct response among the n).
    """
    from tqdm.auto import tqdm

    cfg, examples, t = trainer.cfg, trainer.examples, trainer.cfg.train
    names, n = trainer.pool.names, t.n_samples
    labelled = all(ex.answer for ex in examples)
    rng = np.random.default_rng([cfg.seed, 17])
    picks = {m: [] for m in ["bandit", "random", "score_ensemble", "first_sample", *[f"single:{x}" for x in names]]}
    oracle, arms, events = [], [], []
    batches = range(0, len(examples), t.batch_size)
    for i in tqdm(batches, desc="best-of-n", disable=not show_progress):
        step = trainer.new_step(examples[i:i + t.batch_size])
        trainer.sample_and_score(step)
        matrix = _every_rm(trainer, step)
        items, raw = [], []
        for j, ex in enumerate(step.shard):
            sl = slice(j * n, (j + 1) * n)
            ok = [is_correct(ex.task, x, ex.answer) for x in step.samples.texts[sl]] if labelled else None
            choice = {f"single:{x}": best_index(matrix[k, sl]) for k, x in enumerate(names)}
            choice["score_ensemble"] = best_index(ensemble_scores(matrix[:, sl]))
            choice["random"] = choice[f"single:{names[int(rng.integers(len(names)))]}"]
            choice["first_sample"] = 0
            choice["bandit"] = best_index(step.scores[sl])
            for m, c in choice.items():
                picks[m].append(bool(ok[c]) if (ok is not None and c is not None)
                                else (c is not None and c == choice["score_ensemble"]))
            oracle.append(any(ok) if ok is not None else True)
            items.append((step.my_arms[j], step.contexts[j], {}))
            raw.append(float(picks["bandit"][-1]))  # metric of the picked response (or consensus)
        arms += step.my_arms
        if trainer.selector is not None:
            trainer.apply_rewards(step, items, raw)
        events += step.events
        trainer.step_in_iter += 1
    return _result(cfg, picks, oracle, arms, names, labelled, len(examples), events)


def _result(cfg, picks, oracle, arms, names, labelled, n, events) -> dict:
    t = cfg.train
    calls = {m: n * t.n_samples for m in picks if m.startswith("single:") or m in ("bandit", "random")}
    calls["score_ensemble"] = n * t.n_samples * len(names)
    calls["first_sample"] = 0
    metric = "accuracy" if labelled else "agreement_with_ensemble"
    result = {"metric": metric, "n": n, "n_samples": t.n_samples,
              "methods": {m: {metric: float(np.mean(v)), "rm_calls": calls[m]} for m, v in picks.items()},
              "selection": {names[k]: arms.count(k) / n for k in range(len(names))}, "events": events}
    if labelled:
        result["methods"]["oracle"] = {metric: float(np.mean(oracle)), "rm_calls": 0}
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "bon_results.json").write_text(json.dumps(result, indent=1))
    return result


def format_bon(result: dict) -> str:
    """The best-of-n table; with gold answers a headroom column: (m - random) / (oracle - random)."""
    metric, methods = result["metric"], result["methods"]
    rnd, orc = (methods.get(k, {}).get(metric) for k in ("random", "oracle"))
    room = orc - rnd if rnd is not None and orc is not None and orc > rnd else None
    lines = [f"{'method':<28}{metric:>26}{'RM calls':>10}" + (f"{'headroom %':>12}" if room else "")]
    for m, e in methods.items():
        lines.append(f"{m:<28}{100 * e[metric]:>25.1f}%{e['rm_calls']:>10}"
                     + (f"{100 * (e[metric] - rnd) / room:>12.0f}" if room else ""))
    lines.append("bandit selection share: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in result["selection"].items()))
    lines += [f"event: {e}" for e in result.get("events", [])]
    return "\n".join(lines)
