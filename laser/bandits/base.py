"""The selector interface every bandit and baseline rule shares.

A selector picks an arm (a reward model's index) for a context, then learns from the reward
(the bandit feedback, in [0, 1] after normalisation). The training loop only ever calls the
methods of :class:`Selector`, so it never special-cases a method.

State is plain numpy: :meth:`Selector.state_dict` returns a flat ``dict[str, np.ndarray]``
(scalars as 0-d arrays, strings as 0-d unicode arrays, the owned RNG's state as a JSON string),
so ``np.savez(f, **sd)`` and ``dict(np.load(f, allow_pickle=False))`` round-trip it exactly.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np


class NoArmAvailable(RuntimeError):
    """Every arm is masked or removed, so there is nothing to select."""


def rng_state_array(rng: np.random.Generator) -> np.ndarray:
    """The bit generator's full state as a 0-d unicode array (JSON; 128-bit ints stay exact)."""
    return np.array(json.dumps(rng.bit_generator.state, sort_keys=True))


def rng_from_state_array(arr: np.ndarray) -> np.random.Generator:
    """Rebuild a Generator from :func:`rng_state_array`'s output."""
    state = json.loads(str(arr[()]))
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def hparam_array(value: Any) -> np.ndarray:
    """A hyper-parameter as a 0-d (or n-d) array: None -> "None", dtypes -> their name."""
    if value is None:
        return np.array("None")
    if isinstance(value, (np.dtype, type)):
        return np.array(np.dtype(value).name)
    return np.array(value)


