"""The router: strategy + reward pool + feedback + normaliser + collectives, one per run or service.

Every engine (the training loop, the TRL router, ``laser bon``, a routed reward server, verl)
drives the same four calls on a :class:`~laser.routing.batch.Batch`:

    router.route(batch)                 # decide the arms, score each response with its arm's RM
    router.pairs(batch)                 # preference pairs per prompt from the scores
    out = router.outcome(batch, update) # typed Outcome: loss terms (if any) + pair correctness
    router.learn(batch, out)            # feedback -> no-pair / non-finite rules -> normaliser -> strategy

The rules each behaviour follows (documented once, in docs/architecture.md "One routing core"):

* failure: an RM that raises anything is masked and the batch is decided again without it
  (:mod:`laser.routing.pool`); every RM down raises ``AllRewardModelsDown`` naming all of them;
* no pair: a learning unit without a preference pair is learned as the lowest normalised reward
  (0) when one of its prompts had two different responses (the RM tied or could not score
  responses that differ: it gave no usable preference, which is what the arm is judged on); it is
  skipped (no update) when every prompt's responses were identical (no RM could have ordered
  them: nothing about the arm was observed);
* non-finite: a non-finite feedback value stops the run naming the unit's arm (``on_nonfinite``
  may instead skip it); a unit of a step whose update was not applied (non-finite loss) is
  skipped; a NaN score is "unscorable", never 0;
* counters: ``responses_scored`` and ``score_calls`` per RM, summed over processes.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

from laser.bandits import NoArmAvailable, QuantileNormalizer
from laser.rewards.base import RewardModelError
from laser.routing.collectives import Collectives, Local, offset
from laser.routing.feedback import FEEDBACKS
from laser.routing.outcome import Outcome, correctness
from laser.routing.pairs import build_pairs
from laser.routing.pool import AllRewardModelsDown, RewardPool, check_reward_models

log = logging.getLogger("laser")

#: the reward a unit without a preference pair gets when its RM could have ordered something
LOWEST = 0.0


class NonFiniteReward(FloatingPointError):
    """A feedback value was NaN or infinite; the message names the arm and the value."""


class Router:
    """Route prompts to reward models and learn which RM to trust.

    Args:
        strategy: a :class:`~laser.routing.strategies.Strategy`.
        pool: the :class:`~laser.routing.pool.RewardPool` (or a list of RMs).
        feedback: a :data:`~laser.routing.feedback.FEEDBACKS` name; None for an engine that brings
            its own raw rewards to :meth:`apply` (best-of-n), or for a label-free strategy
            (``strategy.label_free``: it learns in ``units()`` from the RMs' agreement alone).
        normalizer: raw feedback -> [0, 1] (default: the paper's 20/80 quantile rule).
        collectives: several processes' :class:`~laser.routing.collectives.Collectives` (default: one).
        pairing, num_pairs: the pair rule (:data:`~laser.routing.pairs.PAIRING_RULES`) and P.
        log_references: other correctness references to compute for logs (``"gold"``, ...).

    Attributes:
        skipped_: units not learned (identical responses, or a skipped non-finite step).
        tied_: units learned as :data:`LOWEST` (no pair, responses differed).
        batches_: batches learned from; ``lock``: for services that call from several threads.
    """

    def __init__(
        self,
        strategy,
        pool,
        feedback: str | None = "pair_accuracy",
        *,
        normalizer=None,
        collectives: Collectives | None = None,
        pairing: str = "top_vs_rest",
        num_pairs: int = 1,
        log_references: tuple[str, ...] = (),
    ):
        if feedback is not None and feedback not in FEEDBACKS:
            raise ValueError(f"unknown feedback {feedback!r}; valid: {', '.join(FEEDBACKS)}")
        self.strategy = strategy
        self.pool = pool if isinstance(pool, RewardPool) else RewardPool(list(pool))
        self.feedback, self.fb = feedback, FEEDBACKS.get(feedback)
        self.normalizer = normalizer if normalizer is not None else QuantileNormalizer()
        self.coll = collectives or Local()
        self.pairing, self.num_pairs = pairing, int(num_pairs)
        self.references = tuple(dict.fromkeys([r for r in (getattr(self.fb, "reference", None), *log_references) if r]))
        self.on_nonfinite = None  # (arm name, value) -> None to skip the unit; default: raise
        self.skipped_ = self.tied_ = self.batches_ = 0
        self.lock = threading.RLock()
        if feedback is not None:
            strategy.check(feedback, self.coll.world)

    @classmethod
    def from_rms(
        cls,
        rms: list,
        selector: str = "linucb",
        *,
        dim: int = 1,
        per_prompt: bool = False,
        selector_options: dict | None = None,
        seed: int = 0,
        **kwargs,
    ) -> Router:
        """A bandit router over ``rms`` (arm k = ``rms[k]``) with a selector built by name.

        Args:
            dim: the context dimension (ignored by context-free selectors, which get 1).
            per_prompt: one arm per prompt (else one per batch, from the mean context).
            kwargs: :class:`Router`'s keyword arguments (feedback, normalizer, ...).
        """
        from laser.bandits import make_selector
        from laser.routing.strategies import (
            CONTEXT_FREE,
            BanditPerBatch,
            BanditPerPrompt,
        )

        needs_context = selector not in CONTEXT_FREE
        sel = make_selector(selector, len(rms), dim if needs_context else 1, seed=seed, **dict(selector_options or {}))
        strategy = (BanditPerPrompt if per_prompt else BanditPerBatch)(sel, selector, needs_context)
        return cls(strategy, RewardPool(check_reward_models(rms, "Router")), **kwargs)

    @property
    def names(self) -> list[str]:
        return self.pool.names

    @property
    def selector(self):
        return self.strategy.selector

    # ------------------------------------------------------------------ decide and score
    def begin(self, batch) -> None:
        """Place the batch (its rows in the whole batch) and apply RM availability (events)."""
        if batch.index is None:
            start = offset(self.coll, len(batch.prompts))
            batch.index = list(range(start, start + len(batch.prompts)))
        reports = self.coll.all_gather(self.pool.reported_up())
        up = {k: all(r.get(k, True) for r in reports) for r in reports for k in r}
        events = self.pool.refresh(up, self.selector, step=batch.step)
        for event in events:
            log.info(event)
        batch.events += events

    def decide(self, batch, trace: bool = True) -> list[int]:
        """Arms of the whole batch (main process's, checked equal on every process).

        Args:
            trace: False for an evaluation: the decision leaves the learned state as it was.
        """
        saved = None if trace or self.strategy.state_dict() is None else self.strategy.state_dict()
        try:
            arms = [int(a) for a in self.strategy.decide(batch, self.coll)]
        except NoArmAvailable:
            self.pool.raise_if_all_down()
            raise AllRewardModelsDown(
                f"no reward model can score at step {batch.step}: "
                f"{sorted(self.pool.waiting(batch.step))} not joined yet, "
                f"{sorted(self.pool.down)} down"
            ) from None
        finally:
            if saved is not None:
                self.strategy.load_state_dict(saved)
        first = self.coll.broadcast(arms)
        if first != arms:
            raise RuntimeError(
                f"Router: process {self.coll.rank} chose arms {arms} but process 0 chose {first} "
                f"at step {batch.step}; the routers' states differ"
            )
        batch.arms, batch.my_arms = arms, [arms[i] for i in batch.index]
        return arms

    def route(self, batch, trace: bool = True) -> np.ndarray:
        """Decide and score ``batch``'s responses; an RM that fails is masked and the batch is
        decided again. Returns the scores ``(N,)`` (also in ``batch.scores``)."""
        self.begin(batch)
        before = self.pool.responses_scored.copy(), self.pool.score_calls.copy()
        while True:
            self.decide(batch, trace)
            try:
                batch.scores, batch.votes = self.strategy.score(batch, self.pool)
                failure = None
            except RewardModelError as exc:
                failure = (exc.arm, f"{exc.__class__.__name__}: {exc}")
            failures = dict(f for f in self.coll.all_gather(failure) if f is not None)
            if not failures:
                break
            for k, error in sorted(failures.items()):
                batch.events.append(self.pool.mark_down(k, error, self.selector))
                log.warning(batch.events[-1])
        self._sum_counters(*before)
        return batch.scores

    def _sum_counters(self, responses: np.ndarray, calls: np.ndarray) -> None:
        """Every process holds the counters summed over processes."""
        k = len(responses)
        delta = np.concatenate([self.pool.responses_scored - responses, self.pool.score_calls - calls])
        total = np.asarray(self.coll.sum(delta.astype(float).tolist()), dtype=np.float64).round().astype(np.int64)
        self.pool.responses_scored, self.pool.score_calls = responses + total[:k], calls + total[k:]

    # ------------------------------------------------------------------ pairs and outcome
    def pairs(self, batch) -> list[list[tuple[int, int]]]:
        """Preference pairs of each local prompt from its responses' scores (ties, NaN dropped)."""
        batch.pairs, batch.skipped_prompts = [], 0
        for i in range(len(batch.prompts)):
            idx = batch.responses_of(i)
            s = batch.scores[idx]
            if not np.isfinite(s).any():
                batch.skipped_prompts += 1
            votes = None if batch.votes is None else batch.votes[:, idx]
            found = build_pairs(s, self.num_pairs, self.pairing, votes=votes)
            batch.pairs.append([(int(idx[c]), int(idx[r])) for c, r in found])
        return batch.pairs

    def outcome(self, batch, update: dict | None = None, coll: Collectives | None = None) -> Outcome:
        """The batch's :class:`~laser.routing.outcome.Outcome`.

        Args:
            update: the policy update's terms (``loss``, ``n_pairs``, ``pair_losses``,
                ``prompt_loss``, optional ``loss_after``/``prompt_loss_after``, ``nonfinite``,
                and log-only ``dpo``/``nll``/``grad_norm``), or None when nothing was trained.
            coll: ``Local()`` for a batch every process holds whole (a gathered TRL round).
        """
        coll = coll or self.coll
        if update is None:
            out = Outcome(n_pairs=int(coll.sum([float(sum(map(len, batch.pairs)))])[0]))
        else:
            nan = float("nan")
            out = Outcome(
                n_pairs=int(update["n_pairs"]),
                loss=update["loss"],
                loss_after=update.get("loss_after", nan),
                pair_loss=update["pair_losses"],
                prompt_loss=update["prompt_loss"],
                prompt_loss_after=update.get("prompt_loss_after"),
                nonfinite=update.get("nonfinite") or "",
                terms={k: update.get(k) for k in ("dpo", "nll", "grad_norm")},
            )
        for ref in self.references:
            out.correct[ref] = correctness(batch, ref, coll)
        return out

    # ------------------------------------------------------------------ learning
    def learn(self, batch, outcome: Outcome, coll: Collectives | None = None) -> tuple[list, list]:
        """Feedback -> rules -> normaliser -> strategy update, identically on every process
        (``coll=Local()`` for a batch every process holds whole).

        Returns:
            ``(raw, rewards)`` per unit: raw feedback (None: no pair / skipped) and the reward applied
            (None: not learned).
        """
        if self.fb is None and not getattr(self.strategy, "label_free", False):
            raise RuntimeError("Router.learn: this router has no feedback; use apply(units, raw)")
        coll = coll or self.coll
        units = self.strategy.units(batch, outcome, coll, self.fb.reference if self.fb is not None else None)
        self.batches_ += 1
        if not units:
            return [], []
        distinct = self._whole(batch, batch.distinct(), coll)
        raw: list = []
        for u in units:
            if outcome.nonfinite or u.signal is None:
                raw.append(None)
                continue
            value = float(self.fb.fn(u.signal))
            if not math.isfinite(value):
                self._nonfinite(u.arm, value)
                value = None
            raw.append(value)
        rewards = []
        for u, r in zip(units, raw, strict=True):
            if r is not None:
                rewards.append(self.normalizer.normalize(r))
            elif not outcome.nonfinite and u.signal is None and any(distinct[p] for p in u.prompts):
                rewards.append(LOWEST)
                self.tied_ += 1
            else:
                rewards.append(None)
                self.skipped_ += 1
        return raw, self.strategy.learn(units, rewards)

    def apply(self, units: list, raw: list) -> list:
        """Normalise given raw rewards (None: skip) and update the strategy (engines with their own
        signal, e.g. best-of-n's correctness of the picked response)."""
        for u, r in zip(units, raw, strict=True):
            if r is not None and not math.isfinite(r):
                self._nonfinite(u.arm, r)
        rewards = [self.normalizer.normalize(r) if r is not None and math.isfinite(r) else None for r in raw]
        return self.strategy.learn(units, rewards)

    def _nonfinite(self, arm: int, value: float) -> None:
        name = self.names[arm] if 0 <= arm < len(self.names) else str(arm)
        if self.on_nonfinite is None:
            raise NonFiniteReward(f"non-finite bandit reward ({value}), arm {name}")
        self.on_nonfinite(name, value)

    def _whole(self, batch, values: list, coll: Collectives) -> list:
        """Per-local-prompt ``values`` gathered into whole-batch order."""
        table: dict[int, object] = {}
        index = batch.index if batch.index is not None else range(len(values))
        for part in coll.all_gather(list(zip(index, values, strict=True))):
            for i, v in part:
                table.setdefault(i, v)
        return [table[i] for i in sorted(table)]

    # ------------------------------------------------------------------ serving
    def serve(self, batch, learn: bool = True) -> np.ndarray:
        """A request's whole cycle: route, score, and (``learn``) learn from its finished groups
        with no policy update (answer-based feedback). Returns the scores (NaN: unscorable)."""
        with self.lock:
            scores = self.route(batch, trace=learn)
            if learn:
                self.pairs(batch)
                self.learn(batch, self.outcome(batch))
            return scores

    # ------------------------------------------------------------------ state
    def counters(self) -> dict:
        return {
            "responses_scored": self.pool.responses_scored.tolist(),
            "score_calls": self.pool.score_calls.tolist(),
            "skipped": self.skipped_,
            "tied": self.tied_,
            "batches": self.batches_,
        }

    def state_dict(self) -> dict:
        """``strategy`` and ``normalizer`` (flat numpy arrays), ``pool`` and ``counters`` (JSON-able)."""
        return {
            "strategy": self.strategy.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "pool": self.pool.state_dict(),
            "counters": self.counters(),
            "meta": {"strategy": self.strategy.name, "feedback": self.feedback, "rm_names": self.names},
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output (``pool``/``counters`` optional).

        Raises:
            ValueError: the state is of other RMs, another strategy or feedback.
        """
        meta = sd.get("meta") or {}
        mine = {"strategy": self.strategy.name, "feedback": self.feedback, "rm_names": self.names}
        wrong = [f"{k}: saved {meta[k]!r}, this router {v!r}" for k, v in mine.items() if k in meta and meta[k] != v]
        if wrong:
            raise ValueError("Router.load_state_dict: " + "; ".join(wrong))
        if sd.get("strategy") is not None:
            self.strategy.load_state_dict(sd["strategy"])
        self.normalizer.load_state_dict(sd["normalizer"])
        if sd.get("pool") is not None:
            self.pool.load_state_dict(sd["pool"])
        c = sd.get("counters") or {}
        self.skipped_, self.tied_, self.batches_ = c.get("skipped", 0), c.get("tied", 0), c.get("batches", 0)
