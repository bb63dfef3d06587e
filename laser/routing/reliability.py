"""The reliability router: per group of prompts, route to the RM the label model trusts most.

On a share of prompts (the probes) every RM scores the same responses; pairs of responses become
votes (:func:`pair_votes`), a label model (:mod:`laser.routing.labelfit`) estimates each RM's
pairwise accuracy per group, and every other prompt of the group is scored by the group's best RM
only. Framework-free: the caller (a training strategy, a TRL reward function, a server) gives
group keys, asks :meth:`ReliabilityRouter.plan` which prompts are probes and which arm scores each
prompt, and feeds the probes' score matrices back with :meth:`ReliabilityRouter.observe`.

Rules:

* Pairs: every pair of a prompt's responses whose extracted answers differ, when the prompt's task
  has an answer extractor (a pair with the same answer has no right side, and the RMs' votes on it
  measure partial credit or style, not correctness); on free-form prompts every pair of distinct
  response texts (the label model then measures agreement on preference, style included). At most
  ``max_pairs`` pairs per prompt, drawn at random; each pair's orientation is random (balanced
  classes). An RM whose two scores tie, or one of them is NaN, abstains.
* Probes: the first ``warmup`` prompts of each group; afterwards a prompt is a probe with
  probability ``probe_share * u_g / mean(u)``, where ``u_g`` is its group's uncertainty (the
  bootstrap probability that the best RM is not the best, floored at ``min_uncertainty`` so every
  group keeps refreshing as the policy moves), while the probes so far stay within ``probe_share``
  of the prompts seen after warm-up. Votes are kept in a window of the last ``window`` pairs per
  group, so old policy samples age out.
* Routing: the group's RM with the highest estimated accuracy, when the fit is trusted and that
  accuracy is above 0.5; otherwise the fallback (flagged ``fallback``): the anchor RM when one is
  named, else the RM right on most of the group's labelled pairs, else one arm per group drawn
  from the group's name (the same RM for every prompt of the group: a per-prompt draw would train
  the group on several RMs' scales at once). A probe prompt trains on the same RM as the others.
* Sign: the anchor's, else the group's labelled pairs' (:meth:`ReliabilityRouter.add_labelled`),
  else the label-free majority rule (reported as ``sign_source``).
* Labelled pairs also veto: a fit whose pick is right on fewer of the labelled pairs it disagrees
  on with the comparator (the anchor, else the RM best on the labelled pairs) is not trusted
  (:func:`~laser.routing.labelfit.fit_label_model`). In the shared-error scenario of
  ``benchmarks/reliability_offline.py --labelled 20`` (5 seeds x 4 domains) a wrong RM was trusted in
  6 of 20 fits with the anchor alone, 6 of 200 with the anchor and 20 labelled pairs per domain
  (10 draws each), 17 of 200 with the 20 pairs and no anchor, 20 of 20 label-free.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from laser.routing.labelfit import fit_label_model
from laser.routing.labelmodel import rank_one_fit, second_moments

__all__ = ["GroupFit", "ReliabilityRouter", "pair_votes"]


def pair_votes(
    scores: np.ndarray, answers: list | None, texts: list[str], rng: np.random.Generator, max_pairs: int = 32
) -> np.ndarray:
    """Votes ``(K, m)`` of K RMs on the pairs of one prompt's responses.

    Args:
        scores: ``(K, n)`` every RM's score of the prompt's n responses (NaN: unscorable).
        answers: the n extracted answers (None: no answer found, a distinct answer), or None for a
            free-form prompt (pairs of distinct texts).
        texts: the n responses.
        rng: draws the pairs kept and their orientation.
        max_pairs: at most this many pairs.
    """
    k, n = scores.shape
    pairs = [
        (a, b)
        for a in range(n)
        for b in range(a + 1, n)
        if (answers[a] != answers[b] if answers is not None else texts[a] != texts[b])
    ]
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), max_pairs, replace=False))]
    if not pairs:
        return np.zeros((k, 0), np.int8)
    a, b = np.array(pairs).T
    flip = rng.random(len(pairs)) < 0.5
    a, b = np.where(flip, b, a), np.where(flip, a, b)
    with np.errstate(invalid="ignore"):
        diff = scores[:, a] - scores[:, b]
    return np.where(np.isfinite(diff), np.sign(diff), 0).astype(np.int8)


@dataclass
class GroupFit:
    """One group's routing state: its vote window and its latest fit (plain Python, JSON-able)."""

    votes: list[list[int]] = field(default_factory=list)  # K rows, the window of votes
    clusters: list[int] = field(default_factory=list)  # per vote: the probe prompt it came from
    prompts_seen: int = 0
    probes: int = 0
    observed: int = 0  # probe prompts whose votes came back
    acc: list[float] | None = None
    ok: bool = False
    reason: str = "warm-up"
    sign_source: str = ""
    twins: dict = field(default_factory=dict)
    uncertainty: float = 1.0
    labelled: list[list[int]] = field(default_factory=list)  # K rows: votes on labelled pairs, chosen first
    note: str = ""  # the fit's caveat, e.g. the two best RMs' order not identified