def argmax_random_tie(values: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest value; exact ties are broken uniformly with ``rng``.

    NaN and -inf entries are never chosen (callers put -inf on masked arms). ``rng`` is only
    drawn from when there is a tie, so the stream stays deterministic given the scores.
    """
    best = np.flatnonzero(values == np.max(values))
    return int(best[0] if best.size == 1 else best[rng.integers(best.size)])


class Selector:
    """Base class: arm bookkeeping, masking, validation, state and the decision rule.

    Subclasses implement ``_score_batch(contexts) -> (B, n_arms)`` and, when learning,
    ``_update(arm, context, reward)``; rules that are not an argmax of the scores (Exp3,
    random, round-robin, epsilon-greedy) override ``_choose(scores) -> arms``.
    Hyper-parameters are stored verbatim as attributes, learned state in trailing-underscore
    attributes (``counts_``, ``theta_``, ...).

    Args:
        n_arms: number of arms at the start (>= 1); :meth:`add_arm` grows it.
        seed: seed of the owned ``np.random.Generator`` (tie-breaks, sampling, exploration).

    Attributes:
        counts_: int64 ``(n_arms,)``, number of updates each arm received.
        rng_: the owned random generator; its state is part of :meth:`state_dict`.
    """

    name: ClassVar[str] = "selector"
    contextual: ClassVar[bool] = False
    #: whether the rewards passed to ``update`` change later decisions (False: a fixed rule that only
    #: counts them, e.g. random, round-robin, a single RM, an offline classifier)
    learns_from_rewards: ClassVar[bool] = True
    #: names of the constructor arguments that :meth:`load_state_dict` checks for equality.
    _hparam_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_arms: int, seed: int = 0) -> None:
        if int(n_arms) != n_arms or n_arms < 1:
            raise ValueError(f"{type(self).__name__}: n_arms must be an integer >= 1, got {n_arms!r}")
        self.seed = int(seed)
        self.rng_ = np.random.default_rng(self.seed)
        self.counts_ = np.zeros(int(n_arms), dtype=np.int64)
        self._masked = np.zeros(int(n_arms), dtype=bool)
        self._removed = np.zeros(int(n_arms), dtype=bool)

    # ----------------------------------------------------------------- arms and masking
    @property
    def n_arms(self) -> int:
        """Number of arms, masked and removed ones included (indices never shift)."""
        return int(self.counts_.shape[0])

    @property
    def masked(self) -> np.ndarray:
        """Bool ``(n_arms,)``: True for arms excluded from selection (masked or removed)."""
        return self._masked | self._removed

    def _check_arm(self, k: int) -> int:
        if int(k) != k or not 0 <= k < self.n_arms:
            raise IndexError(f"{type(self).__name__}: arm {k!r} out of range [0, {self.n_arms})")
        return int(k)

    def add_arm(self) -> int:
        """Add an arm that starts from the prior; the other arms' state is untouched.

        Returns:
            The new arm's index (the previous ``n_arms``).
        """
        self.counts_ = np.append(self.counts_, np.int64(0))
        self._masked = np.append(self._masked, False)
        self._removed = np.append(self._removed, False)
        self._add_arm()
        return self.n_arms - 1

    def mask_arm(self, k: int) -> None:
        """Exclude arm ``k`` from selection (e.g. its RM is down); its state is kept."""
        self._masked[self._check_arm(k)] = True

    def unmask_arm(self, k: int) -> None:
        """Make arm ``k`` selectable again.

        Raises:
            ValueError: the arm was removed with :meth:`remove_arm` (removal is permanent).
        """
        k = self._check_arm(k)
        if self._removed[k]:
            raise ValueError(f"{type(self).__name__}: arm {k} was removed and cannot be unmasked")
        self._masked[k] = False

    def remove_arm(self, k: int) -> None:
        """Permanently exclude arm ``k``; indices of the other arms do not change."""
        self._removed[self._check_arm(k)] = True

    def _available(self) -> np.ndarray:
        """Indices of selectable arms; raises :class:`NoArmAvailable` when there are none."""
        free = np.flatnonzero(~self.masked)
        if free.size == 0:
            raise NoArmAvailable(
                f"{type(self).__name__}: all {self.n_arms} arms are masked or removed "
                f"(masked: {np.flatnonzero(self._masked).tolist()}, "
                f"removed: {np.flatnonzero(self._removed).tolist()}); nothing to select"
            )
        return free

    # ----------------------------------------------------------------- decisions
    def _as_contexts(self, contexts: np.ndarray) -> np.ndarray:
        """Validate a (B, d) context batch; non-contextual selectors accept anything."""
        if not self.contextual:
            n = 1 if contexts is None or np.ndim(contexts) < 2 else len(contexts)
            return np.zeros((n, 0))
        c = np.asarray(contexts, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}: contexts must have shape (B, {self.dim}), got {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError(f"{type(self).__name__}: context contains NaN or inf")
        return c

    def _score_batch(self, contexts: np.ndarray) -> np.ndarray:
        """Raw scores ``(B, n_arms)`` for validated contexts, before masking."""
        raise NotImplementedError

    def scores(self, context: np.ndarray) -> np.ndarray:
        """Each arm's score for one context: float64 ``(n_arms,)``, NaN for masked arms.

        What a score means depends on the selector (UCB for LinUCB, a posterior sample for
        Thompson sampling, a probability for Exp3 / random); sampled scores draw from ``rng_``.
        To log the very scores a decision used, call :meth:`select_with_scores`.
        """
        return self._masked_scores(self._one(context))[0]

    def select(self, context: np.ndarray) -> int:
        """Pick one arm for ``context`` (float ``(d,)``; ignored by non-contextual selectors).

        Raises:
            NoArmAvailable: every arm is masked or removed.
        """
        return int(self.select_batch(self._one(context))[0])

    def select_with_scores(self, context: np.ndarray) -> tuple[int, np.ndarray]:
        """:meth:`select` plus the scores it decided on (same RNG use as ``select`` alone).

        Returns:
            (arm, scores) with scores float64 ``(n_arms,)``, NaN for masked arms.
        """
        self._available()
        s = self._masked_scores(self._one(context))
        return int(self._choose(s)[0]), s[0]

    def select_batch(self, contexts: np.ndarray) -> np.ndarray:
        """Pick one arm per context: ``(B, d)`` -> int64 ``(B,)``, one pass over each arm's state.

        Raises:
            NoArmAvailable: every arm is masked or removed.
        """
        self._available()
        return self._choose(self._masked_scores(contexts))

    def _one(self, context: np.ndarray) -> np.ndarray | None:
        return None if not self.contextual else np.asarray(context, dtype=np.float64)[None, :]

    def _masked_scores(self, contexts: np.ndarray | None) -> np.ndarray:
        s = np.array(self._score_batch(self._as_contexts(contexts)), dtype=np.float64)
        s[:, self.masked] = np.nan
        return s

    def _choose(self, scores: np.ndarray) -> np.ndarray:
        """Arms for a (B, n_arms) score matrix (NaN = masked). Default: argmax, random ties."""
        s = np.where(np.isnan(scores), -np.inf, scores)
        free = np.flatnonzero(~self.masked)
        out = np.empty(s.shape[0], dtype=np.int64)
        for i, row in enumerate(s):
            out[i] = argmax_random_tie(row, self.rng_) if np.any(row > -np.inf) else free[0]
        return out

    # ----------------------------------------------------------------- learning
    def update(self, arm: int, context: np.ndarray, reward: float) -> None:
        """Learn from ``reward`` (finite; in [0, 1] after normalisation) of ``arm`` at ``context``.

        Masked arms may still be updated (the decision was made before the mask).

        Raises:
            IndexError: ``arm`` is out of range.
            ValueError: the reward or the context is not finite, or the context has the wrong shape.
        """
        arm = self._check_arm(arm)
        r = float(reward)
        if not np.isfinite(r):
            raise ValueError(f"{type(self).__name__}: reward for arm {arm} is not finite ({reward!r})")
        self._update(arm, self._as_contexts(self._one(context))[0], r)
        self.counts_[arm] += 1

    def update_batch(self, arms: np.ndarray, contexts: np.ndarray, rewards: np.ndarray) -> None:
        """Apply :meth:`update` to each ``(arm, context, reward)`` in order."""
        arms = np.asarray(arms).reshape(-1)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if arms.shape != rewards.shape or (contexts is not None and len(contexts) != len(arms)):
            raise ValueError(
                f"{type(self).__name__}: update_batch needs equal lengths, got "
                f"{len(arms)} arms, {len(rewards)} rewards, "
                f"{None if contexts is None else len(contexts)} contexts"
            )
        for i in range(len(arms)):
            self.update(int(arms[i]), None if contexts is None else contexts[i], rewards[i])

    def _update(self, arm: int, context: np.ndarray, reward: float) -> None:
        """Algorithm-specific learning step (``counts_`` is maintained by :meth:`update`)."""

    def _add_arm(self) -> None:
        """Algorithm-specific initialisation of the newest arm's state."""

    # ----------------------------------------------------------------- state
    def _hparams(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("seed", *self._hparam_names)}

    def _extra_state(self) -> dict[str, np.ndarray]:
        """Learned state beyond counts, masks and RNG, as flat arrays."""
        return {}

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_extra_state` (``counts_`` is already loaded)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly, as a flat dict of numpy arrays.

        Keys: ``selector`` (the name), ``hp.<name>`` (hyper-parameters, checked on load),
        ``counts``, ``masked``, ``removed``, ``rng`` (JSON of the bit generator state) and the
        selector's learned state.
        """
        sd = {
            "selector": np.array(self.name),
            "counts": self.counts_.copy(),
            "masked": self._masked.copy(),
            "removed": self._removed.copy(),
            "rng": rng_state_array(self.rng_),
        }
        for key, value in self._hparams().items():
            sd[f"hp.{key}"] = hparam_array(value)
        sd.update(self._extra_state())
        return sd

    def load_state_dict(self, sd: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s output; the next decisions equal the saved object's.

        Raises:
            ValueError: the state is from another selector, has other hyper-parameters or
                another number of arms, or a key is missing.
        """
        me = type(self).__name__
        missing = [k for k in ("selector", "counts", "masked", "removed", "rng") if k not in sd]
        if missing:
            raise ValueError(f"{me}.load_state_dict: missing keys {missing}")
        if str(sd["selector"][()]) != self.name:
            raise ValueError(
                f"{me}.load_state_dict: state is from selector {str(sd['selector'][()])!r}, not {self.name!r}"
            )
        wrong = []
        for key, value in self._hparams().items():
            mine = hparam_array(value)
            theirs = sd.get(f"hp.{key}")
            if theirs is None or mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                wrong.append(
                    f"{key}: saved {None if theirs is None else theirs.tolist()!r}, this object {mine.tolist()!r}"
                )
        if len(sd["counts"]) != self.n_arms:
            wrong.append(f"n_arms: saved {len(sd['counts'])}, this object {self.n_arms}")
        if wrong:
            raise ValueError(f"{me}.load_state_dict: hyper-parameters differ: " + "; ".join(wrong))
        self.counts_ = np.array(sd["counts"], dtype=np.int64)
        self._masked = np.array(sd["masked"], dtype=bool)
        self._removed = np.array(sd["removed"], dtype=bool)
        self.rng_ = rng_from_state_array(sd["rng"])
        self._load_extra_state(sd)

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self._hparams().items())
        return f"{type(self).__name__}(n_arms={self.n_arms}{', ' if hp else ''}{hp})"


class RewardSumSelector(Selector):
    """A non-contextual selector whose learned state is each arm's reward sum ``sums_`` (S_k).

    Update of arm k with reward r: ``S_k <- S_k + r`` (``counts_`` holds n_k).
    """

    def __init__(self, n_arms: int, seed: int = 0) -> None:
        super().__init__(n_arms, seed)
        self.sums_ = np.zeros(self.n_arms)

    def _update(self, arm: int, context: np.ndarray, reward: float) -> None:
        self.sums_[arm] += reward

    def _add_arm(self) -> None:
        self.sums_ = np.append(self.sums_, 0.0)

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums_.copy()}

    def _load_extra_state(self, sd: dict[str, np.ndarray]) -> None:
        self.sums_ = np.array(sd["sums"], dtype=np.float64)
