"""The TRL router's rounds, an adapter on the routing core (:class:`laser.routing.Router`).

TRL calls every reward function once per generation round, in list order, with the same
``completions`` list; the router exposes one function per RM and uses the first call of a round
to decide and score, the others to hand out the chosen RM's column (None elsewhere), and the
last call to turn the finished round into feedback. Deciding, scoring (failures, counters),
pairs, feedback, the no-pair and non-finite rules and the update are the core's; this module
maps TRL's rows to a :class:`~laser.routing.Batch` (one prompt per group of ``num_generations``
completions) and keeps the round's bookkeeping. :class:`laser.integrations.trl.RMRouter` adds the
trainer hooks (set-up, checkpoints).

``selector="reliability"`` (label-free, :mod:`laser.integrations.reliability`): the core's
reliability strategy decides per prompt by group; the round keeps every RM's scores of the probe
rows, and the gathered round carries them to the strategy's learning step.

Several processes: each process sees only its rows (a group may straddle two). Every process
gathers the round's contexts, computes the decision on its identical strategy, and the core
checks process 0's; feedback is learned from the gathered round on every process (the core with
``Local()`` collectives on a batch every process holds whole), so every process applies the same
update.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from laser.bandits import QuantileNormalizer, Selector, make_selector
from laser.integrations import reliability as rel
from laser.integrations.context import HashedNgramEmbedder, completion_text, prompt_text
from laser.integrations.dist import TorchCollectives
from laser.routing import FEEDBACKS, Batch, Local, RewardPool, Router
from laser.routing.labelled import add_labelled_pairs, describe
from laser.routing.outcome import correctness
from laser.routing.pool import check_reward_models
from laser.routing.strategies import BanditPerBatch, BanditPerPrompt
from laser.tasks.choice import parse_options
from laser.tasks.extract import TASK_FORMATS

log = logging.getLogger("laser")

GRANULARITIES = ("round", "prompt")
CONTEXTS = ("auto", "policy", "hashed", "encoder")
#: the feedbacks a round can compute (answer-based: no policy loss), and the outcome key each
#: reference is logged under
ROUND_FEEDBACKS = tuple(name for name, fb in FEEDBACKS.items() if fb.reference)
REFERENCE_KEYS = {FEEDBACKS[name].reference: name for name in ROUND_FEEDBACKS}


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
    probes: list | None = None  # reliability: (n_groups,) probe flags
    matrix: np.ndarray | None = None  # reliability: (K, local rows) every RM's score (NaN: not scored)


def _check_feedback(feedback: str) -> tuple[str, ...]:
    if feedback not in FEEDBACKS:
        raise ValueError(f"RMRouter: unknown feedback {feedback!r}; valid: {', '.join(FEEDBACKS)}")
    if feedback not in ROUND_FEEDBACKS:
        raise ValueError(
            f"RMRouter: feedback {feedback!r} needs the training loss, which a TRL round does "
            "not give (GRPO's loss averages to about 0 over a round); use one of "
            f"{', '.join(ROUND_FEEDBACKS)}"
        )
    return FEEDBACKS[feedback].needs


def _task(task) -> str | None:
    """A row's task when it has an answer extractor, else None."""
    return str(task).lower() if task is not None and str(task).lower() in TASK_FORMATS else None


def _has(gold) -> bool:
    return gold is not None and gold != ""