class ReliabilityRouter:
    """Label-free routing by per-group RM reliability (see the module docstring).

    Args:
        n_arms: K, the number of RMs (at least 3).
        anchor: the arm believed better than chance on every group (fixes the label model's sign
            and is the fallback), or None.
        probe_share: target share of prompts scored by every RM after warm-up.
        warmup: probe prompts per group before routing starts.
        window: votes (pairs) kept per group.
        max_pairs: pairs per probe prompt.
        min_votes: votes an RM needs in a group to be estimated.
        min_uncertainty: floor of a group's uncertainty (keeps estimates refreshing).
        method: the label model (``"spectral"`` or ``"em"``).
        n_boot: bootstrap replicates of the uncertainty.
        seed: seeds the probe draws and pairs.

    Raises:
        ValueError: fewer than three RMs, or a parameter out of range.
    """

    def __init__(
        self,
        n_arms: int,
        anchor: int | None = None,
        probe_share: float = 0.08,
        warmup: int = 4,
        window: int = 1500,
        max_pairs: int = 32,
        min_votes: int = 30,
        min_uncertainty: float = 0.25,
        method: str = "spectral",
        n_boot: int = 30,
        seed: int = 0,
    ):
        if n_arms < 3:
            raise ValueError(
                f"reliability routing needs at least three reward models (the label model is "
                f"not identified with fewer), got {n_arms}"
            )
        if anchor is not None and not 0 <= anchor < n_arms:
            raise ValueError(f"anchor: arm {anchor} out of range (K = {n_arms})")
        if not 0.0 <= probe_share <= 1.0:
            raise ValueError(f"probe_share: must be in [0, 1], got {probe_share}")
        self.n_arms, self.anchor, self.probe_share, self.warmup = n_arms, anchor, probe_share, warmup
        self.window, self.max_pairs, self.min_votes, self.min_uncertainty = (
            window,
            max_pairs,
            min_votes,
            min_uncertainty,
        )
        self.method, self.n_boot, self.seed = method, n_boot, seed
        self.rng_ = np.random.default_rng(seed)
        self.groups_: dict[str, GroupFit] = {}
        self.masked_: set[int] = set()
        self.after_warmup_ = [0, 0]  # prompts seen after warm-up, probes among them
        self.fit_seconds_ = 0.0

    # ----- arm masking (RMs that are down) ---------------------------------------------
    def mask_arm(self, k: int) -> None:
        self.masked_.add(int(k))

    def unmask_arm(self, k: int) -> None:
        self.masked_.discard(int(k))

    # ----- decisions --------------------------------------------------------------------
    def plan(self, groups: list[str]) -> tuple[list[int], list[bool]]:
        """The arm of each prompt and whether it is a probe (every RM scores it)."""
        arms, probes = [], []
        u_mean = np.mean([self._u(g) for g in self.groups_]) if self.groups_ else 1.0
        for g in groups:
            st = self.groups_.setdefault(g, GroupFit())
            st.prompts_seen += 1
            if st.probes < self.warmup:
                probe = True
            else:
                seen, done = self.after_warmup_
                p = min(1.0, self.probe_share * self._u(g) / max(u_mean, 1e-9))
                probe = done < self.probe_share * (seen + 1) and bool(self.rng_.random() < p)
                self.after_warmup_ = [seen + 1, done + int(probe)]
            st.probes += int(probe)
            probes.append(probe)
            arms.append(self.best(g)[0])
        return arms, probes

    def _u(self, g: str) -> float:
        return max(self.groups_[g].uncertainty, self.min_uncertainty)

    def best(self, group: str) -> tuple[int, str]:
        """``(arm, status)``: the group's routed RM and why (``estimate``, ``warm-up`` or ``fallback: ...``)."""
        st = self.groups_.get(group)
        up = [k for k in range(self.n_arms) if k not in self.masked_]
        if not up:
            raise RuntimeError("reliability router: every reward model is masked")
        if st is not None and st.ok and st.acc is not None:
            acc = np.array([st.acc[k] if k in up and st.acc[k] is not None else -np.inf for k in range(self.n_arms)])
            k = int(np.argmax(acc))
            if acc[k] > 0.5:
                return k, "estimate"
        why = "warm-up" if st is None or st.acc is None and st.reason == "warm-up" else f"fallback: {st.reason}"
        return self._fallback(group, st, up), why

    def _fallback(self, group: str, st: GroupFit | None, up: list[int]) -> int:
        """The anchor when it is up; else the RM right on most of the group's labelled pairs; else
        one arm per group drawn from its name (the same for every prompt of the group)."""
        if self.anchor is not None and self.anchor in up:
            return self.anchor
        if st is not None and st.labelled and st.labelled[0]:
            right = np.sum(np.asarray(st.labelled) == 1, axis=1)
            return max(up, key=lambda k: (right[k], -k))
        return int(up[zlib.crc32(group.encode()) % len(up)])

    # ----- learning ---------------------------------------------------------------------
    def add_labelled(self, group: str, votes: np.ndarray) -> None:
        """Add the RMs' votes ``(K, L)`` on ``L`` labelled pairs of ``group``, each oriented with the
        preferred response first (label +1). They fix the sign of the group's label model when no
        anchor is named (``sign_source="labels"``); they are not part of the vote window.
        """
        v = np.asarray(votes, np.int8)
        if v.ndim != 2 or v.shape[0] != self.n_arms:
            raise ValueError(
                f"labelled pairs of group {group!r}: votes of shape {v.shape}, expected ({self.n_arms}, L)"
            )
        st = self.groups_.setdefault(group, GroupFit())
        rows = st.labelled or [[] for _ in range(self.n_arms)]
        st.labelled = [row + v[k].tolist() for k, row in enumerate(rows)]

    def observe(self, group: str, votes: np.ndarray) -> None:
        """Add a probe prompt's votes ``(K, m)`` to its group's window (masked RMs abstain)."""
        st = self.groups_.setdefault(group, GroupFit())
        v = np.asarray(votes, np.int8).copy()
        v[sorted(self.masked_)] = 0
        rows = st.votes or [[] for _ in range(self.n_arms)]
        st.votes = [(row + v[k].tolist())[-self.window :] for k, row in enumerate(rows)]
        st.clusters = (st.clusters + [st.observed] * v.shape[1])[-self.window :]
        st.observed += 1

    def regroup(self, records: list[tuple]) -> None:
        """Rebuild every group from kept probe votes after the prompts' groups changed (e.g. a
        k-means refit), then refit.

        Args:
            records: ``(new group, votes (K, m), old group)`` per kept probe prompt, in the order
                they were observed. A new group inherits the last trusted fit of the old group
                most of its votes come from when it also holds most of that old group's votes
                (the old group became this one), so the sign-continuity rule survives the
                regrouping; a group carved out of another domain's cluster inherits nothing.
        """
        old, self.groups_ = self.groups_, {}
        flow: dict[tuple[str, str], int] = {}  # (old group, new group) -> votes
        for g, votes, was in records:
            st = self.groups_.setdefault(g, GroupFit())
            st.prompts_seen, st.probes = st.prompts_seen + 1, st.probes + 1
            self.observe(g, votes)
            flow[(was, g)] = flow.get((was, g), 0) + votes.shape[1]
        heir = {w: max((g for v, g in flow if v == w), key=lambda g: flow[(w, g)]) for w, _ in flow}
        for g, st in self.groups_.items():
            was = max((w for w, n in flow if n == g), key=lambda w: flow[(w, g)])
            parent = old.get(was)
            if heir[was] == g and parent is not None and parent.ok and parent.acc is not None:
                st.acc, st.ok, st.reason = list(parent.acc), True, "inherited"
            self.refit(g)

    def refit(self, group: str) -> GroupFit:
        """Fit the group's label model on its window; a fit that fails leaves the group on its fallback.

        The three steps in sequence: :meth:`refit_snapshot`, :meth:`refit_compute`,
        :meth:`refit_apply` (a server runs the middle one outside its lock).
        """
        return self.refit_apply(group, self.refit_compute(self.refit_snapshot(group)))

    def refit_snapshot(self, group: str) -> dict:
        """Copies of what a refit of ``group`` reads (its vote window, clusters, labelled votes and
        the previous trusted fit), so :meth:`refit_compute` can run while the router changes."""
        st = self.groups_[group]
        prev = None if st.acc is None or not st.ok else 2 * np.array([np.nan if a is None else a for a in st.acc]) - 1
        labelled = None
        if st.labelled and st.labelled[0]:
            labelled = (np.asarray(st.labelled, np.int8), np.ones(len(st.labelled[0])))
        votes = np.asarray(st.votes, np.int8)  # a new array: the window's lists are not shared
        return {
            "group": group,
            "votes": votes,
            "clusters": np.asarray(st.clusters),
            "labelled": labelled,
            "previous": prev,
        }

    def refit_compute(self, snap: dict) -> dict:
        """The fit of a :meth:`refit_snapshot`: a pure function of the snapshot and the router's
        fixed hyper-parameters (it reads no group state, so it needs no lock). Returns the result
        :meth:`refit_apply` writes: ``error`` (the label model's ValueError) or ``fit`` and
        ``uncertainty``, and the ``seconds`` it took."""
        t0 = time.perf_counter()
        try:
            res = fit_label_model(
                snap["votes"],
                snap["clusters"],
                anchor=self.anchor,
                labelled=snap["labelled"],
                method=self.method,
                min_votes=self.min_votes,
                previous=snap["previous"],
            )
        except ValueError as exc:
            return {"error": str(exc), "seconds": time.perf_counter() - t0}
        u = self._bootstrap_uncertainty(snap["votes"], snap["clusters"], res, snap["group"]) if res.ok else 1.0
        return {"fit": res, "uncertainty": u, "seconds": time.perf_counter() - t0}

    def refit_apply(self, group: str, result: dict) -> GroupFit:
        """Write a :meth:`refit_compute` result into ``group``'s state: on an ``error`` the group's
        fallback, with ``reason`` when the result gives one."""
        st = self.groups_[group]
        if "error" in result:
            reason = result.get("reason", f"not enough votes ({result['error']})")
            st.acc, st.ok, st.reason, st.uncertainty = None, False, reason, 1.0
        else:
            res = result["fit"]
            st.acc = [None if not np.isfinite(a) else float(a) for a in res.acc]
            st.ok, st.reason, st.sign_source, st.note = res.ok, res.reason, res.sign_source, res.note
            st.twins = {str(d): int(t) for d, t in res.twins.items()}
            st.uncertainty = result["uncertainty"]
        self.fit_seconds_ += result["seconds"]
        return st

    def _bootstrap_uncertainty(self, v: np.ndarray, clusters: np.ndarray, res, group: str) -> float:
        """Share of bootstrap refits (probe prompts resampled with their pairs; the fit's RMs, sign
        aligned with the fit's) whose best RM differs from the fit's best."""
        if self.n_boot <= 0:
            return 0.0
        acc = np.where(np.isfinite(res.acc), res.acc, -np.inf)
        best, used = int(np.argmax(acc)), res.used.copy()
        if not used[best]:  # a dropped twin leads: its twin stands for it in the refits
            best = res.twins[best]
        rng = np.random.default_rng([self.seed, zlib.crc32(group.encode()), v.shape[1]])  # deterministic per window
        flips, labels = 0, np.unique(clusters)
        members = [np.flatnonzero(clusters == c) for c in labels]
        for _ in range(self.n_boot):
            q, n = second_moments(v[:, np.concatenate([members[i] for i in rng.integers(0, len(labels), len(labels))])])
            mu = rank_one_fit(q, n, used)
            mu = mu if mu @ np.nan_to_num(res.mu * used) >= 0 else -mu
            flips += int(np.argmax(np.where(used, mu, -np.inf)) != best)
        return flips / self.n_boot

    # ----- state ------------------------------------------------------------------------
    def _hparams(self) -> dict:
        return {
            "n_arms": self.n_arms,
            "anchor": self.anchor,
            "probe_share": self.probe_share,
            "warmup": self.warmup,
            "window": self.window,
            "max_pairs": self.max_pairs,
            "min_votes": self.min_votes,
            "min_uncertainty": self.min_uncertainty,
            "method": self.method,
            "n_boot": self.n_boot,
            "seed": self.seed,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """The whole state as one JSON string array (exact round trip; no pickle)."""
        state = {
            "hp": self._hparams(),
            "rng": self.rng_.bit_generator.state,
            "groups": {g: vars(st) for g, st in self.groups_.items()},
            "masked": sorted(self.masked_),
            "after_warmup": self.after_warmup_,
        }  # fit_seconds_ is a measurement, not state
        return {"router": np.array(json.dumps(state))}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            ValueError: the state was written with other hyper-parameters.
        """
        state = json.loads(str(np.asarray(sd["router"])))
        if state["hp"] != json.loads(json.dumps(self._hparams())):
            diff = {k: (v, self._hparams().get(k)) for k, v in state["hp"].items() if self._hparams().get(k) != v}
            raise ValueError(f"reliability router state: hyper-parameters differ (saved, configured): {diff}")
        self.rng_.bit_generator.state = state["rng"]
        self.groups_ = {g: GroupFit(**st) for g, st in state["groups"].items()}
        self.masked_ = set(state["masked"])
        self.after_warmup_ = list(state["after_warmup"])
