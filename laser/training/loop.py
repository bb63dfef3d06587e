"""The LASeR training loop: one class that reads top to bottom.

Per step (one mini-batch of prompts), one :class:`~laser.training.step.Step` travels through:
    context -> strategy.decide -> sample -> strategy.score (via the reward pool) -> pairs
    -> DPO + NLL update -> feedback -> strategy.learn -> log record -> checkpoint

What differs between LASeR, its per-prompt variant and the ensembles lives in the strategy
(:mod:`laser.training.strategies`); the policy update lives in :mod:`laser.training.update`.
Under several processes (Accelerate) each process takes a shard of every batch; contexts are
gathered, the decision is made once on the main process and broadcast, and every process keeps
an identical copy of the strategy's state.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from laser.rewards.base import RewardModelError
from laser.training import state as checkpoint
from laser.training.dist import Dist
from laser.training.feedback import FEEDBACKS, resolve_feedback  # noqa: F401 (resolve_feedback re-exported)
from laser.training.outcomes import KINDS, correctness_terms
from laser.training.pairs import build_pairs
from laser.training.records import finite_or_none, json_default
from laser.training.scoring import RewardPool
from laser.training.step import Step
from laser.training.strategies import make_strategy
from laser.training.trackers import Trackers, tracker_names
from laser.training.update import PolicyUpdate

log = logging.getLogger("laser")


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or bandit reward was NaN or infinite."""


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


