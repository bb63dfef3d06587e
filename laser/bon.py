"""`laser bon`: best-of-n with a bandit choosing the reward model per prompt (no training).

An adapter on the routing core, with no Trainer: per mini-batch the policy samples n responses
per prompt, the core's :class:`~laser.routing.Router` decides one RM per prompt and scores each
prompt's responses with that RM only (an RM that fails is masked and the batch decided again, as
in training), and the picked RM's best response is kept. The bandit's reward is whether that
response is correct (with gold answers) or agrees with the score ensemble's pick (without).

With ``selector.name: reliability`` (label-free) the probe prompts are scored by every RM that is
up and the others by their group's best RM only (groups: ``Example.group``); the probes' votes
teach the router after each mini-batch (:mod:`laser.routing.strategies.reliability`). Labelled
pairs (``selector.kwargs.labelled_pairs``) are scored once by every RM before the first prompt
(their cost is in ``pool``, not in ``bandit``'s routed cost).

For comparison (``single:<rm>``, ``random``, ``score_ensemble``, ``oracle``) every other RM
scores the same responses once: RM k scores only the responses the routing did not already have
it score, so every response is scored exactly once per RM and no call is repeated. Each method's
``responses_scored`` is what it would cost on its own: n per prompt per RM it uses, and for
``bandit`` the routing's measured work (probes included); the pool's actual totals are in ``pool``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from laser.evaluation import best_index
from laser.rewards.base import RewardModelError
from laser.routing import Batch, RewardPool, Router, Unit, make_strategy
from laser.routing.labelled import score_strategy_pairs
from laser.routing.outcome import Outcome
from laser.routing.pairs import ensemble_scores
from laser.training.records import step_seed


def _every_rm(router: Router, batch: Batch) -> np.ndarray:
    """``(K, N)`` scores of every RM: the routed scores reused, the rest scored once; a failing RM
    is masked and its row NaN."""
    pool = router.pool
    matrix = batch.extra.get("matrix")
    if matrix is not None and "scored" not in batch.extra:  # an ensemble strategy had every RM score
        return matrix
    if matrix is not None:  # reliability: probes by every RM, the rest by one
        matrix, done = matrix.copy(), batch.extra["scored"]
    else:
        matrix, done = (
            np.full((len(pool.rms), len(batch.texts)), np.nan),
            np.zeros((len(pool.rms), len(batch.texts)), bool),
        )
        cells = batch.response_arms(), np.arange(len(batch.texts))
        done[cells], matrix[cells] = True, batch.scores
    prompts = batch.response_prompts()
    for k in range(len(pool.rms)):
        rest = np.flatnonzero(~done[k])
        if k in pool.off(batch.step) or not len(rest):
            continue
        try:
            matrix[k, rest] = pool.score(k, [prompts[i] for i in rest], [batch.texts[i] for i in rest])
        except RewardModelError as exc:
            batch.events.append(pool.mark_down(k, f"{exc.__class__.__name__}: {exc}", router.selector))
    return matrix


def bon_router(cfg, rms: list, dim_fn) -> Router:
    """The core for best-of-n: the configured strategy, one RM per prompt for a bandit."""
    pool = RewardPool(rms)
    return Router(
        make_strategy(cfg, pool.names, dim_fn, per_prompt=True), pool, feedback=None, normalizer=_normalizer(cfg)
    )


def _normalizer(cfg):
    from laser.bandits import QuantileNormalizer

    return QuantileNormalizer(cfg.selector.normalizer_low, cfg.selector.normalizer_high)


def run_bon(cfg, policy, rms: list, examples: list, context_fn=None, show_progress: bool = True) -> dict:
    """Best-of-n over ``examples``; returns per-method accuracy and RM calls (also ``bon_results.json``).

    Methods: ``bandit`` (the configured selector, one RM per prompt), ``single:<rm>``, ``random``
    (seeded uniform RM per prompt), ``score_ensemble`` and, for reference, ``first_sample`` (no
    selection) and ``oracle`` (any correct response among the n).

    Args:
        cfg: the run config (``train.n_samples``, ``batch_size``, sampling; ``selector``; ``seed``).
        policy: samples and (for contextual selectors) gives contexts; ``context_fn`` replaces them.
    """
    from tqdm.auto import tqdm

    t = cfg.train
    contexts_of = context_fn or getattr(policy, "context", None)  # a context-free strategy needs none
    router = bon_router(cfg, rms, lambda: int(np.asarray(contexts_of([examples[0].prompt])).shape[1]))
    pair_summary = score_strategy_pairs(router, {ex.group for ex in examples})  # reliability: once, before any prompt
    names, n = router.names, t.n_samples
    labelled = all(ex.answer for ex in examples)
    rng = np.random.default_rng([cfg.seed, 17])
    picks = {m: [] for m in ["bandit", "random", "score_ensemble", "first_sample", *[f"single:{x}" for x in names]]}
    oracle, arms, events, routed_cost = [], [], [], 0
    for step, start in enumerate(
        tqdm(range(0, len(examples), t.batch_size), desc="best-of-n", disable=not show_progress)
    ):
        chunk = examples[start : start + t.batch_size]
        batch = Batch.of(chunk, step=step + 1)
        prompts = batch.prompts
        batch.contexts = (
            np.asarray(contexts_of(prompts), dtype=np.float64)
            if router.strategy.needs_context
            else np.zeros((len(prompts), 1))
        )
        _seed_torch(step_seed(cfg.seed, 0, step, 1))  # as a training step would (e.g. LoRA dropout)
        samples = policy.sample(
            prompts, n, t.temperature, t.top_p, t.max_new_tokens, seed=step_seed(cfg.seed, 0, step, 0)
        )
        batch.add_responses(samples.texts, samples.prompt_index)
        before = int(router.pool.responses_scored.sum())
        router.route(batch)
        routed_cost += int(router.pool.responses_scored.sum()) - before
        matrix = _every_rm(router, batch)
        units, raw = [], []
        for j, ex in enumerate(chunk):
            mine = batch.responses_of(j)
            ok = [ex.correct(batch.texts[i]) for i in mine] if labelled else None
            choice = {f"single:{x}": best_index(matrix[k, mine]) for k, x in enumerate(names)}
            choice["score_ensemble"] = best_index(ensemble_scores(matrix[:, mine]))
            choice["random"] = choice[f"single:{names[int(rng.integers(len(names)))]}"]
            choice["first_sample"] = 0
            choice["bandit"] = best_index(batch.scores[mine])
            for m, c in choice.items():
                picks[m].append(
                    bool(ok[c])
                    if (ok is not None and c is not None)
                    else (c is not None and c == choice["score_ensemble"])
                )
            oracle.append(any(ok) if ok is not None else True)
            units.append(Unit(batch.my_arms[j], batch.contexts[j], None, [j]))
            raw.append(float(picks["bandit"][-1]))  # metric of the picked response (or consensus)
        arms += batch.my_arms
        if getattr(router.strategy, "label_free", False):  # learns from its probes' votes
            router.learn(batch, Outcome())
        elif router.selector is not None and min(batch.my_arms) >= 0:
            router.apply(units, raw)
        events += batch.events
    result = _result(cfg, picks, oracle, arms, names, labelled, len(examples), events, router.pool, routed_cost)
    if getattr(router.strategy, "label_free", False):
        result["routing"] = _reliability_summary(router)
        if pair_summary is not None:
            result["labelled_pairs"] = pair_summary
        _write(cfg, result)
    return result


def _reliability_summary(router: Router) -> dict:
    """Per group: the routed RM, why (estimate / warm-up / fallback), the estimated accuracies
    and the sign's source."""
    rel, out = router.selector, {}
    for group, st in sorted(rel.groups_.items()):
        arm, status = rel.best(group)
        out[group] = {"arm": router.names[arm], "status": status, "acc": st.acc, "sign": st.sign_source}
        out[group]["probes"] = st.probes
    return out


