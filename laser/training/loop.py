"""The LASeR training loop: one class that reads top to bottom.

Per step (one mini-batch of prompts):
    context -> select arm(s) -> sample n responses -> score with the picked RM(s) -> pairs
    -> DPO + NLL update -> feedback -> normalised reward -> selector.update -> log -> checkpoint

Runs under Hugging Face Accelerate: each process takes a shard of every batch; the contexts
are gathered, the decision is made once on the main process and broadcast, every process
applies the same arm(s) and keeps an identical copy of the selector. Gradients are summed
across processes and scaled by the global pair count, so the update equals a single-process
update on the whole batch.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from laser.bandits import QuantileNormalizer, make_selector
from laser.config import SELECTOR_ENSEMBLES, RunConfig
from laser.rewards.base import RewardModelError
from laser.training import state as ckpt_state
from laser.training.feedback import FEEDBACKS
from laser.training.losses import laser_loss
from laser.training.pairs import build_pairs, ensemble_scores
from laser.training.records import finite_or_none, json_default, per_prompt
from laser.training.scoring import RewardPool

log = logging.getLogger("laser")
CONTEXT_FREE = {"fixed", "random", "round_robin", "exp3", "ucb1", "epsilon_greedy", *SELECTOR_ENSEMBLES}


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or bandit reward was NaN or infinite."""


def resolve_feedback(name: str, examples: list) -> str:
    """``auto`` -> ``pair_accuracy`` when every prompt has a gold answer and a task, else ``neg_loss``.

    Raises:
        ValueError: a label-based feedback was asked for but some prompt has no gold answer.
    """
    labelled = all(ex.answer and ex.task for ex in examples)
    if name == "auto":
        return "pair_accuracy" if labelled and examples else "neg_loss"
    if "labels" in FEEDBACKS[name][1] and not labelled:
        missing = next(ex.id for ex in examples if not (ex.answer and ex.task))
        raise ValueError(f"train.feedback={name} needs a gold answer and a task for every prompt; "
                         f"prompt {missing!r} has none")
    return name


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


