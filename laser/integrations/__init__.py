"""Integrations with other training frameworks; each imports its framework lazily.

* :mod:`laser.integrations.trl`: ``RMRouter``, a bandit that routes each TRL GRPO / RLOO
  generation round to one reward model (``pip install 'laser-rm[trl]'``; see docs/trl.md).
"""
