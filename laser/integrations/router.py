"""The router's rounds: one bandit decision per generation round, one RM scores, one update.

TRL calls every reward function once per generation round, in list order, with the same
``completions`` list; the router exposes one function per RM and uses the first call of a round
to decide and score, the others to hand out the chosen RM's column (None elsewhere), and the
last call to turn the finished round into feedback. :class:`laser.integrations.trl.RMRouter`
adds the trainer hooks (set-up, checkpoints); this module holds the trainer-free logic.

Several processes: each process sees only its rows. Every process gathers the round's
contexts, replays the decision on its own identical selector (so selector RNGs, round-robin
pointers and Exp3 weights stay identical), takes process 0's arms as authoritative and fails if
its own differ; feedback is computed from the gathered round on every process, so every process
applies the same update.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from laser.bandits import NoArmAvailable, QuantileNormalizer, Selector, make_selector
from laser.integrations.context import HashedNgramEmbedder, completion_text, prompt_text
from laser.integrations.dist import Collectives
from laser.integrations.outcome import OUTCOME_KEYS, group_pair_values, pooled
from laser.rewards.base import RewardModelError, check_scores
from laser.tasks.extract import TASK_FORMATS
from laser.routing.feedback import FEEDBACKS

log = logging.getLogger(__name__)
GRANULARITIES = ("round", "prompt")
CONTEXTS = ("auto", "policy", "hashed", "encoder")


@dataclass
class _Round:
    """What one generation round holds between the reward-function calls (this process's rows)."""

    key: Any  # the completions list object TRL passes to every reward function of the round
    mode: str  # "train" or "eval"
    groups: np.ndarray  # local row -> global group index
    row_arm: np.ndarray  # local row -> arm that scores it
    scores: np.ndarray  # local row -> chosen RM's score (NaN: unscored or unscorable)
    contexts: np.ndarray  # (n_groups, d) context of each group's prompt
    group_arms: np.ndarray  # (n_groups,) arm of each group
    called: set = field(default_factory=set)


def _check_rms(reward_models: Sequence) -> list:
    rms = list(reward_models)
    if not rms:
        raise ValueError("RMRouter needs at least one reward model")
    bad = [f"#{i} ({type(rm).__name__})" for i, rm in enumerate(rms)
           if not isinstance(getattr(rm, "name", None), str) or not callable(getattr(rm, "score", None))]
    if bad:
        raise ValueError(f"RMRouter: reward models {', '.join(bad)} lack a str `name` or a "
                         "`score(prompts, responses)` method")
    names = [rm.name for rm in rms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"RMRouter: duplicate reward model names {dup}; each arm needs its own name "
                         "(TRL logs rewards/<name>/mean per function)")
    return rms


def _check_feedback(feedback: str) -> tuple[str, ...]:
    if feedback not in FEEDBACKS:
        raise ValueError(f"RMRouter: unknown feedback {feedback!r}; valid: {', '.join(FEEDBACKS)}")
    needs = FEEDBACKS[feedback][1]
    if not needs or not set(needs) <= {"labels", "answers"}:
        raise ValueError(f"RMRouter: feedback {feedback!r} needs the training loss, which a TRL round does "
                         "not give (GRPO's loss averages to about 0 over a round); use one of "
                         f"{', '.join(OUTCOME_KEYS)}")
    if feedback not in OUTCOME_KEYS:
        raise ValueError(f"RMRouter: feedback {feedback!r} reads an outcome the router does not compute; "
                         f"use one of {', '.join(OUTCOME_KEYS)}")
    return needs


class RouterCore:
    """Decisions, scoring and feedback of the TRL router (see :class:`~laser.integrations.trl.RMRouter`)."""

    def __init__(self, reward_models: Sequence, selector: str | Selector = "linucb", *,
                 selector_options: dict | None = None, context: Any = "auto", context_dim: int = 256,
                 feedback: str = "pair_accuracy", granularity: str = "round",
                 answer_column: str = "answer", task_column: str = "task", task: str | None = None,
                 tag_column: str | None = None, normalizer: QuantileNormalizer | None = None,
                 seed: int = 0) -> None:
        self.rms = _check_rms(reward_models)
        self.names = [rm.name for rm in self.rms]
        self.needs = _check_feedback(feedback)
        problems = []
        if granularity not in GRANULARITIES:
            problems.append(f"granularity {granularity!r} is not one of {GRANULARITIES}")
        if isinstance(context, str) and context not in CONTEXTS:
            problems.append(f"context {context!r} is not one of {CONTEXTS} or an object with embed() and dim")
        if not isinstance(context, str) and not (callable(getattr(context, "embed", None)) and hasattr(context, "dim")):
            problems.append(f"context {type(context).__name__} has no embed(texts) method and dim attribute")
        if task is not None and str(task).lower() not in TASK_FORMATS:
            problems.append(f"task {task!r} has no answer extractor (valid: {', '.join(TASK_FORMATS)})")
        if isinstance(selector, Selector):
            if selector.n_arms != len(self.rms):
                problems.append(f"selector has {selector.n_arms} arms but {len(self.rms)} reward models were "
                                f"given ({', '.join(self.names)})")
            if selector_options:
                problems.append("selector_options only apply when the selector is given by name")
        elif not isinstance(selector, str):
            problems.append(f"selector must be a name or a laser.bandits Selector, got {type(selector).__name__}")
        if problems:
            raise ValueError("RMRouter: " + "; ".join(problems))
        self.selector_spec, self.selector_options = selector, dict(selector_options or {})
        self.context, self.context_dim = context, int(context_dim)
        self.feedback, self.granularity = feedback, granularity
        self.answer_column, self.task_column, self.task, self.tag_column = answer_column, task_column, task, tag_column
        self.seed = int(seed)
        self.normalizer = normalizer if normalizer is not None else QuantileNormalizer()
        self.selector: Selector | None = selector if isinstance(selector, Selector) else None
        self.embedder = None
        self.rounds_, self.eval_rounds_, self.skipped_ = 0, 0, 0
        self.history_: list[dict] = []
        self.rows_scored_ = np.zeros(len(self.rms), dtype=np.int64)
        self.calls_ = np.zeros(len(self.rms), dtype=np.int64)
        self.down_: dict[int, str] = {}
        self.seconds_ = {"route": 0.0, "score": 0.0}  # wall time in the router and in RM calls (not saved)
        self._group_size = {"train": None, "eval": None}
        self._model = None
        self._round: _Round | None = None
        self._dist = Collectives()
        self.reward_funcs = [self._reward_func(k) for k in range(len(self.rms))]

    # ------------------------------------------------------------------ set-up
    def setup(self, num_generations: int, num_generations_eval: int | None = None, model=None,
              tokenizer=None) -> None:
        """Bind to a run: group sizes, the policy (train/eval mode and its embedding), the selector.

        Raises:
            ValueError: fewer than 2 generations per prompt (no pair to learn from), or a context or
                selector that does not fit.
        """
        if num_generations is None or num_generations < 2:
            raise ValueError(f"RMRouter: num_generations={num_generations}; the pair view needs at least 2 "
                             "completions per prompt")
        self._group_size = {"train": int(num_generations), "eval": int(num_generations_eval or num_generations)}
        self._model = model
        if self.embedder is None:
            self.embedder = self._make_embedder(model, tokenizer)
        if self.selector is None:
            self.selector = make_selector(self.selector_spec, len(self.rms), self.embedder.dim, self.seed,
                                          **self.selector_options)
        elif self.selector.contextual and self.selector.dim != self.embedder.dim:
            raise ValueError(f"RMRouter: selector expects {self.selector.dim}-dim contexts but the "
                             f"{type(self.embedder).__name__} context has {self.embedder.dim} dims")

    def _make_embedder(self, model, tokenizer):
        kind = self.context
        if not isinstance(kind, str):
            return kind
        if kind == "auto":
            kind = "policy" if model is not None and tokenizer is not None else "hashed"
        if kind == "policy":
            if model is None or tokenizer is None:
                raise ValueError("RMRouter: context='policy' needs the trainer's model and tokenizer; add the "
                                 "router to callbacks=[...] or choose context='hashed' or 'encoder'")
            from laser.integrations.context import PolicyEmbedder

            return PolicyEmbedder(model, tokenizer)
        if kind == "encoder":
            from laser.policy.encoder import SentenceEncoder

            return SentenceEncoder()
        return HashedNgramEmbedder(self.context_dim)

    # ------------------------------------------------------------------ reward functions
    def _reward_func(self, k: int):
        def reward(prompts, completions, **kwargs):
            return self._call(k, prompts, completions, kwargs)

        reward.__name__ = reward.__qualname__ = self.names[k]  # TRL names rewards/<__name__>/mean
        return reward

    def _call(self, k: int, prompts: list, completions: list, kw: dict) -> list[float | None]:
        if self.selector is None:
            raise RuntimeError("RMRouter: not set up; pass the router as a trainer callback "
                               "(callbacks=[router]) or call router.setup(...) first")
        start, scored = time.perf_counter(), self.seconds_["score"]
        if self._round is None:
            self._round = self._begin(prompts, completions, kw)
        elif self._round.key is not completions:
            missing = sorted(set(self.names) - {self.names[i] for i in self._round.called})
            raise RuntimeError(f"RMRouter: a new round began before reward functions {missing} of the "
                               "last one were called; pass all of router.reward_funcs to the trainer")
        r = self._round
        if k in r.called:
            raise RuntimeError(f"RMRouter: reward function {self.names[k]!r} called twice in one round")
        r.called.add(k)
        out = [float(s) if a == k and np.isfinite(s) else None for a, s in zip(r.row_arm, r.scores)]
        if len(r.called) == len(self.rms):
            self._round = None
            self._finish(r, prompts, completions, kw)
        self.seconds_["route"] += time.perf_counter() - start - (self.seconds_["score"] - scored)
        return out

    def check_idle(self) -> None:
        """Raise if a round is half-served (some of ``reward_funcs`` never called)."""
        if self._round is not None:
            missing = sorted(set(self.names) - {self.names[i] for i in self._round.called})
            raise RuntimeError(f"RMRouter: reward functions {missing} were not called this round; pass all "
                               "of router.reward_funcs to the trainer")

    # ------------------------------------------------------------------ a round's start
    def _mode(self) -> str:
        return "train" if self._model is None or self._model.training else "eval"

    def _begin(self, prompts: list, completions: list, kw: dict) -> _Round:
        mode = self._mode()
        g = self._group_size[mode]
        sizes = self._dist.all_gather(len(prompts))
        offset, total = sum(sizes[:self._dist.rank]), sum(sizes)
        if total % g:
            raise RuntimeError(f"RMRouter: {total} completions in the round are not groups of {g}")
        groups = (offset + np.arange(len(prompts))) // g
        if self.selector.contextual:
            contexts = self._group_contexts(prompts, groups, total // g)
        else:  # a context-free selector: skip the embedding work
            contexts = np.zeros((total // g, 0))
        p_text = [prompt_text(p) for p in prompts]
        c_text = [completion_text(c) for c in completions]
        self._recover_arms()
        while True:
            group_arms, ucb = self._decide(contexts, mode)
            row_arm = group_arms[groups]
            scores, failed = self._score(row_arm, p_text, c_text)
            failures = [f for part in self._dist.all_gather(failed) for f in part]
            if not failures:
                break
            for arm, error in failures:  # every process masks the same arms, then decides again
                self.selector.mask_arm(arm)
                self.down_[arm] = error
                log.warning("reward model %r failed and is masked: %s", self.names[arm], error)
        self._log_decision(kw.get("log_metric"), group_arms, ucb)
        return _Round(completions, mode, groups, row_arm, scores, contexts, group_arms)

    def _group_contexts(self, prompts: list, groups: np.ndarray, n_groups: int) -> np.ndarray:
        """(n_groups, d): each group's prompt embedded by the process holding its first local row."""
        first = {int(gid): i for i, gid in reversed(list(enumerate(groups)))}
        gids = sorted(first)
        texts = [prompt_text(prompts[first[gid]]) for gid in gids]
        # every process embeds as many texts (padding with its last one): a sharded policy
        # (ZeRO-3, FSDP) needs the same number of forward passes on every process
        most = max(self._dist.all_gather(len(texts)))
        local = self.embedder.embed(texts + texts[-1:] * (most - len(texts)))[:len(texts)]
        table: dict[int, np.ndarray] = {}
        for part in self._dist.all_gather(list(zip(gids, np.asarray(local).tolist()))):
            for gid, vec in part:
                table.setdefault(gid, np.asarray(vec, dtype=np.float64))
        return np.stack([table[gid] for gid in range(n_groups)])

    def _decide(self, contexts: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Arms per group, on every process; process 0's are authoritative and must match."""
        saved = self.selector.state_dict() if mode == "eval" else None  # evaluation leaves no trace
        try:
            if self.granularity == "round":
                arm, ucb = self.selector.select_with_scores(contexts.mean(axis=0))
                arms = np.full(len(contexts), arm, dtype=np.int64)
            else:
                arms, ucb = self.selector.select_batch(contexts), None
        except NoArmAvailable:
            errors = "; ".join(f"{self.names[k]}: {e}" for k, e in sorted(self.down_.items()))
            raise RuntimeError(f"RMRouter: every reward model is down ({errors})") from None
        finally:
            if saved is not None:
                self.selector.load_state_dict(saved)
        first = self._dist.broadcast(arms.tolist())
        if first != arms.tolist():
            raise RuntimeError(f"RMRouter: process {self._dist.rank} chose arms {arms.tolist()} but process 0 "
                               f"chose {first} in round {self.rounds_}; the routers' states differ")
        return arms, ucb

    def _score(self, row_arm: np.ndarray, p_text: list[str], c_text: list[str]):
        """Score each local row with its arm's RM only; returns (scores, [(arm, error), ...])."""
        scores = np.full(len(row_arm), np.nan)
        failed, calls, rows = [], np.zeros(len(self.rms), np.int64), np.zeros(len(self.rms), np.int64)
        start = time.perf_counter()
        for k in np.unique(row_arm):
            idx = np.flatnonzero(row_arm == k)
            try:
                raw = self.rms[k].score([p_text[i] for i in idx], [c_text[i] for i in idx])
                scores[idx] = check_scores(raw, len(idx), self.names[k])
            except RewardModelError as exc:
                failed.append((int(k), str(exc)))
            calls[k] += 1
            rows[k] += len(idx)
        self.seconds_["score"] += time.perf_counter() - start
        total = np.sum(self._dist.all_gather(np.stack([calls, rows])), axis=0)
        self.calls_ += total[0]
        self.rows_scored_ += total[1]
        return scores, failed

    def _recover_arms(self) -> None:
        """Unmask arms whose RM says it is reachable again (on every process alike)."""
        if not self.down_:
            return
        ok = {k for k in self.down_ if getattr(self.rms[k], "available", lambda: True)()}
        for k in sorted(set.intersection(*map(set, self._dist.all_gather(sorted(ok))))):
            self.selector.unmask_arm(k)
            del self.down_[k]

    def _log_decision(self, log_metric, group_arms: np.ndarray, ucb: np.ndarray | None) -> None:
        if log_metric is None:
            return
        shares = np.bincount(group_arms, minlength=len(self.rms)) / len(group_arms)
        for k, name in enumerate(self.names):
            log_metric(f"laser/share/{name}", float(shares[k]))
            if ucb is not None and np.isfinite(ucb[k]):
                log_metric(f"laser/score/{name}", float(ucb[k]))
        if self.granularity == "round":
            log_metric("laser/arm", float(group_arms[0]))

    # ------------------------------------------------------------------ a round's end
    def _finish(self, r: _Round, prompts: list, completions: list, kw: dict) -> None:
        """Gather the round, compute its outcome, update the bandit (training rounds only)."""
        rows = self._gather_rows(r, prompts, completions, kw)
        values = self._pair_values(rows)
        outcome = {key: pooled(list(v.values())) for key, v in values.items()}
        if r.mode == "eval":
            self.eval_rounds_ += 1
            self._log_outcome(kw.get("log_metric"), outcome, None, None)
            return
        fn = FEEDBACKS[self.feedback][0]
        gids = sorted(rows)
        if self.granularity == "round":
            raws = [fn(outcome)]
            arms, contexts = r.group_arms[:1], r.contexts.mean(axis=0, keepdims=True)
        else:
            raws = [fn({key: pooled([values[key][gid]]) for key in values}) for gid in gids]
            arms, contexts = r.group_arms[gids], r.contexts[gids]
        keep = [i for i, v in enumerate(raws) if np.isfinite(v)]
        rewards = [self.normalizer.normalize(raws[i]) for i in keep]
        if keep:
            self.selector.update_batch(arms[keep], contexts[keep], np.asarray(rewards))
        else:
            self.skipped_ += 1  # no ranked pair in the whole round: nothing to learn from
        self.history_.append({
            "round": self.rounds_, "step": int(getattr(kw.get("trainer_state"), "global_step", -1)),
            "arms": r.group_arms.tolist(), "tags": [rows[gid][0][4] for gid in gids],
            "raw": [float(raws[i]) for i in keep], "reward": [float(x) for x in rewards],
            **{key: (v if np.isfinite(v) else None) for key, v in outcome.items()}})
        self.rounds_ += 1
        self._log_outcome(kw.get("log_metric"), outcome, raws, rewards)

    def _gather_rows(self, r: _Round, prompts: list, completions: list, kw: dict) -> dict[int, list]:
        """Every process's rows, by group: ``{gid: [(score, text, task, gold, tag), ...]}``."""
        n = len(prompts)
        tasks = [self.task] * n if self.task is not None else kw.get(self.task_column, [None] * n)
        golds = kw.get(self.answer_column, [None] * n)
        tags = kw.get(self.tag_column, [None] * n) if self.tag_column else [None] * n
        mine = [(int(r.groups[i]), float(r.scores[i]), completion_text(completions[i]), tasks[i], golds[i],
                 tags[i]) for i in range(n)]
        rows: dict[int, list] = {}
        for part in self._dist.all_gather(mine):
            for row in part:
                rows.setdefault(row[0], []).append(row[1:])
        return rows

    def _pair_values(self, rows: dict[int, list]) -> dict[str, dict[int, list[float]]]:
        """``{outcome key: {gid: pair values}}`` for every key the round's columns allow.

        ``majority_pair_accuracy`` needs a known task on every row, ``pair_accuracy`` a gold answer
        too; ``mixed_pair_accuracy`` is computed only as the feedback. The feedback's own key must be
        computable (``check_dataset`` checks it before training).
        """
        all_rows = [x for grp in rows.values() for x in grp]
        has_task = all(t is not None and str(t).lower() in TASK_FORMATS for _, _, t, _, _ in all_rows)
        has_gold = has_task and all(g is not None and g != "" for _, _, _, g, _ in all_rows)
        keys = [k for k, ok in (("pair_accuracy", has_gold), ("majority_pair_accuracy", has_task),
                                ("mixed_pair_accuracy", has_task and self.feedback == "mixed_pair_accuracy")) if ok]
        if self.feedback not in keys:
            raise ValueError(f"RMRouter: feedback {self.feedback!r} needs a task on every row"
                             f"{' and a gold answer' if 'labels' in self.needs else ''} (columns "
                             f"{self.task_column!r}, {self.answer_column!r}, or task=...); this round lacks them")
        values: dict[str, dict[int, list[float]]] = {k: {} for k in keys}
        for gid, grp in sorted(rows.items()):
            scores, texts, task, gold = [x[0] for x in grp], [x[1] for x in grp], grp[0][2], grp[0][3]
            for key, vals in group_pair_values(task, texts, scores, gold, keys).items():
                values[key][gid] = vals
        return values

    def _log_outcome(self, log_metric, outcome: dict, raws, rewards) -> None:
        if log_metric is None:
            return
        for key, value in outcome.items():
            if np.isfinite(value):
                log_metric(f"laser/{key}", float(value))
        finite = [v for v in (raws or []) if np.isfinite(v)]
        if finite:
            log_metric("laser/feedback_raw", float(np.mean(finite)))
            log_metric("laser/feedback", float(np.mean(rewards)))
        if raws is not None:
            for k, name in enumerate(self.names):
                log_metric(f"laser/count/{name}", float(self.selector.counts_[k]))

    # ------------------------------------------------------------------ reading the history
    def selection_table(self, last_fraction: float = 1 / 3) -> dict[str, dict[str, float]]:
        """Share of groups routed to each RM, per tag (``tag_column``), over the last rounds.

        Args:
            last_fraction: the final fraction of training rounds to count (1/3: the last third).

        Returns:
            ``{tag: {rm_name: share}}``; shares of a tag sum to 1. Without a tag column every
            group counts under the tag ``"all"``.
        """
        start = int(np.floor(len(self.history_) * (1 - last_fraction)))
        counts: dict[str, np.ndarray] = {}
        for rec in self.history_[start:]:
            for arm, tag in zip(rec["arms"], rec["tags"]):
                counts.setdefault("all" if tag is None else str(tag), np.zeros(len(self.rms)))[arm] += 1
        return {tag: dict(zip(self.names, (c / c.sum()).tolist())) for tag, c in sorted(counts.items())}