class Trainer:
    """LASeR and its baselines on one loop.

    Args:
        cfg: the validated run config.
        policy: a :class:`laser.policy.model.Policy`.
        rms: reward models; arm k is ``rms[k]``.
        examples: the training prompts (:class:`laser.tasks.base.Example`).
        accelerator: an ``accelerate.Accelerator`` (one is created when None, with ``cfg.log_with``).
        context_fn: optional ``prompts -> (B, d)`` replacing the policy's hidden states
            (e.g. a sentence encoder).
        show_progress: draw a tqdm bar on the main process.
        selector: an already-built selector (e.g. a fitted classifier) instead of ``cfg.selector``.
        strategy: an already-built :class:`~laser.training.strategies.Strategy` (overrides both).
        train: False for a run without policy updates (best-of-n): no optimizer is built.
    """

    def __init__(self, cfg, policy, rms: list, examples: list, accelerator=None, context_fn=None,
                 show_progress: bool = True, selector=None, strategy=None, train: bool = True):
        from accelerate import Accelerator

        self.cfg, self.policy, self.examples = cfg, policy, list(examples)
        device = getattr(policy, "device", None)
        self.acc = accelerator or Accelerator(cpu=device is None or device.type == "cpu",
                                              log_with=tracker_names(cfg.log_with) or None, project_dir=cfg.output_dir)
        self.dist = Dist(self.acc)
        join_at = {k: int(spec["add_at_step"]) for k, spec in enumerate(cfg.rewards)
                   if isinstance(spec, dict) and spec.get("add_at_step")}
        self.pool = RewardPool(rms, join_at)
        self.out = Path(cfg.output_dir)
        self.context_fn, self.show_progress = context_fn, show_progress
        self.strategy = strategy or make_strategy(cfg, self.pool.names, self._context_dim, selector)
        self.feedback = resolve_feedback(cfg.train.feedback, self.examples)
        self.feedback_fn, needs = FEEDBACKS[self.feedback]
        self.needs_after = "after" in needs
        self.correctness = [self.feedback] if self.feedback in KINDS else []
        self.strategy.check(self.feedback, self.acc.num_processes)
        self.normalizer = self._normalizer()
        self.update = PolicyUpdate(cfg.train, policy, self.acc) if train else None
        self.iteration = self.step_in_iter = self.global_step = self.skipped_steps = 0
        self.skipped_prompts = 0
        self.steps_per_iter = len(self._batches(0))
        self.trackers = Trackers(self.acc, cfg)

    # ----- set-up -------------------------------------------------------------------------
    @property
    def selector(self):
        """The strategy's learned state (a bandit or the online ensemble's weights), or None."""
        return self.strategy.selector

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.update.params if self.update is not None else {}

    def _normalizer(self):
        from laser.bandits import QuantileNormalizer

        return QuantileNormalizer(self.cfg.selector.normalizer_low, self.cfg.selector.normalizer_high)

    def _context_dim(self) -> int:
        if self.context_fn is not None:
            return int(np.asarray(self.context_fn([self.examples[0].prompt])).shape[1])
        model = getattr(self.policy, "model", None)
        if model is not None:
            return int(model.config.hidden_size)
        return int(np.asarray(self.policy.context([self.examples[0].prompt])).shape[1])

    def _batches(self, iteration: int) -> list[list]:
        """This iteration's mini-batches: a seeded shuffle, or per-group batches in shuffled order."""
        n, b = len(self.examples), self.cfg.train.batch_size
        rng = np.random.default_rng([self.cfg.seed, iteration])
        order = rng.permutation(n) if self.cfg.data.shuffle else np.arange(n)
        if not self.cfg.data.group_batches:
            return [[self.examples[i] for i in order[j:j + b]] for j in range(0, n, b)]
        groups: dict[str, list] = {}
        for i in order:
            groups.setdefault(self.examples[i].group, []).append(self.examples[i])
        batches = [g[j:j + b] for _, g in sorted(groups.items()) for j in range(0, len(g), b)]
        return [batches[i] for i in rng.permutation(len(batches))] if self.cfg.data.shuffle else batches

    # ----- the loop -----------------------------------------------------------------------
    def run(self) -> dict:
        """Train for ``train.iterations`` passes over the prompts, resuming if a checkpoint exists."""
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        total = self.cfg.train.iterations * self.steps_per_iter
        bar = tqdm(total=total, initial=self.global_step, desc="laser train", unit="step", dynamic_ncols=True,
                   disable=not (self.show_progress and self.acc.is_main_process))
        while self.iteration < self.cfg.train.iterations:
            batches = self._batches(self.iteration)
            if self.step_in_iter == 0:  # the policy as it is now is this iteration's frozen reference
                self.update.freeze_reference()
            while self.step_in_iter < len(batches):
                record = self.train_step(batches[self.step_in_iter])
                self.step_in_iter += 1
                self.global_step += 1
                self._log(record)
                bar.update(1)
                bar.set_postfix(arm=record["arm_name"], loss=f"{record['loss']:.3f}")
                every = self.cfg.checkpoint.every
                if every and self.global_step % every == 0:
                    self.save()
            self.iteration, self.step_in_iter = self.iteration + 1, 0
        bar.close()
        self.save()
        self.export(self.out / "final")
        self.trackers.finish()
        return {"global_step": self.global_step, "rm_calls": self.pool.calls.tolist(),
                "skipped_steps": self.skipped_steps, "skipped_prompts": self.skipped_prompts}

    def train_step(self, batch: list) -> dict:
        """One step on one mini-batch; returns the step's log record."""
        step = self.new_step(batch)
        self.sample_and_score(step)
        self._pairs(step)
        self._train(step)
        step.mark("update")
        self._learn(step)
        step.mark("end")
        return self._record(step)

    def new_step(self, batch: list) -> Step:
        shard = batch[self.acc.process_index::self.acc.num_processes]
        return Step(self.iteration, self.step_in_iter, self.global_step + 1, batch, shard)

    def sample_and_score(self, step: Step) -> None:
        """Context, decision, samples and scores of ``step`` (no training)."""
        cfg = self.cfg
        torch.manual_seed(_seed(cfg.seed, self.iteration, self.step_in_iter, 1))  # e.g. LoRA dropout
        step.contexts = self.dist.gather_rows(self._contexts(step.prompts))  # (B, d) over the whole batch
        step.mark("context")
        step.samples = self.policy.sample(step.prompts, cfg.train.n_samples, cfg.train.temperature, cfg.train.top_p,
                                          cfg.train.max_new_tokens,
                                          seed=_seed(cfg.seed, self.iteration, self.step_in_iter, self.dist.rank))
        step.mark("sample")
        self._decide_and_score(step)
        step.mark("score")
        step.arms_by_rank = self.dist.gather_objects(step.arms)  # equal on every rank: broadcast

    # ----- context, decision and scores ---------------------------------------------------
    def _contexts(self, prompts: list[str]) -> np.ndarray:
        if not self.strategy.needs_context:
            return np.zeros((len(prompts), 1))
        if self.context_fn is not None:
            return np.asarray(self.context_fn(prompts), dtype=np.float64)
        return self.policy.context(prompts)

    def _decide_and_score(self, step: Step) -> None:
        """Decide and score; an RM that fails is masked and the decision is made again."""
        step.events = self.pool.refresh(self.selector, step=step.global_step)
        while True:
            step.arms = self.strategy.decide(step, self.dist)
            step.my_arms = self.dist.my_slice(step.arms, len(step.shard))
            try:
                step.scores, step.votes = self.strategy.score(step, self.pool)
                failure = None
            except RewardModelError as exc:
                failure = (exc.arm, exc)
            failures = [f for f in self.dist.gather_objects(failure) if f is not None]
            if not failures:
                return
            for k, exc in failures:
                step.events.append(self.pool.mark_down(k, exc, self.selector))
                log.warning(step.events[-1])

    # ----- pairs, update, feedback --------------------------------------------------------
    def _pairs(self, step: Step) -> None:
        n, P = self.cfg.train.n_samples, self.cfg.train.pairs_per_prompt
        for i in range(len(step.samples.prompt_ids)):
            sl = slice(i * n, (i + 1) * n)
            if not np.isfinite(step.scores[sl]).any():
                step.skipped_prompts += 1
            found = build_pairs(step.scores[sl], P, self.cfg.train.pairing,
                                votes=None if step.votes is None else step.votes[:, sl])
            step.pairs.append([(i * n + c, i * n + r) for c, r in found])
        self.skipped_prompts += step.skipped_prompts

    def _train(self, step: Step) -> None:
        """The policy update and the answer-based outcomes the feedback needs."""
        step.terms = self.update.run(step.samples, step.flat_pairs(), len(step.shard), self.dist,
                                     after=self.needs_after)
        if step.terms["nonfinite"]:
            self._nonfinite(step, step.terms["nonfinite"])
        for kind in self.correctness:
            step.terms.update(correctness_terms(kind, step.shard, step.samples, step.pairs, self.dist))

    def _nonfinite(self, step: Step, what: str, arm: str | None = None) -> None:
        where = f"iteration {step.iteration}, step {step.index} (global step {step.global_step})"
        arm = arm or self.strategy.arm_name(step, self.pool.names)
        msg = f"{what} at {where}, arm {arm}; last checkpoint kept intact"
        if self.cfg.train.on_nonfinite == "skip" and self.skipped_steps < self.cfg.train.max_skipped_steps:
            self.skipped_steps += 1
            log.warning("skipping step: %s", msg)
            return
        raise NonFiniteError(msg)

    def _learn(self, step: Step) -> None:
        """Feedback -> normalised rewards -> the strategy's update (once per step, or per prompt)."""
        items = self.strategy.outcomes(step, self.dist)
        self.apply_rewards(step, items, [self.feedback_fn(o) if o is not None else None for _, _, o in items])

    def apply_rewards(self, step: Step, items: list, raw: list[float | None]) -> None:
        """Check, normalise and hand raw rewards of the strategy's ``items`` to ``strategy.learn``."""
        rewards = []
        for (arm, _, _), r in zip(items, raw):
            if r is not None and not np.isfinite(r):
                self._nonfinite(step, f"non-finite bandit reward ({r})", self.pool.names[arm])
                r = None
            rewards.append(self.normalizer.normalize(r) if r is not None else None)
        step.raw, step.rewards = raw, (self.strategy.learn(items, rewards) if items else [])

    # ----- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resume needs (see :mod:`laser.training.state` for the files)."""
        return {
            **self.update.state_dict(),  # full tensors: trainable, reference, optimizer (a collective when sharded)
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "normalizer": self.normalizer.state_dict(), "strategy": self.strategy.state_dict(),
            "counters": {
                "iteration": self.iteration, "step_in_iter": self.step_in_iter, "global_step": self.global_step,
                "skipped_steps": self.skipped_steps, "skipped_prompts": self.skipped_prompts,
                "rm_names": self.pool.names, "rm_calls": self.pool.calls.tolist(), "rm_down": sorted(self.pool.down),
                "rm_errors": {str(k): v for k, v in self.pool.last_errors.items()},
                "model_signature": self.update.signature(), "selector": self.strategy.name},
            "config": self.cfg,
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output (as read back by :func:`laser.training.state.load`).

        Raises:
            laser.training.state.ResumeError: the checkpoint is of another set-up.
        """
        c = sd["counters"]
        checkpoint.check_compatible(c, self.pool.names, self.strategy.name, self.update.params, self.out)
        self.update.load_state_dict(sd)
        torch.set_rng_state(sd["rng"]["cpu"])
        if sd["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(sd["rng"]["cuda"])
        self.normalizer.load_state_dict(sd["normalizer"])
        if sd.get("strategy") is not None:
            self.strategy.load_state_dict(sd["strategy"])
        self.iteration, self.step_in_iter = c["iteration"], c["step_in_iter"]
        self.global_step, self.skipped_steps, self.skipped_prompts = c["global_step"], c["skipped_steps"], \
            c["skipped_prompts"]
        self.pool.calls = np.asarray(c["rm_calls"], dtype=np.int64)
        self.pool.down = set(c["rm_down"])
        self.pool.last_errors = {int(k): v for k, v in c["rm_errors"].items()}

    def save(self) -> Path | None:
        """Write a checkpoint (main process; every process synchronises)."""
        self.acc.wait_for_everyone()
        folder, sd = None, self.state_dict()  # every process: gathering sharded tensors is a collective
        if self.acc.is_main_process:
            folder = checkpoint.save(self.out / "checkpoints", self.global_step, sd, self.cfg.checkpoint.keep_last)
        self.acc.wait_for_everyone()
        return folder

    def resume(self) -> bool:
        """Restore the newest verified checkpoint, if any; the log keeps only the steps it holds."""
        sd, folder = checkpoint.load_latest(self.out / "checkpoints", self.strategy.state_dict() is not None)
        if sd is not None:
            self.load_state_dict(sd)
            log.info("resumed from %s at iteration %d, step %d", folder, self.iteration, self.step_in_iter)
        if self.acc.is_main_process:  # the log is the main process's
            checkpoint.truncate_log(self.out / "log.jsonl", self.global_step)
        return sd is not None

    def export(self, folder: Path) -> None:
        """Save the trained policy (or its LoRA adapter) with save_pretrained, plus its tokenizer."""
        weights = self.update.export_state_dict()  # every process (None unless sharded)
        if self.acc.is_main_process:
            self.acc.unwrap_model(self.update.model).save_pretrained(folder, state_dict=weights)
            self.policy.tokenizer.save_pretrained(folder)
            base = {"model": self.cfg.policy.model, "gguf_file": self.cfg.policy.gguf_file,
                    "chat_template": self.cfg.policy.chat_template}
            (Path(folder) / "laser_policy.json").write_text(json.dumps(base, indent=1))
        self.acc.wait_for_everyone()

    # ----- logging ------------------------------------------------------------------------
    def _record(self, step: Step) -> dict:
        t, terms = step.times, step.terms
        calls = [int(c) for c in self.dist.sum(self.pool.calls.astype(float).tolist())]  # all processes
        scores = step.scores
        return {
            "iteration": step.iteration, "step": step.index, "global_step": step.global_step,
            "arm": step.arms[0], "arm_name": self.strategy.arm_name(step, self.pool.names),
            "prompt_ids": [ex.id for ex in step.batch], "prompt_arms": step.arms, "arms_by_rank": step.arms_by_rank,
            "ucb": None, **self.strategy.record(step), "reward": step.rewards, "raw_reward": step.raw,
            "loss": terms.get("loss"), "dpo": terms.get("dpo"), "nll": terms.get("nll"),
            "grad_norm": terms.get("grad_norm"), "loss_after": terms.get("loss_after"),
            **{kind: terms.get(kind) for kind in KINDS},
            "feedback": self.feedback, "n_pairs": terms.get("n_pairs"),
            "score_mean": float(np.nanmean(scores)) if np.isfinite(scores).any() else None,
            "rm_calls": calls, "rm_calls_total": int(sum(calls)),
            "skipped_prompts": self.skipped_prompts, "skipped_steps": self.skipped_steps, "events": step.events,
            "time": {k: round(t[k] - t["start"], 4) for k in ("context", "sample", "score", "update", "end")},
        }

    def _log(self, record: dict) -> None:
        if self.acc.is_main_process:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(finite_or_none(record), default=json_default) + "\n")
        self.trackers.log(record, self.pool.names)
