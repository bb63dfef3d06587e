"""The LASeR training loop: one class that reads top to bottom.

Per step (one mini-batch of prompts), one :class:`~laser.training.step.Step` travels through:
    context -> strategy.decide -> sample -> strategy.score (via the reward pool) -> pairs
    -> DPO + NLL update -> feedback -> strategy.learn -> log record -> checkpoint

Selection (decide, score through the reward pool, pairs, feedback, learn) is the routing core's
:class:`~laser.routing.Router`; what differs between LASeR, its per-prompt variant and the
ensembles lives in its strategy (:mod:`laser.routing.strategies`). The Trainer owns the policy:
contexts, sampling, the update (:mod:`laser.training.update`), checkpoint files and the log.
Under several processes (Accelerate) each process takes a shard of every batch; contexts are
gathered and every process decides on its own copy of the strategy (same seed, same updates, so
a selector that draws random numbers draws the same ones); process 0's arms are broadcast and a
process whose arms differ stops the run (:meth:`~laser.routing.Router.decide`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from laser.routing import FEEDBACKS, RewardPool, Router, make_strategy, resolve_feedback
from laser.training import checkpoint
from laser.training.dist import Dist
from laser.training.records import finite_or_none, json_default
from laser.training.records import step_seed as _seed
from laser.training.step import Step
from laser.training.trackers import Trackers, tracker_names
from laser.training.update import PolicyUpdate

log = logging.getLogger("laser")


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or bandit reward was NaN or infinite."""


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
        strategy: an already-built :class:`~laser.routing.strategies.Strategy` (overrides both).
    """

    def __init__(
        self,
        cfg,
        policy,
        rms: list,
        examples: list,
        accelerator=None,
        context_fn=None,
        show_progress: bool = True,
        selector=None,
        strategy=None,
    ):
        from accelerate import Accelerator

        self.cfg, self.policy, self.examples = cfg, policy, list(examples)
        device = getattr(policy, "device", None)
        self.acc = accelerator or Accelerator(
            cpu=device is None or device.type == "cpu",
            log_with=tracker_names(cfg.log_with) or None,
            project_dir=cfg.output_dir,
        )
        self.dist = Dist(self.acc)
        join_at = {
            k: int(spec["add_at_step"])
            for k, spec in enumerate(cfg.rewards)
            if isinstance(spec, dict) and spec.get("add_at_step")
        }
        pool = RewardPool(rms, join_at)
        self.out = Path(cfg.output_dir)
        self.context_fn, self.show_progress = context_fn, show_progress
        self.feedback = resolve_feedback(cfg.train.feedback, self.examples)
        self.router = Router(
            strategy or make_strategy(cfg, pool.names, self._context_dim, selector),
            pool,
            self.feedback,
            normalizer=self._normalizer(),
            collectives=self.dist,
            pairing=cfg.train.pairing,
            num_pairs=cfg.train.pairs_per_prompt,
        )
        self.needs_after = "after" in FEEDBACKS[self.feedback].needs
        self.update = PolicyUpdate(cfg.train, policy, self.acc)
        self.iteration = self.step_in_iter = self.global_step = self.skipped_steps = 0
        self.skipped_prompts = 0
        self.steps_per_iter = len(self._batches(0))
        self.trackers = Trackers(self.acc, cfg)

    # ----- set-up -------------------------------------------------------------------------
    @property
    def strategy(self):
        return self.router.strategy

    @property
    def pool(self) -> RewardPool:
        return self.router.pool

    @property
    def normalizer(self):
        return self.router.normalizer

    @property
    def selector(self):
        """The strategy's learned state (a bandit or the online ensemble's weights), or None."""
        return self.strategy.selector

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.update.params

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
            return [[self.examples[i] for i in order[j : j + b]] for j in range(0, n, b)]
        groups: dict[str, list] = {}
        for i in order:
            groups.setdefault(self.examples[i].group, []).append(self.examples[i])
        batches = [g[j : j + b] for _, g in sorted(groups.items()) for j in range(0, len(g), b)]
        return [batches[i] for i in rng.permutation(len(batches))] if self.cfg.data.shuffle else batches

    def score_labelled(self) -> dict | None:
        """Every RM scores the reliability strategy's labelled pairs (``selector.kwargs.labelled_pairs``)
        once, before the first batch (every process: the main one scores and broadcasts); a
        labelled group no training prompt is in is named in a warning. None without labelled pairs."""
        from laser.routing.labelled import score_strategy_pairs

        return score_strategy_pairs(self.router, {ex.group for ex in self.examples})

    # ----- the loop -----------------------------------------------------------------------
    def run(self) -> dict:
        """Train for ``train.iterations`` passes over the prompts, resuming if a checkpoint exists."""
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resume():  # a checkpoint's router state already holds the labelled votes
            self.score_labelled()
        total = self.cfg.train.iterations * self.steps_per_iter
        bar = tqdm(
            total=total,
            initial=self.global_step,
            desc="laser train",
            unit="step",
            dynamic_ncols=True,
            disable=not (self.show_progress and self.acc.is_main_process),
        )
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
        return {
            "global_step": self.global_step,
            "responses_scored": self.pool.responses_scored.tolist(),
            "score_calls": self.pool.score_calls.tolist(),
            "skipped_steps": self.skipped_steps,
            "skipped_prompts": self.skipped_prompts,
        }

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
        shard = batch[self.acc.process_index :: self.acc.num_processes]
        return Step(self.iteration, self.step_in_iter, self.global_step + 1, batch, shard)

    def sample_and_score(self, step: Step) -> None:
        """Context, samples, then the core's decision and scores of ``step`` (no training)."""
        cfg, route = self.cfg, step.route
        torch.manual_seed(_seed(cfg.seed, self.iteration, self.step_in_iter, 1))  # e.g. LoRA dropout
        route.contexts = self.dist.gather_rows(self._contexts(step.prompts))  # (B, d) over the whole batch
        step.mark("context")
        step.samples = self.policy.sample(
            step.prompts,
            cfg.train.n_samples,
            cfg.train.temperature,
            cfg.train.top_p,
            cfg.train.max_new_tokens,
            seed=_seed(cfg.seed, self.iteration, self.step_in_iter, self.dist.rank),
        )
        route.add_responses(step.samples.texts, step.samples.prompt_index)
        step.mark("sample")
        self.router.route(route)  # an RM that fails is masked and the batch decided again
        step.mark("score")
        step.arms_by_rank = self.dist.all_gather(route.arms)  # equal on every rank

    def _contexts(self, prompts: list[str]) -> np.ndarray:
        if not self.strategy.needs_context:
            return np.zeros((len(prompts), 1))
        if self.context_fn is not None:
            return np.asarray(self.context_fn(prompts), dtype=np.float64)
        return self.policy.context(prompts)

    # ----- pairs, update, feedback --------------------------------------------------------
    def _pairs(self, step: Step) -> None:
        self.router.pairs(step.route)
        self.skipped_prompts += step.route.skipped_prompts

    def _train(self, step: Step) -> None:
        """The policy update, then the typed outcome the feedback reads (answer checks included)."""
        step.terms = self.update.run(
            step.samples, step.route.flat_pairs(), len(step.shard), self.dist, after=self.needs_after
        )
        if step.terms["nonfinite"]:
            self._nonfinite(step, step.terms["nonfinite"])
        step.outcome = self.router.outcome(step.route, step.terms)

    def _nonfinite(self, step: Step, what: str, arm: str | None = None) -> None:
        where = f"iteration {step.iteration}, step {step.index} (global step {step.global_step})"
        arm = arm or self.strategy.arm_name(step.route, self.pool.names)
        msg = f"{what} at {where}, arm {arm}; last checkpoint kept intact"
        if self.cfg.train.on_nonfinite == "skip" and self.skipped_steps < self.cfg.train.max_skipped_steps:
            self.skipped_steps += 1
            log.warning("skipping step: %s", msg)
            return
        raise NonFiniteError(msg)

    def _learn(self, step: Step) -> None:
        """Feedback -> normalised rewards -> the strategy's update (the core's rules)."""
        self.router.on_nonfinite = lambda arm, value: self._nonfinite(step, f"non-finite bandit reward ({value})", arm)
        step.raw, step.rewards = self.router.learn(step.route, step.outcome)

    # ----- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resume needs, composed from its owners' state dicts (files:
        :mod:`laser.training.checkpoint`)."""
        routing = self.router.state_dict()
        return {
            **self.update.state_dict(),  # full tensors: trainable, reference, optimizer (a collective when sharded)
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "normalizer": routing["normalizer"],
            "strategy": routing["strategy"],
            "counters": {
                "iteration": self.iteration,
                "step_in_iter": self.step_in_iter,
                "global_step": self.global_step,
                "skipped_steps": self.skipped_steps,
                "skipped_prompts": self.skipped_prompts,
                "rm_names": self.pool.names,
                "pool": routing["pool"],
                "router": routing["counters"],
                "model_signature": self.update.signature(),
                "selector": self.strategy.name,
            },
            "config": self.cfg,
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output (as read back by :func:`laser.training.checkpoint.load`).

        Raises:
            laser.training.checkpoint.ResumeError: the checkpoint is of another set-up.
        """
        c = sd["counters"]
        checkpoint.check_compatible(c, self.pool.names, self.strategy.name, self.update.params, self.out)
        self.update.load_state_dict(sd)
        torch.set_rng_state(sd["rng"]["cpu"])
        if sd["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(sd["rng"]["cuda"])
        pool = c.get("pool") or {
            "rm_names": c["rm_names"],
            "rm_calls": c["rm_calls"],
            "down": c["rm_down"],
            "errors": c["rm_errors"],
        }  # a checkpoint written before the routing core
        self.router.load_state_dict(
            {"strategy": sd.get("strategy"), "normalizer": sd["normalizer"], "pool": pool, "counters": c.get("router")}
        )
        self.iteration, self.step_in_iter = c["iteration"], c["step_in_iter"]
        self.global_step, self.skipped_steps, self.skipped_prompts = (
            c["global_step"],
            c["skipped_steps"],
            c["skipped_prompts"],
        )

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
            base = {
                "model": self.cfg.policy.model,
                "gguf_file": self.cfg.policy.gguf_file,
                "chat_template": self.cfg.policy.chat_template,
            }
            (Path(folder) / "laser_policy.json").write_text(json.dumps(base, indent=1))
        self.acc.wait_for_everyone()

    # ----- logging ------------------------------------------------------------------------
    def _record(self, step: Step) -> dict:
        t, terms, route = step.times, step.terms, step.route
        scores, pool = route.scores, self.pool  # the pool's counters are summed over processes
        ref = FEEDBACKS[self.feedback].reference
        correct = {self.feedback: step.outcome.correct[ref].mean} if ref else {}
        if "gold" in step.outcome.correct:  # a log-only reference (Router log_references): gold pair accuracy
            correct.setdefault("pair_accuracy", step.outcome.correct["gold"].mean)
        return {
            "iteration": step.iteration,
            "step": step.index,
            "global_step": step.global_step,
            "arm": route.arms[0],
            "arm_name": self.strategy.arm_name(route, pool.names),
            "prompt_ids": [ex.id for ex in step.batch],
            "prompt_arms": route.arms,
            "arms_by_rank": step.arms_by_rank,
            "ucb": None,
            **self.strategy.record(route),
            "reward": step.rewards,
            "raw_reward": step.raw,
            "loss": terms.get("loss"),
            "dpo": terms.get("dpo"),
            "nll": terms.get("nll"),
            "grad_norm": terms.get("grad_norm"),
            "loss_after": terms.get("loss_after"),
            **correct,
            "feedback": self.feedback if self.strategy.reads_feedback else None,  # None: not read
            "n_pairs": terms.get("n_pairs"),
            "score_mean": float(np.nanmean(scores)) if np.isfinite(scores).any() else None,
            "responses_scored": pool.responses_scored.tolist(),
            "score_calls": pool.score_calls.tolist(),
            "responses_scored_total": int(pool.responses_scored.sum()),
            "score_calls_total": int(pool.score_calls.sum()),
            "skipped_prompts": self.skipped_prompts,
            "skipped_steps": self.skipped_steps,
            "events": route.events,
            "time": {k: round(t[k] - t["start"], 4) for k in ("context", "sample", "score", "update", "end")},
        }

    def _log(self, record: dict) -> None:
        if self.acc.is_main_process:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(finite_or_none(record), default=json_default) + "\n")
        self.trackers.log(record, self.pool.names)
