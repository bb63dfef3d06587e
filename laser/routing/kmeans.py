"""Groups of prompts without a group column: k-means over a context that separates prompts.

The reliability router estimates each RM's accuracy per group of prompts. When the data has no
group column (domain, dataset, task), :class:`ContextGroups` clusters the prompts' context
vectors (a sentence encoder's embedding, or the policy's last-token state) with k-means and
names each prompt's cluster. Prompts arrive batch by batch, so the clustering is refitted each
time the number of distinct prompts seen doubles (and at most ``max_contexts`` are kept); the
caller re-files the votes it kept under the new clusters (:meth:`ReliabilityRouter.regroup`).
Once every prompt of a dataset has been seen the clusters no longer change.

Rows are L2-normalised before clustering (k-means on the unit sphere: the direction of an
embedding carries its meaning, its norm mostly its length). Pure numpy, float64, seeded.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["ContextGroups", "kmeans", "kmeans_pp", "lloyd", "purity"]


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: ``k`` rows of ``x``, each next one drawn with probability ~ squared
    distance to the nearest seed so far (Arthur and Vassilvitskii 2007)."""
    centers = [x[rng.integers(len(x))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        centers.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.array(centers)


def lloyd(x: np.ndarray, centers: np.ndarray, iters: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's iterations from ``centers``: ``(centers, labels, inertia)``.

    Each row joins its nearest centre (ties: the lowest index), each centre moves to its rows'
    mean; an empty cluster keeps its centre. Stops when the labels no longer change.
    """
    centers = np.array(centers, np.float64)
    labels = None
    for _ in range(iters):
        new = _sq_dist(x, centers).argmin(1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(centers)):
            members = x[labels == j]
            if len(members):
                centers[j] = members.mean(0)
    d2 = _sq_dist(x, centers)
    labels = d2.argmin(1)
    return centers, labels, float(d2[np.arange(len(x)), labels].sum())


def _sq_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared Euclidean distances (expanded form: no ``(n, k, d)`` temporary)."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None]
    return np.maximum(d2, 0.0)


def kmeans(x, k: int, seed: int = 0, n_init: int = 10, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(centers (k, d), labels (n,))``: the best of ``n_init`` k-means++ starts (lowest inertia).

    Raises:
        ValueError: ``k`` below 1 or above the number of rows.
    """
    x = np.asarray(x, np.float64)
    if not 1 <= k <= len(x):
        raise ValueError(f"kmeans: k = {k} needs 1 <= k <= rows ({len(x)})")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        c, lab, inertia = lloyd(x, kmeans_pp(x, k, rng), iters)
        if best is None or inertia < best[2] - 1e-12:
            best = (c, lab, inertia)
    return best[0], best[1]


def purity(labels, truth) -> float:
    """Share of rows whose cluster's majority ``truth`` label is their own (1.0: no cluster mixes)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    hits = 0
    for c in np.unique(labels):
        _, counts = np.unique(truth[labels == c], return_counts=True)
        hits += int(counts.max())
    return hits / len(labels)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prompt_key(prompt: str) -> str:
    """A short stable key of a prompt (the clustering's state stores keys, not texts)."""
    return hashlib.sha1(prompt.encode()).hexdigest()[:16]


class ContextGroups:
    """Names each prompt's k-means cluster (``"c0"``, ``"c1"``, ...), refitted as new prompts arrive.

    Clusters are named in the order their earliest-seen member was seen, so a refit that finds
    the same clusters keeps their names.

    Args:
        n_groups: k (fewer while fewer distinct prompts have been seen).
        seed: seeds the k-means starts.
        max_contexts: distinct prompts kept (later ones join their nearest cluster, no refit).
    """

    def __init__(self, n_groups: int, seed: int = 0, max_contexts: int = 4096):
        if n_groups < 1:
            raise ValueError(f"n_groups: must be at least 1, got {n_groups}")
        self.n_groups, self.seed, self.max_contexts = n_groups, seed, max_contexts
        self.keys_: dict[str, int] = {}
        self.rows_: list[np.ndarray] = []
        self.centers_: np.ndarray | None = None
        self.labels_: np.ndarray = np.zeros(0, np.int64)
        self.next_fit_ = n_groups

    def seen(self, prompts: list[str]) -> list[bool]:
        """Whether each prompt's context is already kept (the caller embeds only the others)."""
        return [prompt_key(p) in self.keys_ for p in prompts]

    def assign(self, prompts: list[str], contexts) -> tuple[list[str], bool]:
        """``(group name per prompt, refitted)``; ``contexts`` ``(B, d)`` rows for the prompts (rows
        of prompts already seen are ignored and may be None)."""
        contexts = [None] * len(prompts) if contexts is None else list(contexts)
        for p, c in zip(prompts, contexts, strict=True):
            key = prompt_key(p)
            if key not in self.keys_ and len(self.rows_) < self.max_contexts:
                if c is None:
                    raise ValueError(f"ContextGroups.assign: no context for a new prompt ({p[:40]!r})")
                self.keys_[key] = len(self.rows_)
                self.rows_.append(_unit(np.asarray(c)[None])[0])
        refit = len(self.rows_) >= self.next_fit_
        if refit:
            self._fit()
        return [self._name(p, c) for p, c in zip(prompts, contexts, strict=True)], refit

    def _fit(self) -> None:
        x = np.array(self.rows_)
        centers, labels = kmeans(x, min(self.n_groups, len(x)), seed=self.seed)
        order = sorted(range(len(centers)), key=lambda j: _first(labels, j))  # name by earliest member
        rank = np.argsort(order)
        self.centers_, self.labels_ = centers[order], rank[labels]
        self.next_fit_ = min(2 * len(x), self.max_contexts + 1) if len(x) < self.max_contexts else np.inf

    def _name(self, prompt: str, context) -> str:
        row = self.keys_.get(prompt_key(prompt))
        if self.centers_ is None:
            return "c0"
        if row is not None and row < len(self.labels_):
            return f"c{int(self.labels_[row])}"
        x = self.rows_[row] if row is not None else _unit(np.asarray(context)[None])[0]
        return f"c{int(_sq_dist(x[None], self.centers_)[0].argmin())}"

    def group_of_key(self, key: str) -> str:
        """The current group of a kept prompt given by its :func:`prompt_key`."""
        if self.centers_ is None:
            return "c0"
        row = self.keys_[key]
        if row < len(self.labels_):
            return f"c{int(self.labels_[row])}"
        return f"c{int(_sq_dist(self.rows_[row][None], self.centers_)[0].argmin())}"

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays only (``np.savez``-able): keys, context rows, centres, labels, next refit."""
        d = self.rows_[0].shape[0] if self.rows_ else 0
        return {
            "kmeans_keys": np.array(list(self.keys_), dtype="U16"),
            "kmeans_rows": np.array(self.rows_, np.float64).reshape(len(self.rows_), d),
            "kmeans_centers": np.zeros((0, d)) if self.centers_ is None else self.centers_,
            "kmeans_labels": self.labels_,
            "kmeans_next_fit": np.array(float(self.next_fit_)),
        }

    def load_state_dict(self, sd: dict) -> None:
        keys = [str(k) for k in np.asarray(sd["kmeans_keys"]).tolist()]
        self.keys_ = {k: i for i, k in enumerate(keys)}
        self.rows_ = list(np.asarray(sd["kmeans_rows"], np.float64))
        centers = np.asarray(sd["kmeans_centers"], np.float64)
        self.centers_ = centers if len(centers) else None
        self.labels_ = np.asarray(sd["kmeans_labels"], np.int64)
        nf = float(np.asarray(sd["kmeans_next_fit"]))
        self.next_fit_ = nf if np.isinf(nf) else int(nf)


def _first(labels: np.ndarray, j: int) -> int:
    hit = np.flatnonzero(labels == j)
    return int(hit[0]) if len(hit) else len(labels)