def _seed_torch(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _result(cfg, picks, oracle, arms, names, labelled, n, events, pool, routed_cost) -> dict:
    per_rm = n * cfg.train.n_samples
    cost = {m: per_rm for m in picks if m.startswith("single:") or m == "random"}
    cost["bandit"] = routed_cost
    cost["score_ensemble"] = per_rm * len(names)
    cost["first_sample"] = 0
    metric = "accuracy" if labelled else "agreement_with_ensemble"
    result = {
        "metric": metric,
        "n": n,
        "n_samples": cfg.train.n_samples,
        "methods": {
            m: {metric: float(np.mean(v)), "responses_scored": cost[m], "per_response": cost[m] / per_rm}
            for m, v in picks.items()
        },
        "selection": {names[k]: arms.count(k) / n for k in range(len(names))},
        "events": events,
        "pool": {"responses_scored": pool.responses_scored.tolist(), "score_calls": pool.score_calls.tolist()},
    }
    if labelled:
        result["methods"]["oracle"] = {metric: float(np.mean(oracle)), "responses_scored": 0, "per_response": 0.0}
    _write(cfg, result)
    return result


def _write(cfg, result: dict) -> None:
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "bon_results.json").write_text(json.dumps(result, indent=1))


def format_bon(result: dict) -> str:
    """The best-of-n table; with gold answers a headroom column: (m - random) / (oracle - random)."""
    metric, methods = result["metric"], result["methods"]
    rnd, orc = (methods.get(k, {}).get(metric) for k in ("random", "oracle"))
    room = orc - rnd if rnd is not None and orc is not None and orc > rnd else None
    head = f"{'method':<28}{metric:>26}{'responses_scored':>18}{'per response':>14}"
    lines = [head + (f"{'headroom %':>12}" if room else "")]
    for m, e in methods.items():
        per = e.get("per_response", float("nan"))
        lines.append(
            f"{m:<28}{100 * e[metric]:>25.1f}%{e['responses_scored']:>18}{per:>14.2f}"
            + (f"{100 * (e[metric] - rnd) / room:>12.0f}" if room else "")
        )
    lines.append("bandit selection share: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in result["selection"].items()))
    for group, g in result.get("routing", {}).items():
        lines.append(f"reliability: group {group}: RM {g['arm']} ({g['status']}, sign {g['sign'] or '-'})")
    if "pool" in result:
        lines.append(
            f"RM work in this run (every RM once per response): responses_scored "
            f"{sum(result['pool']['responses_scored'])}, score_calls {sum(result['pool']['score_calls'])}"
        )
    lines += [f"event: {e}" for e in result.get("events", [])]
    return "\n".join(lines)
