"""A label model: each reward model's pairwise accuracy from the RMs' agreement, without labels.

Votes ``V`` of shape ``(K, M)`` hold RM k's preference on pair m in {-1, 0, +1} (+1: the first
response is better, 0: abstain, e.g. a tie). The one-coin model says RM k votes the true preference
``y_m`` with probability ``a_k`` (its accuracy), independently of the other RMs given ``y_m``.
With ``mu_k = 2 a_k - 1`` and both RMs voting, ``E[v_i v_j] = E[y^2] mu_i mu_j = mu_i mu_j`` for
``i != j``, whatever the class balance: the off-diagonal of the votes' second-moment matrix ``Q``
is rank one (the spectral meta-learner, Parisi et al. 2014). :func:`rank_one_fit` finds ``mu``
by weighted least squares on the off-diagonal entries; :func:`one_coin_em` refines it by one-coin
Dawid-Skene EM.

What the votes cannot say (the sign, dependent RMs, shared errors, two informative RMs) and how
a fit handles it: :mod:`laser.routing.labelfit` (``fit_label_model``), which uses these estimators.

Pure numpy; float64 throughout.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "check_votes",
    "goodness_of_fit",
    "moment_se",
    "one_coin_em",
    "rank_one_fit",
    "second_moments",
]


def check_votes(votes) -> np.ndarray:
    """``votes`` as an int8 ``(K, M)`` array in {-1, 0, 1}.

    Raises:
        ValueError: wrong shape or a value outside {-1, 0, 1}.
    """
    v = np.asarray(votes)
    if v.ndim != 2:
        raise ValueError(f"votes: expected a (K, M) array, got shape {v.shape}")
    if v.size and not np.isin(v, (-1, 0, 1)).all():
        bad = v[~np.isin(v, (-1, 0, 1))].ravel()[:3]
        raise ValueError(f"votes: values must be -1, 0 (abstain) or +1, got e.g. {bad.tolist()}")
    return v.astype(np.int8)


def second_moments(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, N)``: ``N_ij`` pairs where both i and j vote, ``Q_ij`` the mean of ``v_i v_j`` over them
    (NaN where ``N_ij = 0``). Shapes ``(K, K)``."""
    v = votes.astype(np.float64)
    n = np.abs(v) @ np.abs(v).T
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n > 0, (v @ v.T) / np.maximum(n, 1), np.nan)
    return q, n


def moment_se(votes: np.ndarray, q: np.ndarray, n: np.ndarray, clusters=None) -> np.ndarray:
    """Standard error ``(K, K)`` of each ``Q_ij``, floored at ``1 / N_ij`` (inf where ``N_ij = 0``).

    Without ``clusters``: ``sqrt((1 - Q_ij^2) / N_ij)`` (a mean of independent +-1 products).
    With ``clusters`` (``(M,)`` ids, e.g. the prompt each pair comes from: pairs sharing a response
    are not independent), the cluster-robust ``sqrt(C / (C - 1) * sum_c S_c^2) / N_ij`` with
    ``S_c = sum_{m in c} (v_im v_jm - Q_ij)`` over the pairs of cluster c where both vote.
    """
    qz = np.nan_to_num(q)
    if clusters is None:
        var = np.maximum(1.0 - qz**2, 0.0) / np.maximum(n, 1)
    else:
        v, ids = votes.astype(np.float64), np.asarray(clusters)
        if len(ids) != v.shape[1]:
            raise ValueError(f"clusters: {len(ids)} ids for {v.shape[1]} pairs")
        total, labels = np.zeros_like(qz), np.unique(ids)
        for c in labels:
            vc = v[:, ids == c]
            s = vc @ vc.T - qz * (np.abs(vc) @ np.abs(vc).T)
            total += s * s
        scale = len(labels) / (len(labels) - 1) if len(labels) > 1 else 1.0
        var = scale * total / np.maximum(n, 1) ** 2
    se = np.maximum(np.sqrt(var), 1.0 / np.maximum(n, 1))
    return np.where(n > 0, se, np.inf)


