"""Classifier selection: an offline classifier on the prompt's context predicts the RM.

The paper's "classifier selection" baseline. The classifier is trained once, before RL, on a
labelled split (context of a prompt -> the RM that judged a known preference pair on that
prompt best); during training it never learns from the bandit feedback, so ``update`` only
counts. The model is multinomial logistic regression on standardised contexts, fitted by full
batch gradient descent (numpy only; deterministic).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from laser.bandits.base import Selector


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(B, K)`` logits (max-subtracted; -inf logits get probability 0)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ClassifierSelector(Selector):
    """Picks the arm an offline classifier predicts for the context.

    Model: ``p(k | c) = softmax_k(W_k . x + b_k)`` with ``x = (c - mu) / sd`` (per-feature mean and
    standard deviation of the training contexts). :meth:`fit` minimises the mean cross-entropy
    plus ``l2/2 * ||W||^2`` by ``steps`` full-batch gradient steps of size ``lr``. The score of an
    arm is its predicted probability; selection is the argmax (random ties), so before
    :meth:`fit` every arm scores 1/K and the pick is uniformly random.

    Because the logits are linear in the context, the logits of a batch's mean context are the
    mean of its prompts' logits: fitting on single prompts and selecting on batch means (as the
    training loop does) is consistent.

    Args:
        n_arms: number of arms.
        dim: context dimension d.
        seed: seed of the owned RNG (tie-breaks).
        l2: L2 penalty on W.
        steps: gradient steps in :meth:`fit`.
        lr: step size.

    Attributes:
        W_: float64 ``(n_arms, dim)``; b_: ``(n_arms,)``; mu_, sd_: ``(dim,)``;
        fitted_: whether :meth:`fit` has run; label_counts_: ``(n_arms,)`` labels seen by fit.
    """

    name: ClassVar[str] = "classifier"
    learns_from_rewards: ClassVar[bool] = False
    contextual: ClassVar[bool] = True
    _hparam_names: ClassVar[tuple[str, ...]] = ("dim", "l2", "steps", "lr")

    def __init__(
        self, n_arms: int, dim: int, seed: int = 0, l2: float = 1e-2, steps: int = 500, lr: float = 0.5
    ) -> None:
        super().__init__(n_arms, seed)
        if int(dim) != dim or dim < 1:
            raise ValueError(f"ClassifierSelector: dim must be an integer >= 1, got {dim!r}")
        if l2 < 0 or steps < 1 or lr <= 0:
            raise ValueError(f"ClassifierSelector: need l2 >= 0, steps >= 1, lr > 0; got {l2}, {steps}, {lr}")
        self.dim, self.l2, self.steps, self.lr = int(dim), float(l2), int(steps), float(lr)
        self.W_ = np.zeros((self.n_arms, self.dim))
        self.b_ = np.zeros(self.n_arms)
        self.mu_ = np.zeros(self.dim)
        self.sd_ = np.ones(self.dim)
        self.fitted_ = False
        self.label_counts_ = np.zeros(self.n_arms, dtype=np.int64)

    def fit(self, contexts: np.ndarray, labels: np.ndarray) -> ClassifierSelector:
        """Train the classifier on labelled contexts (replaces any earlier fit).

        Args:
            contexts: ``(M, dim)`` finite floats.
            labels: ``(M,)`` arm indices in ``[0, n_arms)``.

        Returns:
            self.

        Raises:
            ValueError: wrong shapes, non-finite contexts, no rows, or a label out of range.
        """
        x = self._as_contexts(contexts)
        y = np.asarray(labels).reshape(-1)
        if len(x) == 0 or y.shape != (len(x),):
            raise ValueError(
                f"ClassifierSelector.fit: need M >= 1 contexts and M labels, got "
                f"{len(x)} contexts and labels of shape {y.shape}"
            )
        if not np.all((y >= 0) & (y < self.n_arms) & (y == np.round(y))):
            raise ValueError(
                f"ClassifierSelector.fit: labels must be arm indices in [0, {self.n_arms}), "
                f"got values {sorted(set(np.asarray(y).tolist()))[:10]}"
            )
        y = y.astype(np.int64)
        self.mu_ = x.mean(axis=0)
        self.sd_ = np.where(x.std(axis=0) > 1e-8, x.std(axis=0), 1.0)
        xs = (x - self.mu_) / self.sd_
        onehot = np.eye(self.n_arms)[y]
        W, b = np.zeros((self.n_arms, self.dim)), np.zeros(self.n_arms)
        for _ in range(self.steps):
            g = (softmax(xs @ W.T + b) - onehot) / len(xs)  # d(mean cross-entropy)/d(logits)
            W -= self.lr * (g.T @ xs + self.l2 * W)
            b -= self.lr * g.sum(axis=0)
        self.W_, self.b_, self.fitted_ = W, b, True
        self.label_counts_ = np.bincount(y, minlength=self.n_arms).astype(np.int64)
        return self

    def predict_proba(self, contexts: np.ndarray) -> np.ndarray:
        """``(B, n_arms)`` class probabilities (masks ignored)."""
        return self._score_batch(self._as_contexts(contexts))

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        if not self.fitted_:
            return np.full((len(contexts), self.n_arms), 1.0 / self.n_arms)
        return softmax(((contexts - self.mu_) / self.sd_) @ self.W_.T + self.b_)

    def _update(self, arm: int, context: np.ndarray, reward: float) -> None:
        """Offline classifier: the bandit feedback is not used (``counts_`` still counts)."""

    def _add_arm(self) -> None:
        self.W_ = np.vstack([self.W_, np.zeros((1, self.dim))])
        self.b_ = np.append(self.b_, -np.inf)  # never predicted: the classifier has not seen it
        self.label_counts_ = np.append(self.label_counts_, np.int64(0))

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {
            "W": self.W_.copy(),
            "b": self.b_.copy(),
            "mu": self.mu_.copy(),
            "sd": self.sd_.copy(),
            "fitted": np.array(self.fitted_),
            "label_counts": self.label_counts_.copy(),
        }

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        self.W_ = np.array(sd["W"], dtype=np.float64)
        self.b_ = np.array(sd["b"], dtype=np.float64)
        self.mu_ = np.array(sd["mu"], dtype=np.float64)
        self.sd_ = np.array(sd["sd"], dtype=np.float64)
        self.fitted_ = bool(sd["fitted"])
        self.label_counts_ = np.array(sd["label_counts"], dtype=np.int64)
