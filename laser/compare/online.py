"""The RM online ensemble on the shared training loop (a Trainer subclass).

Every RM scores every response (like the score ensemble); responses are ranked by
:meth:`OnlineEnsemble.combine` of the per-RM standardised scores; after the update each RM k
gets the feedback LASeR would get (``train.feedback``: ``neg_loss``, ``pair_accuracy`` or
``auto``), computed on the trained pairs RM k orders the same way, S_k = {pairs p :
z_k[chosen_p] > z_k[rejected_p]}:

    r_k = normalise(feedback({"loss": mean loss over S_k, "pair_accuracy": mean over S_k of
                              correct(chosen) - correct(rejected)}))

(NaN, i.e. no information, when S_k is empty), and the weights move by ``w_k <- w_k exp(eta r_k)``. The weights are the "selector" of the run, so they are
checkpointed and restored with it. Single process only.

This lives in :mod:`laser.compare` until the loop itself knows the ``online_ensemble``
selector; it overrides four small Trainer hooks (``_score``, ``_pairs``, ``_loss_terms``,
``_feedback``) and adds the weights to each log record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from laser.bandits.online_ensemble import OnlineEnsemble, pair_agreement
from laser.training.loop import Trainer
from laser.training.pairs import standardize


class OnlineEnsembleTrainer(Trainer):
    """:class:`~laser.training.loop.Trainer` with the online ensemble; ``cfg.selector.name`` must be
    ``online_ensemble`` (or ``score_ensemble``: the loop's all-RMs-score mode) and the feedback one
    computed from the pairs alone (``neg_loss`` or ``pair_accuracy``, possibly through ``auto``).
    ``eta`` defaults to ``selector.kwargs.eta`` (else 0.5). Single process only."""

    def __init__(self, cfg, policy, rms, examples, eta: float | None = None, **kwargs):
        super().__init__(cfg, policy, rms, examples, **kwargs)
        if cfg.selector.name not in ("online_ensemble", "score_ensemble") \
                or self.feedback not in ("neg_loss", "pair_accuracy"):
            raise ValueError("OnlineEnsembleTrainer needs selector.name=online_ensemble and feedback neg_loss or "
                             f"pair_accuracy, got {cfg.selector.name!r} and {self.feedback!r}")
        if self.acc.num_processes > 1:
            raise ValueError("selector.name=online_ensemble runs on a single process")
        eta = float(cfg.selector.kwargs.get("eta", 0.5)) if eta is None else eta
        self.ensemble = "online_ensemble"
        self.selector = OnlineEnsemble(len(self.pool.rms), eta=eta, seed=cfg.seed)
        self._z, self._flat_pairs, self._pair_losses, self._pair_diffs = None, [], [], None

    def _score(self, samples, my_arms):
        prompts = [self._current_prompts[i] for i in samples.prompt_index]
        matrix = np.full((len(self.pool.rms), len(samples.texts)), np.nan)
        off = self.pool.down | self.pool.waiting(self.global_step + 1)
        for k in range(len(self.pool.rms)):
            if k not in off:
                self._failed_arm = k
                matrix[k] = self.pool.score(k, prompts, samples.texts)
        self._z = standardize(matrix)
        return self.selector.combine(self._z), None

    def _pairs(self, samples, scores, votes):
        pairs, skipped = super()._pairs(samples, scores, votes)
        self._flat_pairs = [p for ps in pairs for p in ps]  # the order _update trains them in
        self._pair_losses, self._pair_diffs = [], None
        return pairs, skipped

    def _pair_accuracy(self, shard, samples, pairs):
        from laser.tasks.extract import is_correct

        self._pair_diffs = np.array([float(is_correct(ex.task, samples.texts[c], ex.answer))
                                     - float(is_correct(ex.task, samples.texts[r], ex.answer))
                                     for ex, ps in zip(shard, pairs) for c, r in ps])
        return super()._pair_accuracy(shard, samples, pairs)

    def _loss_terms(self, samples, flat, grad, ref=None):
        terms = super()._loss_terms(samples, flat, grad, ref)
        if grad:
            self._pair_losses.append(terms["loss"].detach().cpu().numpy())
        return terms

    def _feedback(self, arms, contexts, terms):
        losses = np.concatenate(self._pair_losses) if self._pair_losses else np.zeros(0)
        agree = pair_agreement(self._z, self._flat_pairs)
        rewards, raw = np.full(self.selector.n_arms, np.nan), [None] * self.selector.n_arms
        for k in range(self.selector.n_arms):
            mine = agree[k] == 1
            if mine.any() and np.isfinite(losses[mine]).all():
                outcome = {"loss": float(losses[mine].mean())}
                if self._pair_diffs is not None:
                    outcome["pair_accuracy"] = float(self._pair_diffs[mine].mean())
                raw[k] = self.feedback_fn(outcome)
                rewards[k] = self.normalizer.normalize(raw[k])
        self.selector.update(rewards)
        return rewards.tolist(), raw

    def _record(self, *args):
        record = super()._record(*args)
        record["weights"] = self.selector.weights().tolist()
        return record


def run_online_ensemble(seed: int, policy_dir: str, train, rm_names: list[str], s, out: Path,
                        rms: list | None = None, reward_specs: list[dict] | None = None,
                        eta: float = 0.5, feedback: str | None = None) -> tuple[dict, object, Path]:
    """Train the online ensemble from the SFT start; same set-up and return value as
    :func:`laser.demo.run_method` (run folder ``out/seed<seed>/online_ensemble``).

    The config is ``run_method``'s (:func:`laser.demo.demo_run_config`) with the all-RMs-score mode.
    ``feedback`` defaults to the demo's LASeR feedback (``laser.demo.DEFAULT_FEEDBACK``).
    """
    from laser.demo import DEFAULT_FEEDBACK, demo_run_config, load_sft_policy
    from laser.rewards.synthetic import make_demo_rms

    feedback = feedback or DEFAULT_FEEDBACK
    run_dir = Path(out) / f"seed{seed}" / "online_ensemble"
    cfg = demo_run_config(seed, run_dir, rm_names, s, {"name": "score_ensemble"}, feedback, reward_specs)
    policy = load_sft_policy(policy_dir)
    trainer = OnlineEnsembleTrainer(cfg, policy, rms or make_demo_rms(seed=seed), train, eta=eta,
                                    show_progress=False)
    return trainer.run(), policy, run_dir
