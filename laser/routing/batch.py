"""One routing unit's data: a training step's mini-batch, a TRL round, a reward-server request.

A :class:`Batch` holds this process's prompts (with what the feedback may read about them: task,
gold answer, option texts, group tag), the whole batch's contexts and arms, this process's
responses with the index of their prompt, the scores, the preference pairs and the events. The
:class:`~laser.routing.router.Router` fills it phase by phase; engines never subclass it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Batch:
    """Prompts to route, then their responses, scores and pairs.

    Attributes:
        prompts: this process's prompts.
        tasks, answers, options, groups: per prompt: the answer format (None: free text), the gold
            answer (``""``/None: none), a multiple-choice prompt's option texts (None), and a
            group tag (domain, dataset; the oracle and per-group tables read it).
        ids: per prompt, an identifier for logs.
        contexts: ``(B, d)`` over the whole batch (every process's prompts, in rank order);
            None: the strategy uses no context.
        index: per local prompt, its row in the whole batch (default: rank-order offset).
        step: the 1-based step / round / request number (an RM may join at a step).
        arms: arm per prompt of the whole batch (-1: every RM scores); ``my_arms`` this process's.
        texts, prompt_index: the responses and the local prompt each answers.
        scores: ``(N,)`` per response (NaN: unscored or unscorable); ``votes`` the per-RM matrix
            when a strategy pairs by agreement.
        pairs: per local prompt, ``(chosen, rejected)`` response indices (into ``texts``).
        skipped_prompts: local prompts with no scorable response.
        events: RM availability changes and failures; ``extra`` strategy values for the log.
    """

    prompts: list[str]
    tasks: list = field(default_factory=list)
    answers: list = field(default_factory=list)
    options: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    ids: list = field(default_factory=list)
    contexts: np.ndarray | None = None
    index: list[int] | None = None
    step: int = 1
    arms: list[int] = field(default_factory=list)
    my_arms: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    prompt_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scores: np.ndarray | None = None
    votes: np.ndarray | None = None
    pairs: list[list[tuple[int, int]]] = field(default_factory=list)
    skipped_prompts: int = 0
    events: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.prompts)
        for name in ("tasks", "answers", "options", "groups", "ids"):
            values = getattr(self, name)
            if not values:
                setattr(self, name, [None] * n)
            elif len(values) != n:
                raise ValueError(f"Batch: {len(values)} {name} for {n} prompts")

    @classmethod
    def of(cls, examples: list, contexts: np.ndarray | None = None, step: int = 1) -> Batch:
        """A batch of :class:`laser.tasks.base.Example` (their options parsed once, on the example)."""
        return cls(
            [ex.prompt for ex in examples],
            tasks=[ex.task or None for ex in examples],
            answers=[ex.answer for ex in examples],
            options=[ex.options for ex in examples],
            groups=[ex.group for ex in examples],
            ids=[ex.id for ex in examples],
            contexts=contexts,
            step=step,
        )

    def add_responses(self, texts: list[str], prompt_index) -> None:
        """The responses to score: ``texts[j]`` answers local prompt ``prompt_index[j]``."""
        idx = np.asarray(prompt_index, dtype=np.int64)
        if len(idx) != len(texts) or (len(idx) and (idx.min() < 0 or idx.max() >= len(self.prompts))):
            raise ValueError(
                f"Batch.add_responses: {len(texts)} texts, prompt_index {idx.tolist()[:8]}... "
                f"must index {len(self.prompts)} prompts"
            )
        self.texts, self.prompt_index = list(texts), idx

    def responses_of(self, i: int) -> np.ndarray:
        """Indices of local prompt ``i``'s responses."""
        return np.flatnonzero(self.prompt_index == i)

    def response_prompts(self) -> list[str]:
        """The prompt of every response."""
        return [self.prompts[i] for i in self.prompt_index]

    def response_arms(self) -> np.ndarray:
        """The arm that scores each response."""
        return np.array([self.my_arms[i] for i in self.prompt_index], dtype=np.int64)

    def distinct(self) -> list[bool]:
        """Per local prompt: does it have at least two different responses?"""
        return [len({self.texts[j] for j in self.responses_of(i)}) > 1 for i in range(len(self.prompts))]

    def flat_pairs(self) -> list[tuple[int, int, int]]:
        """(prompt, chosen, rejected) over the local prompts, in the order the update trains them."""
        return [(i, c, r) for i, ps in enumerate(self.pairs) for c, r in ps]
