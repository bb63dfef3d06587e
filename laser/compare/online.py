"""The RM online ensemble on the shared training loop (a Trainer subclass).

Every RM scores every response (like the score ensemble); responses are ranked by
:meth:`OnlineEnsemble.combine` of the per-RM standardised scores; after the update each RM k
gets the feedback LASeR would get, computed on the trained pairs RM k orders the same way:

    r_k = normalise(feedback(mean loss over {pairs p : z_k[chosen_p] > z_k[rejected_p]}))

(NaN, i.e. no information, when RM k agrees with none of them), and the weights move by
``w_k <- w_k exp(eta r_k)``. The weights are the "selector" of the run, so they are
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
    ``score_ensemble`` (the loop's all-RMs-score mode) and ``cfg.train.feedback`` ``neg_loss``."""

    def __init__(self, cfg, policy, rms, examples, eta: float = 0.5, **kwargs):
        if cfg.selector.name != "score_ensemble" or cfg.train.feedback != "neg_loss":
            raise ValueError("OnlineEnsembleTrainer needs selector.name=score_ensemble and train.feedback=neg_loss, "
                             f"got {cfg.selector.name!r} and {cfg.train.feedback!r}")
        super().__init__(cfg, policy, rms, examples, **kwargs)
        self.ensemble = "online_ensemble"
        self.selector = OnlineEnsemble(len(self.pool.rms), eta=eta, seed=cfg.seed)
        self._z, self._flat_pairs, self._pair_losses = None, [], []

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
        self._pair_losses = []
        return pairs, skipped

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
                raw[k] = self.feedback_fn(float(losses[mine].mean()), None)
                rewards[k] = self.normalizer.normalize(raw[k])
        self.selector.update(rewards)
        return rewards.tolist(), raw

    def _record(self, *args):
        record = super()._record(*args)
        record["weights"] = self.selector.weights().tolist()
        return record


def run_online_ensemble(seed: int, policy_dir: str, train, rm_names: list[str], s, out: Path,
                        rms: list | None = None, reward_specs: list[dict] | None = None,
                        eta: float = 0.5) -> tuple[dict, object, Path]:
    """Train the online ensemble from the SFT start; same set-up and return value as
    :func:`laser.demo.run_method` (run folder ``out/seed<seed>/online_ensemble``).

    The config mirrors ``run_method``'s; keep the two in step (or move this into the loop).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.config import load_config
    from laser.policy.model import Policy
    from laser.rewards.synthetic import make_demo_rms

    extra = reward_specs or [{} for _ in rm_names]
    run_dir = Path(out) / f"seed{seed}" / "online_ensemble"
    cfg = load_config(data={
        "seed": seed, "output_dir": str(run_dir),
        "rewards": [{"name": n, "type": "demo", "seed": seed, **x} for n, x in zip(rm_names, extra)],
        "selector": {"name": "score_ensemble"},
        "data": {"group_batches": s.group_batches},
        "train": {"iterations": s.iterations, "batch_size": s.batch_size, "n_samples": s.n_samples,
                  "max_new_tokens": s.max_new_tokens, "pairs_per_prompt": s.pairs_per_prompt, "lr": s.lr,
                  "pairing": s.pairing, "beta": s.beta, "nll_weight": s.nll_weight, "feedback": "neg_loss"},
        "checkpoint": {"every": 0, "keep_last": 1},
    }, require_data=False)
    tok = AutoTokenizer.from_pretrained(policy_dir)
    tok.padding_side = "left"
    policy = Policy(AutoModelForCausalLM.from_pretrained(policy_dir), tok)
    trainer = OnlineEnsembleTrainer(cfg, policy, rms or make_demo_rms(seed=seed), train, eta=eta,
                                    show_progress=False)
    return trainer.run(), policy, run_dir
