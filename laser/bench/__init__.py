"""The embedded benchmark: everything ``laser demo`` and ``laser compare`` run on a CPU without downloads.

* :mod:`laser.bench.tasks`: four domains of prompts with exact answers (the benchmark's versions).
* :mod:`laser.bench.rms`: five demo reward models whose reliability per domain is known.
* :mod:`laser.bench.policy`: a character-level Llama policy trained from scratch by SFT (the start).
* :mod:`laser.bench.runs`: the sizes of a run (:class:`~laser.bench.runs.DemoSettings`), the run
  config of one method and the SFT start, shared by both commands.
* :mod:`laser.bench.demo`: ``laser demo`` (one seed, every method, one table).
* :mod:`laser.bench.compare`: ``laser compare`` (methods x seeds, resumable, paired statistics,
  plots, analyses; also on a user's own run config and test set).

Nothing in the product (``laser.routing``, ``laser.training``, the integrations) imports this
package; the ``demo`` reward-model type of ``laser train`` configs names :func:`laser.bench.rms.demo_rm`.
"""
