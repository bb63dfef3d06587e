"""The RM online ensemble: every RM scores, multiplicative weights decide how much each counts.

Responses are ranked by :meth:`OnlineEnsemble.combine` of the per-RM standardised scores. After
the update each RM k gets the feedback LASeR would get (``train.feedback``), computed on the
trained pairs RM k orders the same way, S_k = {pairs p : z_k[chosen_p] > z_k[rejected_p]}:

    r_k = normalise(feedback({"loss": mean loss over S_k, "pair_accuracy": mean over S_k of
                              correct(chosen) - correct(rejected)}))

(no information, weight unchanged, when S_k is empty), and ``w_k <- w_k exp(eta r_k)``.
Single process only: the standardisation is over the process's own responses.
"""

from __future__ import annotations

import numpy as np

from laser.bandits.online_ensemble import OnlineEnsemble, pair_agreement
from laser.training.outcomes import KINDS
from laser.training.pairs import standardize
from laser.training.strategies.ensembles import ScoreEnsemble, score_matrix

#: outcome keys computed per pair by the update, averaged over S_k
PAIR_TERMS = {kind: keys[0] for kind, keys in KINDS.items()}


class OnlineEnsembleStrategy(ScoreEnsemble):
    """Args: n_arms; eta: the multiplicative-weights step size; seed."""

    name = "online_ensemble"

    def __init__(self, n_arms: int, eta: float = 0.5, seed: int = 0):
        self.selector = OnlineEnsemble(n_arms, eta=eta, seed=seed)

    def check(self, feedback: str, n_processes: int) -> None:
        if feedback not in ("neg_loss", *PAIR_TERMS):
            raise ValueError(f"selector.name=online_ensemble needs a feedback computed from the pairs alone "
                             f"(neg_loss, {', '.join(PAIR_TERMS)}), got {feedback!r}")
        if n_processes > 1:
            raise ValueError("selector.name=online_ensemble runs on a single process")

    def score(self, step, pool):
        z = standardize(score_matrix(step, pool))
        step.extra["z"] = z
        return self.selector.combine(z), None

    def outcomes(self, step, dist):
        flat = [(c, r) for ps in step.pairs for c, r in ps]
        agree = pair_agreement(step.extra["z"], flat)
        losses = step.terms["pair_losses"]
        items = []
        for k in range(self.selector.n_arms):
            mine = agree[k] == 1
            outcome = None
            if mine.any() and np.isfinite(losses[mine]).all():
                outcome = {"loss": float(losses[mine].mean())}
                for key, per_pair in PAIR_TERMS.items():
                    if per_pair in step.terms:
                        outcome[key] = float(step.terms[per_pair][mine].mean())
            items.append((k, None, outcome))
        return items

    def learn(self, items, rewards):
        r = np.array([np.nan if x is None else x for x in rewards], dtype=np.float64)
        self.selector.update(r)
        return r.tolist()

    def record(self, step) -> dict:
        return {"weights": self.selector.weights().tolist()}