class Trainer:
    """LASeR and its baselines on one loop.

    Args:
        cfg: the validated run config.
        policy: a :class:`laser.policy.model.Policy`.
        rms: reward models; arm k is ``rms[k]``.
        examples: the training prompts (:class:`laser.tasks.base.Example`).
        accelerator: an ``accelerate.Accelerator`` (one is created when None).
        context_fn: optional ``prompts -> (B, d)`` replacing the policy's hidden states
            (e.g. a sentence encoder).
        show_progress: draw a tqdm bar on the main process.
        selector: an already-built selector (e.g. a fitted classifier) instead of ``cfg.selector``.
    """

    def __init__(self, cfg: RunConfig, policy, rms: list, examples: list, accelerator=None,
                 context_fn=None, show_progress: bool = True, selector=None):
        from accelerate import Accelerator

        self.cfg, self.policy, self.examples = cfg, policy, list(examples)
        self.acc = accelerator or Accelerator(cpu=policy.device.type == "cpu")
        join_at = {k: int(spec["add_at_step"]) for k, spec in enumerate(cfg.rewards)
                   if isinstance(spec, dict) and spec.get("add_at_step")}
        self.pool = RewardPool(rms, join_at)
        self.out = Path(cfg.output_dir)
        self.ensemble = cfg.selector.name if cfg.selector.name in SELECTOR_ENSEMBLES else None
        if self.ensemble == "online_ensemble" and type(self) is Trainer:
            raise ValueError("selector.name=online_ensemble runs with laser.compare.online.OnlineEnsembleTrainer "
                             "(what `laser train` uses for it), not the plain Trainer")
        self.context_free = cfg.selector.name in CONTEXT_FREE or cfg.selector.context == "none"
        self.context_fn = context_fn
        self.show_progress = show_progress
        dim = 1 if self.context_free else self._context_dim()
        self.selector = None if self.ensemble else (selector or self._make_selector(dim))
        self.normalizer = QuantileNormalizer(cfg.selector.normalizer_low, cfg.selector.normalizer_high)
        self.params = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        self.ref_state: dict[str, torch.Tensor] = {}
        self.iteration = self.step_in_iter = self.global_step = self.skipped_steps = 0
        self.skipped_prompts = 0
        self.steps_per_iter = len(self._batches(0))
        self.feedback = resolve_feedback(cfg.train.feedback, self.examples)
        self.feedback_fn, needs = FEEDBACKS[self.feedback]
        self.needs_after, self.needs_labels = "after" in needs, "labels" in needs

    # ----- set-up -------------------------------------------------------------------------
    def _context_dim(self) -> int:
        if self.context_fn is not None:
            return int(np.asarray(self.context_fn([self.examples[0].prompt])).shape[1])
        return int(self.policy.model.config.hidden_size)

    def _make_selector(self, dim: int):
        s, kwargs = self.cfg.selector, dict(self.cfg.selector.kwargs)
        if s.name == "fixed":
            kwargs["arm"] = self.pool.names.index(s.arm)
        if s.name in ("linucb", "discounted_linucb", "sliding_linucb"):
            kwargs.setdefault("alpha", s.alpha)
        return make_selector(s.name, len(self.pool.rms), dim, seed=self.cfg.seed, **kwargs)

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
        ckpt_state.maybe_resume(self)
        total = self.cfg.train.iterations * self.steps_per_iter
        bar = tqdm(total=total, initial=self.global_step, desc="laser train", unit="step", dynamic_ncols=True,
                   disable=not (self.show_progress and self.acc.is_main_process))
        while self.iteration < self.cfg.train.iterations:
            batches = self._batches(self.iteration)
            if self.step_in_iter == 0:  # the policy as it is now is this iteration's frozen reference
                self.ref_state = {n: p.detach().clone() for n, p in self.params.items()}
            while self.step_in_iter < len(batches):
                record = self.train_step(batches[self.step_in_iter])
                self.step_in_iter += 1
                self.global_step += 1
                self._log(record)
                bar.update(1)
                bar.set_postfix(arm=record["arm_name"], loss=f"{record['loss']:.3f}")
                every = self.cfg.checkpoint.every
                if every and self.global_step % every == 0:
                    ckpt_state.save(self)
            self.iteration, self.step_in_iter = self.iteration + 1, 0
        bar.close()
        ckpt_state.save(self)
        self.export(self.out / "final")
        return {"global_step": self.global_step, "rm_calls": self.pool.calls.tolist(),
                "skipped_steps": self.skipped_steps, "skipped_prompts": self.skipped_prompts}

    def export(self, folder: Path) -> None:
        """Save the trained policy (or its LoRA adapter) with save_pretrained, plus its tokenizer."""
        if self.acc.is_main_process:
            self.policy.model.save_pretrained(folder)
            self.policy.tokenizer.save_pretrained(folder)
            base = {"model": self.cfg.policy.model, "gguf_file": self.cfg.policy.gguf_file,
                    "chat_template": self.cfg.policy.chat_template}
            (Path(folder) / "laser_policy.json").write_text(json.dumps(base, indent=1))
        self.acc.wait_for_everyone()

    def train_step(self, batch: list) -> dict:
        """One step on one mini-batch; returns the step's log record."""
        cfg, t = self.cfg, {"start": time.perf_counter()}
        torch.manual_seed(_seed(cfg.seed, self.iteration, self.step_in_iter, 1))  # e.g. LoRA dropout
        shard = batch[self.acc.process_index::self.acc.num_processes]
        prompts = self._current_prompts = [ex.prompt for ex in shard]
        self._current_arm_name = "(not selected yet)"
        contexts = self._gather_rows(self._contexts(prompts))  # (B, d) over the whole batch
        t["context"] = time.perf_counter()
        samples = self.policy.sample(prompts, cfg.train.n_samples, cfg.train.temperature, cfg.train.top_p,
                                     cfg.train.max_new_tokens,
                                     seed=_seed(cfg.seed, self.iteration, self.step_in_iter, self.acc.process_index))
        t["sample"] = time.perf_counter()
        arms, scores, votes, events = self._select_and_score(contexts, samples, prompts)
        t["score"] = time.perf_counter()
        self._arms_by_rank = self._gather_arms(arms)
        self._current_arm_name = self.ensemble or self.pool.names[arms[0]]
        pairs, skipped = self._pairs(samples, scores, votes)
        self.skipped_prompts += skipped
        terms = self._update(samples, pairs, len(prompts))
        if self.needs_labels:
            terms.update(self._pair_accuracy(shard, samples, pairs))
        t["update"] = time.perf_counter()
        rewards, raw = self._feedback(arms, contexts, terms)
        t["end"] = time.perf_counter()
        return self._record(batch, arms, contexts, scores, terms, rewards, raw, events, t)

    # ----- context and selection ----------------------------------------------------------
    def _contexts(self, prompts: list[str]) -> np.ndarray:
        if self.context_free:
            return np.zeros((len(prompts), 1))
        if self.context_fn is not None:
            return np.asarray(self.context_fn(prompts), dtype=np.float64)
        return self.policy.context(prompts)

    def _gather_rows(self, rows: np.ndarray) -> np.ndarray:
        if self.acc.num_processes == 1:
            return rows
        from accelerate.utils import gather_object

        return np.concatenate(gather_object([rows]), axis=0)

    def _my_slice(self, values: list) -> list:
        """This process's part of a whole-batch list ordered by process (as gathered)."""
        if self.acc.num_processes == 1:
            return values
        from accelerate.utils import gather_object

        sizes = gather_object([self._shard_size])
        start = sum(sizes[: self.acc.process_index])
        return values[start:start + self._shard_size]

    def _gather_arms(self, arms: list[int]) -> list[list[int]]:
        """The arms every process applied (they must be equal: the decision is broadcast)."""
        if self.acc.num_processes == 1:
            return [arms]
        from accelerate.utils import gather_object

        return gather_object([arms])

    def _decide(self, contexts: np.ndarray) -> list[int]:
        """Arm per prompt of the whole batch; decided on the main process and broadcast."""
        decision = [None]
        if self.acc.is_main_process:
            if self.ensemble:
                decision = [[-1] * len(contexts)]
            elif self.cfg.selector.per_prompt:
                decision = [[int(a) for a in self.selector.select_batch(contexts)]]
            else:
                arm, scores = self.selector.select_with_scores(contexts.mean(axis=0))
                self._decision_scores = np.asarray(scores).tolist()  # exactly what the decision used
                decision = [[int(arm)] * len(contexts)]
        if self.acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(decision, from_process=0)
        return decision[0]

    def _select_and_score(self, contexts, samples, prompts):
        """Pick arms and score; an RM that fails is masked and the decision is made again."""
        events = self.pool.refresh(self.selector, step=self.global_step + 1)
        self._shard_size = len(prompts)
        while True:
            arms = self._decide(contexts)
            try:
                scores, votes = self._score(samples, self._my_slice(arms))
                failure = None
            except RewardModelError as exc:
                failure = (self._failed_arm, exc)
            failures = [failure]
            if self.acc.num_processes > 1:
                from accelerate.utils import gather_object

                failures = gather_object([failure])
            failures = [f for f in failures if f is not None]
            if not failures:
                return arms, scores, votes, events
            for k, exc in failures:
                events.append(self.pool.mark_down(k, exc, self.selector))
                log.warning(events[-1])

    def _score(self, samples, my_arms: list[int]):
        """Scores of every response, shape (N,), and the per-RM matrix for the agreement rule."""
        prompts = [self._current_prompts[i] for i in samples.prompt_index]
        n = len(samples.texts)
        if self.ensemble:
            matrix = np.full((len(self.pool.rms), n), np.nan)
            for k in range(len(self.pool.rms)):
                if k in self.pool.down or k in self.pool.waiting(self.global_step + 1):
                    continue
                self._failed_arm = k
                matrix[k] = self.pool.score(k, prompts, samples.texts)
            votes = matrix if self.ensemble == "agreement_ensemble" else None
            return ensemble_scores(matrix), votes
        scores = np.full(n, np.nan)
        per_response = np.array([my_arms[i] for i in samples.prompt_index], dtype=np.int64)
        for k in sorted(set(my_arms)):  # one batched call per RM
            idx = np.flatnonzero(per_response == k)
            self._failed_arm = k
            scores[idx] = self.pool.score(k, [prompts[i] for i in idx], [samples.texts[i] for i in idx])
        return scores, None

    # ----- pairs, update, feedback --------------------------------------------------------
    def _pairs(self, samples, scores, votes) -> tuple[list[list[tuple[int, int]]], int]:
        n, P = self.cfg.train.n_samples, self.cfg.train.pairs_per_prompt
        pairs, skipped = [], 0
        for i in range(len(samples.prompt_ids)):
            sl = slice(i * n, (i + 1) * n)
            if not np.isfinite(scores[sl]).any():
                skipped += 1
            found = build_pairs(scores[sl], P, self.cfg.train.pairing,
                                votes=None if votes is None else votes[:, sl])
            pairs.append([(i * n + c, i * n + r) for c, r in found])
        return pairs, skipped

    @contextmanager
    def _reference_weights(self):
        """Temporarily load the iteration-start weights: the frozen DPO reference."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.ref_state[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])

    def _pair_logps(self, samples, flat: list[tuple[int, int, int]], grad: bool):
        """Policy log-probs of chosen and rejected for (prompt, chosen, rejected) triples."""
        prompt_ids = [samples.prompt_ids[p] for p, _, _ in flat]
        ids = [samples.response_ids[c] for _, c, _ in flat] + [samples.response_ids[r] for _, _, r in flat]
        with torch.set_grad_enabled(grad):
            logps, lengths = self.policy.sequence_logps(prompt_ids + prompt_ids, ids)
        m = len(flat)
        return logps[:m], logps[m:], lengths[:m]

    def _loss_terms(self, samples, flat, grad: bool, ref=None):
        pc, pr, lc = self._pair_logps(samples, flat, grad)
        tc = self.cfg.train
        return laser_loss(pc, pr, ref[0], ref[1], lc, tc.beta, tc.nll_weight)

    def _update(self, samples, pairs, n_prompts: int) -> dict:
        """One optimizer step on all pairs of the batch (all processes); returns loss terms."""
        flat = [(i, c, r) for i, ps in enumerate(pairs) for c, r in ps]
        total = self._sum_across([float(len(flat))])[0]
        mb = self.cfg.train.micro_batch_pairs
        chunks = [flat[j:j + mb] for j in range(0, len(flat), mb)]
        self.policy.model.eval()  # reference (and after-update) log-probs without dropout noise
        with self._reference_weights():
            refs = [self._pair_logps(samples, ch, grad=False)[:2] for ch in chunks]
        self.optimizer.zero_grad(set_to_none=False)
        per_pair = {"loss": [], "dpo": [], "nll": []}
        self.policy.model.train()
        for ch, ref in zip(chunks, refs):
            terms = self._loss_terms(samples, ch, grad=True, ref=ref)
            (terms["loss"].sum() / max(total, 1.0)).backward()
            for k in per_pair:
                per_pair[k].append(terms[k].detach())
        sums = {k: float(torch.cat(v).sum()) if v else 0.0 for k, v in per_pair.items()}
        glob = dict(zip(sums, self._sum_across(list(sums.values()))))
        means = {k: (v / total if total else float("nan")) for k, v in glob.items()}
        grad_norm = self._apply_gradients(total, means["loss"])
        prompt_of = np.array([i for i, _, _ in flat], dtype=np.int64)
        pair_losses = torch.cat(per_pair["loss"]).numpy() if flat else np.zeros(0)
        out = {**means, "grad_norm": grad_norm, "n_pairs": int(total), "local_pairs": len(flat),
               "prompt_loss": per_prompt(pair_losses, prompt_of, n_prompts)}
        if self.needs_after:  # every process joins the sum, with or without local pairs
            self.policy.model.eval()
            with torch.no_grad():
                after = [self._loss_terms(samples, ch, grad=False, ref=ref)["loss"] for ch, ref in zip(chunks, refs)]
            after = torch.cat(after).numpy() if after else np.zeros(0)
            out["loss_after"] = self._sum_across([float(after.sum())])[0] / total if total else float("nan")
            out["prompt_loss_after"] = per_prompt(after, prompt_of, n_prompts)
        return out

    def _pair_accuracy(self, shard: list, samples, pairs) -> dict:
        """Mean of correct(chosen) - correct(rejected) over the step's pairs, and per prompt."""
        from laser.tasks.extract import is_correct

        per_prompt_acc = np.full(len(shard), np.nan)
        total = 0.0
        for i, (ex, ps) in enumerate(zip(shard, pairs)):
            if ps:
                diffs = [is_correct(ex.task, samples.texts[c], ex.answer) - is_correct(ex.task, samples.texts[r], ex.answer)
                         for c, r in ps]
                per_prompt_acc[i], total = float(np.mean(diffs)), total + float(np.sum(diffs))
        n_pairs = self._sum_across([float(sum(len(ps) for ps in pairs))])[0]
        return {"pair_accuracy": self._sum_across([total])[0] / n_pairs if n_pairs else float("nan"),
                "prompt_pair_accuracy": per_prompt_acc}

    def _sum_across(self, values: list[float]) -> list[float]:
        if self.acc.num_processes == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        return self.acc.reduce(t, reduction="sum").tolist()

    def _apply_gradients(self, total: float, mean_loss: float) -> float:
        """All-reduce gradients, check finiteness, clip and step; returns the gradient norm."""
        if total == 0:
            return 0.0
        if self.acc.num_processes > 1:
            for p in self.params.values():  # a process with no local pairs contributes zeros
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                p.grad = self.acc.reduce(grad, reduction="sum")
        clip = self.cfg.train.grad_clip or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(list(self.params.values()), clip))
        for what, value in (("loss", mean_loss), ("gradient norm", grad_norm)):
            if not np.isfinite(value):
                self._nonfinite(f"non-finite {what} ({value})")
                self.optimizer.zero_grad(set_to_none=False)
                return float("nan")
        self.optimizer.step()
        return grad_norm

    def _nonfinite(self, what: str, arm: str | None = None) -> None:
        where = f"iteration {self.iteration}, step {self.step_in_iter} (global step {self.global_step + 1})"
        msg = f"{what} at {where}, arm {arm or self._current_arm_name}; last checkpoint kept intact"
        if self.cfg.train.on_nonfinite == "skip" and self.skipped_steps < self.cfg.train.max_skipped_steps:
            self.skipped_steps += 1
            log.warning("skipping step: %s", msg)
            return
        raise NonFiniteError(msg)

    def _feedback(self, arms: list[int], contexts: np.ndarray, terms: dict):
        """Normalised rewards; the selector update happens here, once per step (or per prompt)."""
        if self.selector is None:
            return [], []
        if self.cfg.selector.per_prompt:
            keys = {"loss": "prompt_loss", "loss_after": "prompt_loss_after",
                    "pair_accuracy": "prompt_pair_accuracy"}
            cols = {k: self._gather_rows(terms[v][:, None])[:, 0] for k, v in keys.items() if v in terms}
            outcomes = [{k: float(col[i]) for k, col in cols.items()} for i in range(len(contexts))]
            raw = [self.feedback_fn(o) if np.isfinite(o["loss"]) else None for o in outcomes]
            ctxs, used = contexts, arms
        else:
            ok = terms["n_pairs"] > 0 and np.isfinite(terms["loss"])
            raw = [self.feedback_fn(terms) if ok else None]
            ctxs, used = contexts.mean(axis=0, keepdims=True), arms[:1]
        rewards = []
        for r, arm in zip(raw, used):
            if r is not None and not np.isfinite(r):
                self._nonfinite(f"non-finite bandit reward ({r})", self.pool.names[arm])
                r = None
            # no pairs (all ties / unscorable) teaches nothing: the lowest reward, kept out of the history
            rewards.append(self.normalizer.normalize(r) if r is not None else 0.0)
        self.selector.update_batch(np.asarray(used), ctxs, np.asarray(rewards))
        return rewards, raw

    # ----- logging ------------------------------------------------------------------------
    def _record(self, batch, arms, contexts, scores, terms, rewards, raw, events, t) -> dict:
        names = self.pool.names
        arm0 = arms[0]
        calls = [int(c) for c in self._sum_across(self.pool.calls.astype(float).tolist())]  # all processes
        ucb = getattr(self, "_decision_scores", None)  # each arm's score when the arm was picked
        self._decision_scores = None
        return {
            "iteration": self.iteration, "step": self.step_in_iter, "global_step": self.global_step + 1,
            "arm": arm0, "arm_name": self.ensemble or names[arm0], "prompt_ids": [ex.id for ex in batch],
            "prompt_arms": arms, "arms_by_rank": self._arms_by_rank, "ucb": ucb, "reward": rewards, "raw_reward": raw,
            "loss": terms["loss"], "dpo": terms["dpo"], "nll": terms["nll"], "grad_norm": terms["grad_norm"],
            "loss_after": terms.get("loss_after"), "pair_accuracy": terms.get("pair_accuracy"),
            "feedback": self.feedback, "n_pairs": terms["n_pairs"],
            "score_mean": float(np.nanmean(scores)) if np.isfinite(scores).any() else None,
            "rm_calls": calls, "rm_calls_total": int(sum(calls)),
            "skipped_prompts": self.skipped_prompts, "skipped_steps": self.skipped_steps, "events": events,
            "time": {k: round(t[k] - t["start"], 4) for k in ("context", "sample", "score", "update", "end")},
        }

    def _log(self, record: dict) -> None:
        if self.acc.is_main_process:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(finite_or_none(record), default=json_default) + "\n")
