"""The RM online ensemble: every RM scores, multiplicative weights decide how much each counts.

Responses are ranked by :meth:`OnlineEnsemble.combine` of the per-RM standardised scores. After
the update each RM k gets the feedback LASeR would get (``train.feedback``), computed on the
trained pairs RM k orders the same way, S_k = {pairs p : z_k[chosen_p] > z_k[rejected_p]}:

    r_k = normalise(feedback(Signal(loss = mean loss over S_k,
                                    correct = mean over S_k of correct(chosen) - correct(rejected))))

(no information, weight unchanged, when S_k is empty: its units are defined by pairs alone), and
``w_k <- w_k exp(eta r_k)``. Single process only: the standardisation is over the process's own
responses.
"""

from __future__ import annotations

import numpy as np

from laser.bandits.online_ensemble import OnlineEnsemble, pair_agreement
from laser.routing.feedback import FEEDBACKS
from laser.routing.pairs import standardize
from laser.routing.strategies.base import Unit
from laser.routing.strategies.ensembles import ScoreEnsemble, score_matrix

#: the feedbacks computable from a subset of the pairs (no loss after the update)
PAIR_FEEDBACKS = tuple(name for name, fb in FEEDBACKS.items() if "after" not in fb.needs)


class OnlineEnsembleStrategy(ScoreEnsemble):
    """Args: n_arms; eta: the multiplicative-weights step size; seed."""

    name = "online_ensemble"
    reads_feedback = True

    def __init__(self, n_arms: int, eta: float = 0.5, seed: int = 0):
        self.selector = OnlineEnsemble(n_arms, eta=eta, seed=seed)

    def check(self, feedback: str, n_processes: int) -> None:
        if feedback not in PAIR_FEEDBACKS:
            raise ValueError(
                f"train.feedback: {feedback} is not computed per pair; selector.name=online_ensemble needs "
                f"a feedback computed from the pairs alone ({', '.join(PAIR_FEEDBACKS)})"
            )
        if n_processes > 1:
            raise ValueError("selector.name=online_ensemble runs on a single process")

    def score(self, batch, pool):
        batch.extra["matrix"] = matrix = score_matrix(batch, pool)
        z = standardize(matrix)
        batch.extra["z"] = z
        return self.selector.combine(z), None

    def units(self, batch, outcome, coll, reference) -> list[Unit]:
        flat = [(c, r) for ps in batch.pairs for c, r in ps]
        agree = pair_agreement(batch.extra["z"], flat)
        losses = outcome.pair_loss if outcome.pair_loss is not None else np.zeros(0)
        units = []
        for k in range(self.selector.n_arms):
            mine = agree[k] == 1
            signal = None
            if mine.any() and np.isfinite(losses[mine]).all():
                signal = outcome.pair_signal(mine, reference)
            units.append(Unit(k, None, signal, []))
        return units

    def learn(self, units, rewards):
        r = np.array([np.nan if x is None else x for x in rewards], dtype=np.float64)
        self.selector.update(r)
        return [None if x is None else float(x) for x in rewards]

    def record(self, batch) -> dict:
        return {"weights": self.selector.weights().tolist()}
