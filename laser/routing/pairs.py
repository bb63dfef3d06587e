"""Preference pairs from reward-model scores, and the score/agreement ensembles.

Pairs are always built within one prompt's n responses (never across prompts). A response
with a NaN score is unscorable and takes no part; a pair whose two scores are equal is a
tie and is dropped.
"""

from __future__ import annotations

import numpy as np

PAIRING_RULES = ("top_vs_rest", "best_vs_worst", "topk_vs_bottomk", "all")


def rank(scores: np.ndarray) -> np.ndarray:
    """Indices of the finite scores, best first; equal scores keep index order (stable)."""
    finite = np.flatnonzero(np.isfinite(scores))
    order = np.argsort(-scores[finite], kind="stable")
    return finite[order]


def build_pairs(
    scores: np.ndarray,
    num_pairs: int,
    rule: str = "top_vs_rest",
    votes: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Preference pairs ``(chosen, rejected)`` for one prompt's responses.

    Rules, with ``r_1 >= r_2 >= ...`` the responses ranked by score:
      * ``top_vs_rest``: ``(r_1, r_2) ... (r_1, r_{P+1})`` (the reference code's rule);
      * ``best_vs_worst``: the single pair ``(r_1, r_last)``; ``num_pairs`` is ignored;
      * ``topk_vs_bottomk``: ``(r_i, r_{n+1-i})`` for ``i = 1..P`` while ``i < n+1-i``;
      * ``all``: every ``(i, j)`` with ``s_i > s_j`` (:func:`ranked_pairs`; the TRL router's
        pair view of a GRPO group); ``num_pairs`` is ignored.
    Pairs whose scores tie are dropped, so fewer than P pairs may come back.

    Args:
        scores: shape ``(n,)``; NaN marks unscorable responses.
        num_pairs: P.
        rule: one of ``PAIRING_RULES``.
        votes: optional ``(K, n)`` per-RM scores; when given, a pair is kept only if a strict
            majority of the RMs that scored both responses order it the same way
            (the agreement ensemble).

    Returns:
        list of index pairs into ``scores``.
    """
    ranked = rank(np.asarray(scores, dtype=np.float64))
    if len(ranked) < 2:
        return []
    if rule == "top_vs_rest":
        candidates = [(ranked[0], r) for r in ranked[1 : num_pairs + 1]]
    elif rule == "best_vs_worst":
        candidates = [(ranked[0], ranked[-1])]
    elif rule == "all":
        candidates = ranked_pairs(scores)
    elif rule == "topk_vs_bottomk":
        n = len(ranked)
        candidates = [(ranked[i], ranked[n - 1 - i]) for i in range(min(num_pairs, n // 2))]
    else:
        raise ValueError(f"unknown pairing rule {rule!r}; valid: {', '.join(PAIRING_RULES)}")
    pairs = [(int(c), int(r)) for c, r in candidates if scores[c] > scores[r]]
    if votes is not None:
        pairs = [p for p in pairs if majority_agrees(votes, *p)]
    return pairs


def ranked_pairs(scores) -> list[tuple[int, int]]:
    """All (higher, lower) index pairs of finite scores with ``s_higher > s_lower``, in row-major
    index order; at most n (n - 1) / 2 of them."""
    s = np.asarray(scores, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(s))
    return [(int(i), int(j)) for i in ok for j in ok if s[i] > s[j]]


def majority_agrees(votes: np.ndarray, chosen: int, rejected: int) -> bool:
    """True when a strict majority of the RMs that scored both responses prefer ``chosen``."""
    a, b = votes[:, chosen], votes[:, rejected]
    valid = np.isfinite(a) & np.isfinite(b)
    if not valid.any():
        return False
    return int((a[valid] > b[valid]).sum()) * 2 > int(valid.sum())


def standardize(score_matrix: np.ndarray) -> np.ndarray:
    """Z-score each RM's scores over the step's responses: ``(s - mean_k) / std_k``.

    Args:
        score_matrix: shape ``(K, N)``; NaN entries are ignored in the statistics and stay NaN.

    Returns:
        shape ``(K, N)``; an RM whose finite scores are all equal (std 0) contributes zeros.
    """
    m = np.asarray(score_matrix, dtype=np.float64)
    out = np.full_like(m, np.nan)
    for k in range(m.shape[0]):
        finite = np.isfinite(m[k])
        if not finite.any():
            continue
        mu, sd = m[k, finite].mean(), m[k, finite].std()
        out[k, finite] = (m[k, finite] - mu) / sd if sd > 0 else 0.0
    return out


def ensemble_scores(score_matrix: np.ndarray) -> np.ndarray:
    """The RM score ensemble: mean over RMs of per-RM standardised scores, shape ``(N,)``.

    A response no RM could score stays NaN; otherwise the mean is over the RMs that scored it.
    """
    z = standardize(score_matrix)
    count = np.isfinite(z).sum(axis=0)
    total = np.where(np.isfinite(z), z, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