class RouterCore:
    """Decisions, scoring and feedback of the TRL router (see :class:`~laser.integrations.trl.RMRouter`)."""

    def __init__(
        self,
        reward_models: Sequence,
        selector: str | Selector = "linucb",
        *,
        selector_options: dict | None = None,
        context: Any = "auto",
        context_dim: int = 256,
        feedback: str | None = None,
        granularity: str = "round",
        answer_column: str = "answer",
        task_column: str = "task",
        task: str | None = None,
        tag_column: str | None = None,
        group_column: str | None = None,
        labelled_pairs: dict | str | None = None,
        normalizer: QuantileNormalizer | None = None,
        seed: int = 0,
    ) -> None:
        self.rms = check_reward_models(reward_models, "RMRouter", "TRL logs rewards/<name>/mean per function")
        self.names = [rm.name for rm in self.rms]
        self.reliability = selector == rel.RELIABILITY
        problems = []
        if self.reliability:
            if feedback is not None:
                problems.append(
                    f"feedback {feedback!r} is not used by selector='reliability' (it learns from the RMs' "
                    "agreement on probe prompts); leave feedback unset"
                )
            problems += rel.check_options(self.names, dict(selector_options or {}), group_column, labelled_pairs)
            self.needs: tuple[str, ...] = ()
        else:
            if group_column is not None or labelled_pairs is not None:
                problems.append("group_column and labelled_pairs only apply to selector='reliability'")
            feedback = "pair_accuracy" if feedback is None else feedback
            self.needs = _check_feedback(feedback)
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
                problems.append(
                    f"selector has {selector.n_arms} arms but {len(self.rms)} reward models were "
                    f"given ({', '.join(self.names)})"
                )
            if selector_options:
                problems.append("selector_options only apply when the selector is given by name")
        elif self.reliability:
            pass
        elif not isinstance(selector, str):
            problems.append(f"selector must be a name or a laser.bandits Selector, got {type(selector).__name__}")
        if problems:
            raise ValueError("RMRouter: " + "; ".join(problems))
        self.selector_spec, self.selector_options = selector, dict(selector_options or {})
        self.context, self.context_dim = context, int(context_dim)
        self.feedback, self.granularity = feedback, granularity
        self.answer_column, self.task_column, self.task = answer_column, task_column, task
        self.group_column = group_column
        self.labelled_pairs = None if labelled_pairs is None else rel.labelled_of(labelled_pairs)  # a path: read
        self.tag_column = tag_column if tag_column is not None else group_column
        self.seed = int(seed)
        self.pool = RewardPool(self.rms)
        self._normalizer = normalizer if normalizer is not None else QuantileNormalizer()
        self._selector: Selector | None = selector if isinstance(selector, Selector) else None
        self.core: Router | None = None  # built by setup(), once the context's dimension is known
        self.embedder = None
        self.rounds_, self.eval_rounds_ = 0, 0
        self.history_: list[dict] = []
        self.seconds_ = {"route": 0.0, "score": 0.0}  # wall time in the router and in RM calls (not saved)
        self._group_size = {"train": None, "eval": None}
        self._model = None
        self._round: _Round | None = None
        self._coll = TorchCollectives()
        self.reward_funcs = [self._reward_func(k) for k in range(len(self.rms))]

    # ------------------------------------------------------------------ the core's state, read through
    @property
    def selector(self) -> Selector | None:
        return self.core.selector if self.core is not None else self._selector

    @property
    def normalizer(self) -> QuantileNormalizer:
        return self._normalizer

    @property
    def _dist(self):
        return self._coll

    @_dist.setter
    def _dist(self, coll) -> None:  # several processes: the engine's collectives
        self._coll = coll
        if self.core is not None:
            self.core.coll = coll

    @property
    def responses_scored_(self) -> np.ndarray:
        """Responses (rows) each RM scored, summed over processes."""
        return self.pool.responses_scored

    @property
    def score_calls_(self) -> np.ndarray:
        """Calls of each RM's ``score()``, summed over processes."""
        return self.pool.score_calls

    @property
    def skipped_(self) -> int:
        """Learning units not learned (every completion of the unit identical)."""
        return self.core.skipped_ if self.core is not None else 0

    @property
    def tied_(self) -> int:
        """Learning units without a pair whose completions differed: learned as the lowest reward."""
        return self.core.tied_ if self.core is not None else 0

    @property
    def down_(self) -> dict[int, str]:
        """Masked arms and their last errors."""
        return {k: self.pool.last_errors.get(k, "unavailable") for k in sorted(self.pool.down)}

    # ------------------------------------------------------------------ set-up
    def setup(
        self,
        num_generations: int,
        num_generations_eval: int | None = None,
        model=None,
        tokenizer=None,
        score_labelled: bool = True,
    ) -> None:
        """Bind to a run: group sizes, the policy (train/eval mode and its embedding), the selector.

        ``score_labelled``: score ``labelled_pairs`` when the reliability core is built (False when
        a checkpoint, which holds their votes, is loaded next).

        Raises:
            ValueError: fewer than 2 generations per prompt (no pair to learn from), or a context or
                selector that does not fit.
        """
        if num_generations is None or num_generations < 2:
            raise ValueError(
                f"RMRouter: num_generations={num_generations}; the pair view needs at least 2 completions per prompt"
            )
        self._group_size = {"train": int(num_generations), "eval": int(num_generations_eval or num_generations)}
        self._model = model
        if self.reliability:  # no context: groups come from a column
            if self.core is None:
                strategy = rel.make_strategy(self.names, self.selector_options, self.seed)
                self.core = Router(strategy, self.pool, None, collectives=self._coll, pairing="all")
                if self.labelled_pairs and score_labelled:
                    log.info("%s", describe(add_labelled_pairs(self.core, self.labelled_pairs)))
            return
        if self.embedder is None:
            self.embedder = self._make_embedder(model, tokenizer)
        if self._selector is None:
            self._selector = make_selector(
                self.selector_spec, len(self.rms), self.embedder.dim, self.seed, **self.selector_options
            )
        elif self._selector.contextual and self._selector.dim != self.embedder.dim:
            raise ValueError(
                f"RMRouter: selector expects {self._selector.dim}-dim contexts but the "
                f"{type(self.embedder).__name__} context has {self.embedder.dim} dims"
            )
        if self.core is None:
            cls = BanditPerBatch if self.granularity == "round" else BanditPerPrompt
            name = self.selector_spec if isinstance(self.selector_spec, str) else type(self._selector).__name__
            self.core = Router(
                cls(self._selector, name, self._selector.contextual),
                self.pool,
                self.feedback,
                normalizer=self._normalizer,
                collectives=self._coll,
                pairing="all",
            )

    def _make_embedder(self, model, tokenizer):
        kind = self.context
        if not isinstance(kind, str):
            return kind
        if kind == "auto":
            kind = "policy" if model is not None and tokenizer is not None else "hashed"
        if kind == "policy":
            if model is None or tokenizer is None:
                raise ValueError(
                    "RMRouter: context='policy' needs the trainer's model and tokenizer; add the "
                    "router to callbacks=[...] or choose context='hashed' or 'encoder'"
                )
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
            raise RuntimeError(
                "RMRouter: not set up; pass the router as a trainer callback "
                "(callbacks=[router]) or call router.setup(...) first"
            )
        start, scored = time.perf_counter(), self.seconds_["score"]
        if self._round is None:
            self._round = self._begin(prompts, completions, kw)
        elif self._round.key is not completions:
            missing = sorted(set(self.names) - {self.names[i] for i in self._round.called})
            raise RuntimeError(
                f"RMRouter: a new round began before reward functions {missing} of the "
                "last one were called; pass all of router.reward_funcs to the trainer"
            )
        r = self._round
        if k in r.called:
            raise RuntimeError(f"RMRouter: reward function {self.names[k]!r} called twice in one round")
        r.called.add(k)
        out = [float(s) if a == k and np.isfinite(s) else None for a, s in zip(r.row_arm, r.scores, strict=True)]
        if len(r.called) == len(self.rms):
            self._round = None
            self._finish(r, prompts, completions, kw)
        self.seconds_["route"] += time.perf_counter() - start - (self.seconds_["score"] - scored)
        return out

    def check_idle(self) -> None:
        """Raise if a round is half-served (some of ``reward_funcs`` never called)."""
        if self._round is not None:
            missing = sorted(set(self.names) - {self.names[i] for i in self._round.called})
            raise RuntimeError(
                f"RMRouter: reward functions {missing} were not called this round; pass all "
                "of router.reward_funcs to the trainer"
            )

    # ------------------------------------------------------------------ a round's start
    def _mode(self) -> str:
        return "train" if self._model is None or self._model.training else "eval"

    def _begin(self, prompts: list, completions: list, kw: dict) -> _Round:
        mode = self._mode()
        g = self._group_size[mode]
        sizes = self._dist.all_gather(len(prompts))
        offset, total = sum(sizes[: self._dist.rank]), sum(sizes)
        if total % g:
            raise RuntimeError(f"RMRouter: {total} completions in the round are not groups of {g}")
        groups = (offset + np.arange(len(prompts))) // g
        if getattr(self.selector, "contextual", False):
            contexts = self._group_contexts(prompts, groups, total // g)
        else:  # a context-free selector: skip the embedding work
            contexts = np.zeros((total // g, 0))
        local = sorted(set(groups.tolist()))  # the groups with rows here (one may straddle two processes)
        first = {int(gid): i for i, gid in reversed(list(enumerate(groups)))}
        keys = self._group_keys(kw, len(prompts))
        batch = Batch(
            [prompt_text(prompts[first[gid]]) for gid in local],
            groups=[keys[first[gid]] for gid in local],
            contexts=contexts,
            index=local,
            step=self.rounds_ + self.eval_rounds_ + 1,
            extra={"learn": mode == "train"},
        )
        batch.add_responses([completion_text(c) for c in completions], np.searchsorted(local, groups))
        start = time.perf_counter()
        self.core.route(batch, trace=mode == "train")  # an RM that fails is masked, the round decided again
        self.seconds_["score"] += time.perf_counter() - start
        group_arms = np.asarray(batch.arms, dtype=np.int64)
        self._log_decision(kw.get("log_metric"), group_arms, batch.extra.get("ucb"))
        r = _Round(completions, mode, groups, group_arms[groups], batch.scores, contexts, group_arms)
        if self.reliability:
            r.probes, r.matrix = list(batch.extra["probe"]), batch.extra["matrix"]
        return r

    def _group_keys(self, kw: dict, n: int) -> list[str]:
        """Each row's routing group: its ``group_column`` value, else :data:`rel.ONE_GROUP`."""
        if self.group_column is None:
            return [rel.ONE_GROUP] * n
        return [str(g) for g in kw.get(self.group_column, [rel.ONE_GROUP] * n)]

    def _group_contexts(self, prompts: list, groups: np.ndarray, n_groups: int) -> np.ndarray:
        """(n_groups, d): each group's prompt embedded by the process holding its first local row."""
        first = {int(gid): i for i, gid in reversed(list(enumerate(groups)))}
        gids = sorted(first)
        texts = [prompt_text(prompts[first[gid]]) for gid in gids]
        # every process embeds as many texts (padding with its last one): a sharded policy
        # (ZeRO-3, FSDP) needs the same number of forward passes on every process
        most = max(self._dist.all_gather(len(texts)))
        local = self.embedder.embed(texts + texts[-1:] * (most - len(texts)))[: len(texts)]
        table: dict[int, np.ndarray] = {}
        for part in self._dist.all_gather(list(zip(gids, np.asarray(local).tolist(), strict=True))):
            for gid, vec in part:
                table.setdefault(gid, np.asarray(vec, dtype=np.float64))
        return np.stack([table[gid] for gid in range(n_groups)])

    def _log_decision(self, log_metric, group_arms: np.ndarray, ucb: np.ndarray | None) -> None:
        if log_metric is None:
            return
        shares = np.bincount(group_arms, minlength=len(self.rms)) / len(group_arms)
        for k, name in enumerate(self.names):
            log_metric(f"laser/share/{name}", float(shares[k]))
            if ucb is not None and np.isfinite(ucb[k]):
                log_metric(f"laser/score/{name}", float(ucb[k]))
        if self.granularity == "round" and not self.reliability:  # reliability routes per prompt
            log_metric("laser/arm", float(group_arms[0]))

    # ------------------------------------------------------------------ a round's end
    def _finish(self, r: _Round, prompts: list, completions: list, kw: dict) -> None:
        """Gather the round, compute its outcome, learn (training rounds only), record it."""
        batch, tags = self._gathered(r, prompts, completions, kw)
        whole = Local()  # every process holds the whole round: learn from it without collectives
        self.core.pairs(batch)
        out = self.core.outcome(batch, coll=whole)
        for ref in self._log_references(batch):
            out.correct.setdefault(ref, correctness(batch, ref, whole))
        outcome = {REFERENCE_KEYS[ref]: c.mean for ref, c in out.correct.items()}
        if r.mode == "eval":
            self.eval_rounds_ += 1
            self._log_outcome(kw.get("log_metric"), outcome, None, None)
            return
        raw, applied = self.core.learn(batch, out, coll=whole)
        raws = [float(x) for x in raw if x is not None]
        rewards = [float(x) for x in applied if x is not None]
        self.history_.append(
            {
                "round": self.rounds_,
                "step": int(getattr(kw.get("trainer_state"), "global_step", -1)),
                "arms": r.group_arms.tolist(),
                "tags": tags,
                "raw": raws,
                "reward": rewards,
                **{key: (v if np.isfinite(v) else None) for key, v in outcome.items()},
                **(rel.round_record(self.core.strategy, batch) if self.reliability else {}),
            }
        )
        self.rounds_ += 1
        self._log_outcome(kw.get("log_metric"), outcome, raws, rewards)
        if self.reliability:
            rel.log_round(kw.get("log_metric"), self.history_[-1], self.names)

    def _gathered(self, r: _Round, prompts: list, completions: list, kw: dict) -> tuple[Batch, list]:
        """The whole round as one :class:`~laser.routing.Batch` (one prompt per group, every
        process's rows in order) and each group's tag."""
        n = len(prompts)
        tasks = [self.task] * n if self.task is not None else kw.get(self.task_column, [None] * n)
        golds = kw.get(self.answer_column, [None] * n)
        tags = kw.get(self.tag_column, [None] * n) if self.tag_column else [None] * n
        keys = self._group_keys(kw, n)
        mine = [
            (
                int(r.groups[i]),
                float(r.scores[i]),
                completion_text(completions[i]),
                prompt_text(prompts[i]),
                tasks[i],
                golds[i],
                tags[i],
                keys[i],
                None if r.matrix is None else r.matrix[:, i].tolist(),
            )
            for i in range(n)
        ]
        rows = [row for part in self._dist.all_gather(mine) for row in part]
        first: dict[int, tuple] = {}
        for row in rows:
            first.setdefault(row[0], row)
        gids = sorted(first)
        self._check_columns(rows)
        batch = Batch(
            [first[g][3] for g in gids],
            tasks=[_task(first[g][4]) for g in gids],
            answers=[first[g][5] for g in gids],
            options=[parse_options(first[g][3]) for g in gids],
            groups=[first[g][7] if self.reliability else first[g][6] for g in gids],
            contexts=r.contexts,
            index=list(range(len(gids))),
            arms=r.group_arms.tolist(),
            my_arms=r.group_arms.tolist(),
        )
        batch.add_responses([row[2] for row in rows], [gids.index(row[0]) for row in rows])
        batch.scores = np.array([row[1] for row in rows], dtype=np.float64)
        if r.matrix is not None:  # the round's probe scores, whole, for the label model on every process
            batch.extra.update(probe=list(r.probes), matrix=np.array([row[8] for row in rows], dtype=np.float64).T)
        return batch, [first[g][6] for g in gids]

    def _check_columns(self, rows: list) -> None:
        """The feedback's reference must be computable on every row (``check_dataset`` checks it before training)."""
        if (
            self.feedback is not None
            and not all(_task(row[4]) for row in rows)
            or ("labels" in self.needs and not all(_has(row[5]) for row in rows))
        ):
            raise ValueError(
                f"RMRouter: feedback {self.feedback!r} needs a task on every row"
                f"{' and a gold answer' if 'labels' in self.needs else ''} (columns "
                f"{self.task_column!r}, {self.answer_column!r}, or task=...); this round lacks them"
            )

    def _log_references(self, batch: Batch) -> list[str]:
        """The references logged besides the feedback's own: gold where every group has an answer, and majority."""
        if not any(batch.tasks):  # free-form prompts: no answer to check a pair against
            return []
        refs = ["majority"]
        if all(_has(a) for a in batch.answers):
            refs.insert(0, "gold")
        return refs

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
        if raws is not None and hasattr(self.selector, "counts_"):
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
            for arm, tag in zip(rec["arms"], rec["tags"], strict=True):
                counts.setdefault("all" if tag is None else str(tag), np.zeros(len(self.rms)))[arm] += 1
        return {tag: dict(zip(self.names, (c / c.sum()).tolist(), strict=True)) for tag, c in sorted(counts.items())}
