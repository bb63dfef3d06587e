"""The routing core: which reward model scores which prompt, and what the choice taught.

One framework-free package (numpy, ``laser.bandits``, ``laser.rewards.base``, ``laser.tasks``;
never torch, transformers, accelerate, TRL or Ray) that every engine drives: the training loop,
the TRL router, ``laser bon``, the routed ``laser serve-rm`` and the verl reward manager.

Contract (what an engine does, in this order, per unit of work: a training step, a TRL round, a
server request, a verl row batch)::

    from laser.routing import Batch, Router

    router = Router.from_rms(rms, "linucb", dim=d, per_prompt=True, feedback="pair_accuracy")
    # or Router(strategy, RewardPool(rms), feedback, normalizer=..., collectives=..., pairing=..., num_pairs=...)

    batch = Batch(prompts, tasks=..., answers=..., options=..., groups=..., contexts=C)  # C: (B, d) or None
    batch.add_responses(texts, prompt_index)   # response j answers local prompt prompt_index[j]
    router.route(batch)        # batch.arms / my_arms, batch.scores: each response scored by ITS
                               # prompt's arm only; a failing RM is masked and the batch re-decided
    router.pairs(batch)        # batch.pairs per prompt (ties and NaN scores dropped)
    out = router.outcome(batch, update_terms_or_None)   # typed Outcome (loss terms, correctness)
    raw, rewards = router.learn(batch, out)             # feedback -> rules -> normaliser -> strategy

    router.serve(batch)        # the same for a request: route + pairs + outcome + learn, with a lock
    router.state_dict() / router.load_state_dict(sd)    # strategy, normaliser, pool, counters
    save_state(folder, step, router.state_dict()) / load_state(folder)  # atomic, manifest + sha256

* ``Batch`` (:mod:`laser.routing.batch`): this process's prompts with their task, gold answer
  (``""``: none), option texts and group tag (``Batch.of(examples)`` reads them from
  :class:`laser.tasks.base.Example`); ``contexts`` over the whole batch (every process's prompts in
  rank order, or set ``batch.index`` to place local prompts); responses with their prompt index.
  Evaluation: ``router.route(batch, trace=False)`` decides without leaving a trace, and is not
  followed by ``learn``.
* ``Strategy`` (:mod:`laser.routing.strategies`): ``decide(batch, coll)``, ``score(batch, pool)``,
  ``units(batch, outcome, coll, reference)``, ``learn(units, rewards)``; ``STRATEGIES`` and
  ``make_strategy(cfg, names, dim_fn)`` build them from a run config.
* ``RewardPool`` (:mod:`laser.routing.pool`): batched scoring, ``responses_scored`` and
  ``score_calls`` per RM, failure isolation of any exception, availability, ``AllRewardModelsDown``.
* ``FEEDBACKS`` (:mod:`laser.routing.feedback`): name -> ``Feedback(fn, needs, reference)``;
  ``resolve_feedback(name, examples)``; ``majority_answer``, ``pair_correctness``.
* ``Outcome`` / ``Signal`` (:mod:`laser.routing.outcome`): what a finished unit yields / what a
  feedback function reads.
* ``Collectives`` (:mod:`laser.routing.collectives`): ``rank``, ``world``, ``is_main``,
  ``all_gather(obj)``, ``broadcast(obj)``, ``sum(values)``; ``Local`` for one process.
  Engines bring theirs: ``laser.training.dist.Dist`` (Accelerate),
  ``laser.integrations.dist.TorchCollectives`` (torch.distributed). Every process calls the
  router's methods in the same order; each keeps an identical copy of the learned state.

Rules (one per behaviour, for every engine; see docs/architecture.md "One routing core"):
no pair -> lowest reward if the responses differed, skipped if they were all identical; any RM
exception -> masked and re-decided, all down -> ``AllRewardModelsDown``; NaN score = unscorable;
non-finite feedback -> ``NonFiniteReward`` (or skipped via ``router.on_nonfinite``).
"""

from __future__ import annotations

from laser.routing.batch import Batch
from laser.routing.checkpoint import load_state, save_state
from laser.routing.collectives import Collectives, Local
from laser.routing.feedback import FEEDBACKS, REFERENCES, Feedback, resolve_feedback
from laser.routing.outcome import Correctness, Outcome, Signal
from laser.routing.pool import AllRewardModelsDown, RewardPool
from laser.routing.router import LOWEST, NonFiniteReward, Router
from laser.routing.strategies import STRATEGIES, Strategy, Unit, make_strategy

__all__ = [
    "Batch",
    "Router",
    "RewardPool",
    "AllRewardModelsDown",
    "NonFiniteReward",
    "LOWEST",
    "Collectives",
    "Local",
    "FEEDBACKS",
    "REFERENCES",
    "Feedback",
    "resolve_feedback",
    "Outcome",
    "Signal",
    "Correctness",
    "STRATEGIES",
    "Strategy",
    "Unit",
    "make_strategy",
    "save_state",
    "load_state",
]
