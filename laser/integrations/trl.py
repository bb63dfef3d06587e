"""LASeR inside TRL: a bandit picks which reward model scores each GRPO / RLOO generation round.

Usage (TRL >= 1.16, ``pip install 'laser-rm[trl]'``)::

    from trl import GRPOConfig, GRPOTrainer
    from laser.integrations.trl import RMRouter

    router = RMRouter(reward_models, selector="linucb", feedback="pair_accuracy")
    trainer = GRPOTrainer(model=model, args=GRPOConfig(output_dir="out"), train_dataset=dataset,
                          reward_funcs=router.reward_funcs, callbacks=[router])
    trainer.train()                       # or train(resume_from_checkpoint=True)
    print(router.selection_table())

``router.reward_funcs`` holds one function per RM, named after it. In each generation round the
bandit picks one RM (or one per prompt with ``granularity="prompt"``); only that RM scores, and
every other function returns None for every row, which TRL's weighted nansum drops. When the
round is scored, the chosen RM's ranking of each group is compared with correctness (gold
answers, or the group's majority answer; see :mod:`laser.routing.outcome`), normalised with
the paper's quantile rule and fed to the selector. Evaluation rounds are scored by the current
choice and never update the bandit. The router's state is written into every TRL checkpoint
folder (``laser_router/ckpt-<step>/``, the loop's atomic writer: manifest with sha256) and read
back by ``trainer.train(resume_from_checkpoint=...)``. Selection itself is the routing core's
(:mod:`laser.routing`): the same rules as ``laser train`` for ties, failing RMs and counters.

Prompts without answers (chat): ``RMRouter(rms, selector="reliability", selector_options={"anchor":
name}, group_column="domain")`` learns each RM's reliability per group from the RMs' agreement on
probe prompts (:mod:`laser.integrations.reliability`). See docs/trl.md.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any, Sequence

import numpy as np
from transformers import TrainerCallback

from laser.bandits import QuantileNormalizer, Selector
from laser.integrations.router import RouterCore
from laser.routing.checkpoint import load_state, save_state
from laser.tasks.extract import TASK_FORMATS, normalize_gold

__all__ = ["RMRouter", "require_trl", "STATE_DIR"]

MIN_TRL = "1.16"
STATE_DIR = "laser_router"  # inside each checkpoint-<step> folder
_STATE_VERSION = 2  # 2: the routing core's state, written by laser.routing.checkpoint


def require_trl() -> str:
    """The installed TRL version, or an ImportError that says how to install it.

    Raises:
        ImportError: TRL is missing or older than 1.16 (the version whose contract was verified).
    """
    from packaging.version import Version

    try:
        version = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"laser.integrations.trl needs TRL: pip install 'laser-rm[trl]' (trl>={MIN_TRL})") from None
    if Version(version) < Version(MIN_TRL):
        raise ImportError(
            f"laser.integrations.trl needs trl>={MIN_TRL}, found {version}: pip install -U 'laser-rm[trl]'"
        )
    return version


class RMRouter(RouterCore, TrainerCallback):
    """Route each TRL generation round to one reward model chosen by a contextual bandit.

    Args:
        reward_models: objects with a ``name`` and ``score(prompts, responses)`` (laser RMs,
            ``RemoteRM``, HF adapters); names must be unique. Arm k is ``reward_models[k]``.
        selector: a ``laser.bandits`` name (``"linucb"``, ``"exp3"``, ...), a Selector with one
            arm per RM, or ``"reliability"``: label-free routing by each RM's reliability per group
            of prompts, estimated from the RMs' agreement on probe prompts (needs no gold answer and
            no task: chat prompts; see :mod:`laser.integrations.reliability` and docs/trl.md).
        selector_options: constructor options when ``selector`` is a name (e.g. ``{"alpha": 0.1}``;
            for ``"reliability"``: ``anchor`` (an RM name), ``probe_share``, ``warmup``, ``window``,
            ``max_pairs``, ``min_votes``, ``method``, ``n_boot``, ``min_uncertainty``).
        context: ``"auto"`` (the policy's last-token hidden states when the trainer gives the
            model, else ``"hashed"``), ``"policy"``, ``"hashed"`` (hashed n-grams),
            ``"encoder"`` (sentence encoder), or an object with ``embed(texts)`` and ``dim``.
        context_dim: dimension of the hashed n-gram context.
        feedback: ``"pair_accuracy"`` (gold answers; the default for a bandit),
            ``"majority_pair_accuracy"`` (label-free, needs an answer extractor) or
            ``"mixed_pair_accuracy"`` (gold where given), from ``laser.routing.FEEDBACKS``; unset
            for ``"reliability"``, which learns from the RMs' agreement.
        granularity: ``"round"`` (one RM per round, context = mean prompt embedding) or
            ``"prompt"`` (one RM per prompt group, one update per group).
        answer_column: dataset column holding gold answers.
        task_column: dataset column holding each row's task (answer format).
        task: one task for every row (overrides ``task_column``).
        tag_column: optional column recorded per group in ``history_`` (e.g. ``"domain"``) for
            :meth:`selection_table` (default: ``group_column``).
        group_column: ``"reliability"`` only: the column naming each prompt's routing group
            (domain, dataset, task); without it every prompt is in one group, ``"all"``.
        labelled_pairs: ``"reliability"`` only: ``{group: [(prompt, chosen, rejected), ...]}`` or
            the path of a JSONL file of them (:mod:`laser.routing.labelled`; a line without
            ``group`` is in ``"all"``), a few pairs per group with a known preference; every RM
            scores them once at set-up; they fix the sign of the group's label model when no
            anchor is named and can veto the fit's pick (docs/reliability_routing.md).
        normalizer: reward normaliser (default: the paper's 20/80 quantile rule).
        seed: seed of a selector built by name.
        strict_resume: refuse ``save_steps`` that put a checkpoint inside a generation round (TRL
            regenerates that round on resume, so decisions could not match); False only warns.

    Raises:
        ImportError: TRL is missing or too old.
        ValueError: duplicate RM names, a selector whose arm count differs from the RMs, an
            unknown or loss-based feedback, or another bad setting (all problems named at once).
    """

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
        strict_resume: bool = True,
    ) -> None:
        require_trl()
        super().__init__(
            reward_models,
            selector,
            selector_options=selector_options,
            context=context,
            context_dim=context_dim,
            feedback=feedback,
            granularity=granularity,
            answer_column=answer_column,
            task_column=task_column,
            task=task,
            tag_column=tag_column,
            group_column=group_column,
            labelled_pairs=labelled_pairs,
            normalizer=normalizer,
            seed=seed,
        )
        self.strict_resume = bool(strict_resume)
        self._resume_from: str | None = None
        self._round_steps = (1, 1)  # (gradient_accumulation_steps, micro-steps per round)

    # ------------------------------------------------------------------ checks before training
    def check_dataset(self, dataset) -> None:
        """Refuse a dataset the feedback cannot use, naming the rows and columns at fault.

        Raises:
            ValueError: a needed column is missing, or rows have an unknown task or an empty or
                unparseable gold answer (the first five named, with the total).
        """
        columns = _columns(dataset)
        need_task = self.task is None and self.feedback is not None
        missing = [
            c
            for c, needed in (
                (self.answer_column, "labels" in self.needs),
                (self.task_column, need_task),
                (self.tag_column, self.tag_column is not None),
                (self.group_column, self.group_column is not None),
            )
            if needed and c not in columns
        ]
        missing = list(dict.fromkeys(missing))
        if missing:
            why = (
                "selector 'reliability' reads the group and tag columns"
                if self.feedback is None
                else f"feedback {self.feedback!r} needs "
                + (
                    "gold answers and a task per row"
                    if "labels" in self.needs
                    else "a task per row (its answer extractor)"
                )
            )
            fix = "group_column= / tag_column=" if self.feedback is None else "answer_column= / task_column= / task="
            raise ValueError(
                f"RMRouter: dataset has no column(s) {missing} (columns: {sorted(columns)}); {why}; "
                f"set {fix} or add the column"
            )
        if not hasattr(dataset, "__len__") or self.feedback is None:
            return  # an iterable dataset: rows are checked as they come; reliability reads no answer
        tasks = [self.task] * len(dataset) if self.task is not None else _column(dataset, self.task_column)
        golds = _column(dataset, self.answer_column) if "labels" in self.needs else [None] * len(tasks)
        bad = [
            f"row {i}: {p}" for i, (t, g) in enumerate(zip(tasks, golds, strict=True)) if (p := self._row_problem(t, g))
        ]
        if bad:
            raise ValueError(
                f"RMRouter: {len(bad)} dataset row(s) unusable for feedback {self.feedback!r}: "
                + "; ".join(bad[:5])
                + (" ..." if len(bad) > 5 else "")
            )

    def _row_problem(self, task, gold) -> str | None:
        if task is None or str(task).lower() not in TASK_FORMATS:
            return f"{self.task_column}={task!r} has no answer extractor (valid: {', '.join(TASK_FORMATS)})"
        if "labels" not in self.needs:
            return None
        if gold is None or gold == "":
            return f"{self.answer_column} is empty"
        try:
            normalize_gold(task, gold)
        except ValueError as exc:
            return f"{self.answer_column}: {exc}"
        return None

    def check_args(self, args, save_steps: int | None = None) -> None:
        """Refuse trainer settings the router cannot follow (before any round runs).

        Raises:
            ValueError: fewer than 2 generations, or (with ``strict_resume``) checkpoints that
                would fall inside a generation round.
        """
        ga = int(args.gradient_accumulation_steps)
        per_round = int(args.steps_per_generation) * int(getattr(args, "num_iterations", 1))
        self._round_steps = (ga, per_round)
        save_steps = save_steps if save_steps is not None else args.save_steps
        if (
            self.strict_resume
            and str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps"
            and save_steps
            and (int(save_steps) * ga) % per_round
        ):
            raise ValueError(
                f"RMRouter: save_steps={save_steps} x gradient_accumulation_steps={ga} is not a multiple of "
                f"steps_per_generation x num_iterations={per_round}: a checkpoint would fall inside a "
                "generation round, which TRL regenerates on resume, so the router's decisions after resume "
                f"could not match; use save_steps a multiple of {per_round // np.gcd(per_round, ga)} "
                "(or strict_resume=False to accept it)"
            )

    # ------------------------------------------------------------------ trainer hooks
    def on_train_begin(self, args, state, control, model=None, processing_class=None, train_dataloader=None, **kwargs):
        self.check_args(args, save_steps=getattr(state, "save_steps", None))
        resuming = state.global_step > 0  # the checkpoint's router state holds the labelled pairs' votes
        self.setup(
            args.num_generations, getattr(args, "num_generations_eval", None), model, processing_class, not resuming
        )
        dataset = getattr(train_dataloader, "dataset", None)
        if dataset is not None:
            self.check_dataset(dataset)
        if resuming:
            path = self._resume_from or os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            self.load(path, expect_step=state.global_step)
        elif self.rounds_:
            raise RuntimeError(
                "RMRouter: this router already routed a training run; build a new one "
                "(or resume with train(resume_from_checkpoint=...))"
            )

    def on_step_end(self, args, state, control, **kwargs):
        self.check_idle()

    def on_evaluate(self, args, state, control, **kwargs):
        self.check_idle()

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            self.save(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"), state.global_step)

    def resume_from(self, checkpoint: str) -> None:
        """Read the router state from ``checkpoint`` at the next ``train()`` (only needed when the
        checkpoint is not ``<output_dir>/checkpoint-<step>``)."""
        self._resume_from = str(checkpoint)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The core's state (strategy, normaliser, pool, counters) plus this router's bookkeeping
        under ``"router"`` (JSON-able: set-up, rounds, history)."""
        if self.core is None:
            raise RuntimeError("RMRouter.state_dict: not set up yet")
        sd = self.core.state_dict()
        sd["router"] = {
            "version": _STATE_VERSION,
            "rm_names": self.names,
            "feedback": self.feedback,
            "granularity": self.granularity,
            "context_dim": int(getattr(self.embedder, "dim", -1)),
            "rounds": self.rounds_,
            "eval_rounds": self.eval_rounds_,
            "history": self.history_,
        }
        return sd

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output; the next decisions equal the saved router's.

        Raises:
            ValueError: the state belongs to other RMs, another feedback, granularity or context.
        """
        meta, mine = sd["router"], self.state_dict()["router"]
        wrong = [
            f"{k}: saved {meta.get(k)!r}, this router {mine[k]!r}"
            for k in ("version", "rm_names", "feedback", "granularity", "context_dim")
            if meta.get(k) != mine[k]
        ]
        if wrong:
            raise ValueError("RMRouter.load_state_dict: " + "; ".join(wrong))
        self.core.load_state_dict(sd)
        self.rounds_, self.eval_rounds_ = meta["rounds"], meta["eval_rounds"]
        self.history_ = list(meta["history"])

    def save(self, checkpoint: str, global_step: int) -> str:
        """Write the state into ``<checkpoint>/laser_router/`` with the loop's atomic writer
        (temporary folder, fsync, manifest with sha256, rename); returns the state's folder."""
        sd = self.state_dict()
        ga, per_round = self._round_steps
        sd["router"].update(global_step=int(global_step), mid_round=bool((int(global_step) * ga) % per_round))
        return str(save_state(os.path.join(checkpoint, STATE_DIR), int(global_step), sd, keep_last=1))

    def load(self, checkpoint: str, expect_step: int | None = None) -> None:
        """Read the state written by :meth:`save` from a checkpoint folder.

        Raises:
            FileNotFoundError: the checkpoint has no router state whose manifest verifies.
            ValueError: the state is from another step, another router set-up, or (with
                ``strict_resume``) was saved inside a generation round.
        """
        folder = os.path.join(checkpoint, STATE_DIR)
        sd, found = load_state(folder, required=("router.json", "normalizer.npz"))
        if sd is None and os.path.isfile(os.path.join(folder, "router.json")):
            sd, found = _read_v1(folder), folder  # written before the routing core
        if sd is None:
            raise FileNotFoundError(
                f"RMRouter: no router state in {folder}; a run resumed at step "
                f"{expect_step} needs the laser_router/ folder its checkpoint was saved with "
                "(call router.resume_from(path) when the checkpoint is elsewhere)"
            )
        meta = sd["router"]
        if expect_step is not None and meta["global_step"] != expect_step:
            raise ValueError(
                f"RMRouter: {found} holds the state of step {meta['global_step']}, "
                f"the trainer resumes at step {expect_step}"
            )
        if meta.get("mid_round") and self.strict_resume:
            raise ValueError(
                f"RMRouter: {found} was saved inside a generation round (step "
                f"{meta['global_step']}); TRL regenerates that round on resume, so the router "
                "cannot continue it exactly (strict_resume=False accepts it)"
            )
        self.load_state_dict(sd)


def _read_v1(folder: str) -> dict:
    """A version-1 router state (``state.npz`` + ``router.json``, before the routing core) in
    today's :meth:`RMRouter.state_dict` layout."""
    import json

    with open(os.path.join(folder, "router.json"), encoding="utf-8") as f:
        meta = json.load(f)
    with np.load(os.path.join(folder, "state.npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    part = lambda prefix: {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
    down = {int(k): v for k, v in meta["down"].items()}
    return {
        "strategy": part("selector."),
        "normalizer": part("normalizer."),
        "pool": {
            "rm_names": meta["rm_names"],
            "responses_scored": arrays["rows_scored"].tolist(),
            "score_calls": arrays["calls"].tolist(),
            "down": sorted(down),
            "errors": {str(k): v for k, v in down.items()},
        },
        "counters": {"skipped": meta["skipped"]},
        "router": {**meta, "version": _STATE_VERSION},
    }


def _columns(dataset) -> set[str]:
    names = getattr(dataset, "column_names", None)
    if isinstance(names, dict):  # a DatasetDict
        raise ValueError("RMRouter: pass one split, not a DatasetDict")
    if names is None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__") and len(dataset):
        names = list(dataset[0])
    return set(names or ())


def _column(dataset, name: str) -> list:
    if hasattr(dataset, "column_names"):
        return list(dataset[name])
    return [row[name] for row in dataset]