def rank_one_fit(
    q: np.ndarray,
    n: np.ndarray,
    active: np.ndarray | None = None,
    skip: tuple[int, int] | None = None,
    iters: int = 200,
    tol: float = 1e-7,
) -> np.ndarray:
    """``mu`` minimising ``sum_{i<j} N_ij (Q_ij - mu_i mu_j)^2`` over the ``active`` RMs.

    Alternating updates ``mu_i <- sum_j N_ij Q_ij mu_j / sum_j N_ij mu_j^2`` (each the exact
    minimiser in ``mu_i`` with the others fixed), started from the leading eigenvector of ``Q``
    with its diagonal filled by the current ``mu_i^2``. The sign is arbitrary; inactive RMs get 0.

    Args:
        q, n: from :func:`second_moments`.
        active: ``(K,)`` bool, the RMs in the fit (default: all).
        skip: one pair ``(i, j)`` left out of the fit (leave-pair-out residuals).
    """
    k = q.shape[0]
    active = np.ones(k, bool) if active is None else np.asarray(active, bool)
    w = np.where(np.isfinite(q), n, 0.0) * np.outer(active, active)
    np.fill_diagonal(w, 0.0)
    if skip is not None:
        w[skip[0], skip[1]] = w[skip[1], skip[0]] = 0.0
    qz = np.where(w > 0, q, 0.0)
    mu = _spectral_start(qz, w, active)
    for _ in range(iters):
        new = mu.copy()
        for i in np.flatnonzero(active):  # Gauss-Seidel: each mu_i its exact minimiser given the others
            den = float(w[i] @ (new * new))
            new[i] = float(w[i] @ (qz[i] * new)) / den if den > 0 else 0.0
        if np.max(np.abs(new - mu)) < tol:
            return new
        mu = new
    return mu


def _spectral_start(qz: np.ndarray, w: np.ndarray, active: np.ndarray) -> np.ndarray:
    m = np.where(w > 0, qz, 0.0)
    diag = np.abs(m).max(axis=1)
    mu = np.zeros(len(m))
    for _ in range(10):
        full = m.copy()
        np.fill_diagonal(full, diag)
        vals, vecs = np.linalg.eigh(full)
        mu = vecs[:, -1] * np.sqrt(max(vals[-1], 0.0))
        diag = mu * mu
    return np.where(active, mu, 0.0)


def goodness_of_fit(
    q: np.ndarray, se: np.ndarray, mu: np.ndarray, active: np.ndarray, skip: tuple[int, int] | None = None
) -> dict:
    """Residuals of the rank-one fit over the active pairs.

    ``r_ij = Q_ij - mu_i mu_j``; ``se`` from :func:`moment_se`; ``chi2 = sum (r / se)^2`` with
    ``df = pairs - active RMs``;
    ``z = (chi2 - df) / sqrt(2 df)``.

    Args:
        skip: one pair left out (as in :func:`rank_one_fit`).

    Returns:
        ``{"chi2", "df", "z", "max_abs_resid", "rms_resid", "worst": [i, j]}``.
    """
    idx = np.flatnonzero(active)
    rs, chi2, worst, pairs = [], 0.0, None, 0
    for a, i in enumerate(idx):
        for j in idx[a + 1 :]:
            if (
                not np.isfinite(se[i, j])
                or not np.isfinite(q[i, j])
                or (skip is not None and {int(i), int(j)} == set(skip))
            ):
                continue
            r = q[i, j] - mu[i] * mu[j]
            chi2 += (r / se[i, j]) ** 2
            pairs += 1
            if worst is None or abs(r) > max(abs(x) for x in rs):
                worst = [int(i), int(j)]
            rs.append(r)
    df = pairs - len(idx)
    z = (chi2 - df) / np.sqrt(2 * df) if df > 0 else 0.0
    r = np.asarray(rs) if rs else np.zeros(1)
    return {
        "chi2": float(chi2),
        "df": int(df),
        "z": float(z),
        "max_abs_resid": float(np.abs(r).max()),
        "rms_resid": float(np.sqrt(np.mean(r * r))),
        "worst": worst,
    }


def one_coin_em(
    votes: np.ndarray,
    acc0: np.ndarray,
    iters: int = 100,
    tol: float = 1e-8,
    estimate_prior: bool = False,
    eps: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """One-coin Dawid-Skene EM.

    E-step: ``log P(y_m = +1) / P(y_m = -1) = logit(pi) + sum_k v_km log(a_k / (1 - a_k))``.
    M-step: ``a_k = sum_m (P(y_m = v_km) over m where k votes) / #votes of k``; ``pi`` (the share
    of +1 pairs) is 0.5 unless ``estimate_prior``.

    Args:
        votes: ``(K, M)`` in {-1, 0, 1}.
        acc0: ``(K,)`` starting accuracies (their side of 0.5 fixes the sign).
        eps: accuracies are kept in ``[eps, 1 - eps]``.

    Returns:
        ``(acc (K,), p (M,))``: accuracies and each pair's posterior ``P(y = +1)``.
    """
    v = votes.astype(np.float64)
    voted = np.abs(v)
    acc = np.clip(np.asarray(acc0, np.float64), eps, 1 - eps)
    prior, p = 0.5, np.full(v.shape[1], 0.5)
    for _ in range(iters):
        logit = np.log(prior / (1 - prior)) + (np.log(acc / (1 - acc)) @ v)
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))
        right = (v > 0) * p + (v < 0) * (1 - p)
        new = np.clip(right.sum(axis=1) / np.maximum(voted.sum(axis=1), 1), eps, 1 - eps)
        if estimate_prior:
            prior = float(np.clip(p.mean(), eps, 1 - eps))
        done = np.max(np.abs(new - acc)) < tol
        acc = new
        if done:
            break
    return acc, p
