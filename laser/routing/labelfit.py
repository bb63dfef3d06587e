"""Fitting the label model to one group's votes: each RM's pairwise accuracy, plus what the votes
cannot say and how the fit handles it (estimators: :mod:`laser.routing.labelmodel`).

What the votes cannot say, and how it is handled:

* the sign: ``mu`` and ``-mu`` fit equally; an anchor RM believed better than chance, or a few
  labelled pairs, fix it; without either the rule "the RMs are above chance on average" is used
  and reported as ``sign_source="majority"`` (a label-free guess);
* dependence: two RMs that share errors agree more than ``mu_i mu_j``; a pair whose agreement
  exceeds the fit of the other entries by ``dup_excess`` and ``dup_z`` standard errors is a
  near-duplicate, one of the two (never the anchor) leaves the fit and is estimated from its
  agreement with the RMs other than its twin;
* a shared error component: ``Q`` is no longer rank one; a chi-square statistic of the residuals
  (:func:`goodness_of_fit`) reports the group as unexplained (``ok=False``) so the caller can fall
  back to a safe choice instead of trusting a wrong ranking. With three RMs the model is exactly
  identified and the fit cannot be tested (``gof["df"] == 0``).
* a shared error the votes cannot show: when several RMs share one error component and the others
  are weak, ``Q`` stays rank one and looks like several accurate RMs that agree (the second
  moments of the two worlds are equal; tests/routing/test_labelmodel_limits.py builds both). No
  label-free rule separates them. Labelled pairs do: the fit's pick must be right on at least as
  many of the labelled pairs the two disagree on as the comparator (the anchor, else the RM right
  on most labelled pairs); otherwise the group is reported unexplained (``ok=False``, the veto).
* two informative RMs: when no third RM agrees with either of the two best beyond chance
  (``|Q_pk| <= ident_z`` standard errors for every other k), only the product of their ``mu`` is
  seen and their order is a guess. The fit is kept (either is far better than the chance-level
  rest) but reported: ``identified=False`` with a ``note``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from laser.routing.labelmodel import check_votes, goodness_of_fit, moment_se, one_coin_em, rank_one_fit, second_moments

__all__ = ["LabelModelResult", "fit_label_model"]


@dataclass
class LabelModelResult:
    """A fitted label model.

    Attributes:
        acc: ``(K,)`` estimated pairwise accuracy per RM (NaN: not estimable).
        mu: ``(K,)`` ``2 acc - 1``.
        used: ``(K,)`` bool, RMs inside the rank-one fit.
        twins: dropped near-duplicate RM -> the RM it duplicates (kept in the fit).
        sign_source: ``"anchor"``, ``"labels"`` or ``"majority"`` (label-free guess).
        gof: the goodness-of-fit figures (:func:`goodness_of_fit`).
        ok: False when the votes are not explained by the model (``reason`` says why).
        n_votes: ``(K,)`` non-abstaining votes per RM; n_items: pairs with at least one vote.
        labelled_right: ``(K,)`` labelled pairs each RM votes right on (None: no labelled pairs).
        identified: False when the order of the two best RMs rests on no third RM (``note`` says which).
    """

    acc: np.ndarray
    mu: np.ndarray
    used: np.ndarray
    twins: dict[int, int] = field(default_factory=dict)
    sign_source: str = "majority"
    gof: dict = field(default_factory=dict)
    ok: bool = True
    reason: str = ""
    n_votes: np.ndarray | None = None
    n_items: int = 0
    labelled_right: np.ndarray | None = None
    identified: bool = True
    note: str = ""

    def ranking(self) -> list[int]:
        """Arms by decreasing estimated accuracy (non-estimable last)."""
        acc = np.where(np.isfinite(self.acc), self.acc, -np.inf)
        return [int(k) for k in np.argsort(-acc, kind="stable")]


def fit_label_model(
    votes,
    clusters=None,
    anchor: int | None = None,
    labelled: tuple | None = None,
    method: str = "spectral",
    min_votes: int = 20,
    dup_excess: float = 0.2,
    dup_z: float = 4.0,
    gof_z: float = 4.0,
    gof_tol: float = 0.15,
    anchor_min: float = 0.15,
    previous: np.ndarray | None = None,
    ident_z: float = 3.0,
) -> LabelModelResult:
    """Each RM's pairwise accuracy from unlabelled votes (see the module docstring).

    Args:
        votes: ``(K, M)`` in {-1, 0, +1}.
        clusters: ``(M,)`` the group each pair comes from (its prompt), for the standard errors of
            the fit checks (:func:`moment_se`); None: pairs are independent.
        anchor: an RM believed better than chance everywhere: its accuracy is made >= 0.5.
        labelled: ``(votes_l (K, L), y (L,) in {-1, +1})``, a few labelled pairs: they fix the sign
            when no anchor is given, and veto a pick they contradict (see the module docstring).
        method: ``"spectral"`` (rank-one fit) or ``"em"`` (one-coin Dawid-Skene started from it).
        min_votes: an RM with fewer non-abstaining votes is not usable.
        dup_excess, dup_z: a pair agreeing ``dup_excess`` above the fit of the others and by
            ``dup_z`` standard errors is a near-duplicate.
        gof_z, gof_tol: the fit fails when its chi-square z exceeds ``gof_z`` and its largest
            residual ``gof_tol``.
        anchor_min: the anchor fixes the sign only when its ``|mu|`` is at least this; otherwise
            the sign follows ``previous`` (``sign_source="continuity"``) or the fit fails.
        previous: ``(K,)`` the previous fit's ``mu`` for the same group, or None.
        ident_z: a third RM tells the two best apart when it agrees with one of them by more
            than this many standard errors.

    Raises:
        ValueError: bad votes or method, or fewer than three usable RMs (the model needs three
            roughly independent RMs to be identified).
    """
    v = check_votes(votes)
    if method not in ("spectral", "em"):
        raise ValueError(f"label model method: {method!r} is not 'spectral' or 'em'")
    k = v.shape[0]
    n_votes = np.abs(v).sum(axis=1)
    used = n_votes >= min_votes
    if anchor is not None and not 0 <= anchor < k:
        raise ValueError(f"label model anchor: arm {anchor} out of range (K = {k})")
    _need_three(used, n_votes, min_votes)
    q, n = second_moments(v)
    se = moment_se(v, q, n, clusters)
    twins = _drop_duplicates(q, n, se, used, anchor, dup_excess, dup_z)
    _need_three(used, n_votes, min_votes, twins)
    mu = rank_one_fit(q, n, used)
    for d, twin in twins.items():  # a dropped twin is estimated against the RMs other than its twin
        others = used.copy()
        others[twin] = False
        den = float(np.nansum(n[d, others] * mu[others] ** 2))
        mu[d] = float(np.nansum(n[d, others] * q[d, others] * mu[others])) / den if den > 0 else 0.0
    weak_anchor = anchor is not None and abs(mu[anchor]) < anchor_min
    if weak_anchor and previous is not None and np.isfinite(previous).any():
        mu = mu if float(np.nan_to_num(previous) @ mu) >= 0 else -mu
        sign_source = "continuity"
    else:
        mu, sign_source = _fix_sign(mu, anchor, labelled)
    gof = goodness_of_fit(q, se, mu, used)
    acc = np.where(used | np.isin(np.arange(k), list(twins)), np.clip((1 + mu) / 2, 0, 1), np.nan)
    if method == "em":
        em_acc, _ = one_coin_em(v[used], acc[used])
        acc[used] = em_acc
    ok = not (gof["df"] > 0 and gof["z"] > gof_z and gof["max_abs_resid"] > gof_tol)
    reason = (
        ""
        if ok
        else (
            f"votes not explained by independent RMs (chi2 z = {gof['z']:.1f}, largest "
            f"residual {gof['max_abs_resid']:.2f} on RMs {gof['worst']}): shared errors?"
        )
    )
    if weak_anchor and sign_source != "continuity":
        ok, reason = (
            False,
            (
                f"the anchor (RM {anchor}) is near chance here (|2 acc - 1| = {abs(mu[anchor]):.2f} < "
                f"{anchor_min}): the sign is not identified"
            ),
        )
    shared = _cliques(twins)
    if shared:
        ok, reason = False, f"RMs {shared} agree far above their accuracies: a shared error component"
    right = _labelled_right(labelled, k)
    if ok and right is not None:
        ok, reason = _veto(right, acc, anchor)
    identified, note = _order_identified(q, se, acc, used, ident_z)
    return LabelModelResult(
        acc=acc,
        mu=2 * acc - 1,
        used=used,
        twins=twins,
        sign_source=sign_source,
        gof=gof,
        ok=ok,
        reason=reason,
        n_votes=n_votes,
        n_items=int((np.abs(v).sum(0) > 0).sum()),
        labelled_right=None if right is None else right.sum(axis=1),
        identified=identified,
        note=note,
    )


def _need_three(used: np.ndarray, n_votes: np.ndarray, min_votes: int, twins: dict | None = None) -> None:
    if used.sum() >= 3:
        return
    detail = ", ".join(f"RM {i}: {int(c)} votes" for i, c in enumerate(n_votes))
    dup = f"; near-duplicates dropped: {sorted(twins.items())}" if twins else ""
    raise ValueError(
        f"label model needs at least three usable RMs (each with >= {min_votes} non-abstaining "
        f"votes, no near-duplicates), got {int(used.sum())} ({detail}{dup})"
    )


def _drop_duplicates(q, n, se, used, anchor, dup_excess: float, dup_z: float) -> dict[int, int]:
    """Drop near-duplicate RMs from ``used`` (in place), most dependent pair first; returns {dropped: twin}.

    For each active pair (i, j), the rank-one model is fitted without it: the pair is dependent
    when it agrees ``dup_excess`` more than that fit predicts, ``q_ij - mu_i mu_j > dup_excess``,
    and leaving it out lowers the chi-square of the others by more than ``dup_z ** 2`` (one
    outlying entry explains the misfit). Of the two, the one with the smaller ``|mu|`` leaves
    (never the anchor); repeated until no pair is dependent.
    """
    twins: dict[int, int] = {}
    while used.sum() > 2:
        full = goodness_of_fit(q, se, rank_one_fit(q, n, used), used)["chi2"]
        worst, best_gain = None, dup_z**2
        idx = np.flatnonzero(used)
        for a, i in enumerate(idx):
            for j in idx[a + 1 :]:
                if n[i, j] <= 0 or not np.isfinite(q[i, j]) or q[i, j] <= dup_excess:
                    continue
                mu = rank_one_fit(q, n, used, skip=(i, j))
                gain = full - goodness_of_fit(q, se, mu, used, skip=(i, j))["chi2"]
                if q[i, j] - mu[i] * mu[j] > dup_excess and gain > best_gain:
                    worst, best_gain = (int(i), int(j), mu), gain
        if worst is None:
            return twins
        i, j, mu = worst
        drop = j if i == anchor or (j != anchor and abs(mu[i]) >= abs(mu[j])) else i
        used[drop] = False
        twins[drop] = i if drop == j else j
    return twins


def _cliques(twins: dict[int, int]) -> list[list[int]]:
    """Groups of three or more RMs tied together by dependence (a shared error, not a duplicate)."""
    groups: dict[int, set[int]] = {}
    for d, t in twins.items():
        merged = groups.get(d, {d}) | groups.get(t, {t})
        for x in merged:
            groups[x] = merged
    out = {tuple(sorted(g)) for g in groups.values() if len(g) >= 3}
    return [list(g) for g in sorted(out)]


def _order_identified(q, se, acc, used, z: float) -> tuple[bool, str]:
    """Whether some third RM agrees with one of the two best by more than ``z`` standard errors
    (then ``mu_p / mu_r = Q_pk / Q_rk`` is seen); ``(identified, note)``."""
    order = [int(i) for i in np.argsort(-np.where(np.isfinite(acc), acc, -np.inf), kind="stable")]
    p, r = order[0], order[1]
    with np.errstate(invalid="ignore"):
        sig = np.abs(np.nan_to_num(q)) > z * se
    if any(sig[p, j] or sig[r, j] for j in np.flatnonzero(used) if j not in (p, r)):
        return True, ""
    return False, (
        f"RMs {p} and {r} lead but no other RM agrees with either beyond chance: their order is not identified"
    )


def _labelled_right(labelled: tuple | None, k: int) -> np.ndarray | None:
    """``(K, L)`` bool: RM k votes the label of labelled pair l (None: no labelled pairs)."""
    if labelled is None:
        return None
    vl, y = check_votes(labelled[0]), np.asarray(labelled[1])
    if vl.shape[0] != k or vl.ndim != 2 or vl.shape[1] != len(y):
        raise ValueError(f"labelled pairs: votes {vl.shape} and labels {y.shape} do not match K = {k}")
    return vl == y[None, :] if len(y) else None


def _veto(right: np.ndarray, acc: np.ndarray, anchor: int | None) -> tuple[bool, str]:
    """``(ok, reason)``: the fit's pick against the comparator (the anchor, else the RM right on
    most labelled pairs) on the labelled pairs where exactly one of the two is right; the pick
    stands unless the comparator wins more of them."""
    pick = int(np.argmax(np.where(np.isfinite(acc), acc, -np.inf)))
    comp = anchor if anchor is not None else int(np.argmax(right.sum(axis=1)))
    if comp == pick:
        return True, ""
    b, c = int((right[comp] & ~right[pick]).sum()), int((right[pick] & ~right[comp]).sum())
    if b <= c:
        return True, ""
    who = "the anchor" if comp == anchor else "the RM best on labelled pairs"
    return False, (
        f"labelled pairs contradict the fit: of the {b + c} labelled pairs RM {pick} (the fit's pick) and "
        f"RM {comp} ({who}) disagree on, RM {comp} is right on {b}, RM {pick} on {c}"
    )


def _fix_sign(mu: np.ndarray, anchor: int | None, labelled: tuple | None) -> tuple[np.ndarray, str]:
    if anchor is not None:
        return (mu if mu[anchor] >= 0 else -mu), "anchor"
    if labelled is not None:
        vl, y = check_votes(labelled[0]), np.asarray(labelled[1], np.float64)
        if vl.shape[0] != len(mu) or vl.shape[1] != len(y):
            raise ValueError(f"labelled pairs: votes {vl.shape} and labels {y.shape} do not match K = {len(mu)}")
        agreement = float(y @ (np.nan_to_num(mu) @ vl.astype(np.float64)))
        if agreement != 0:
            return (mu if agreement > 0 else -mu), "labels"
    return (mu if np.nansum(mu) >= 0 else -mu), "majority"
