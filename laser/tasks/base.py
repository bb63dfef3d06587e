"""The one record type every task loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Example:
    """One prompt with its gold answer.

    Attributes:
        id: unique within its dataset.
        prompt: the text the policy sees.
        answer: the gold answer in the task's normalised form ('72', 'yes', 'B'), or the
            dataset's raw answer field; ``""`` when the prompt has no gold answer.
        task: the answer format / scorer to use: 'gsm8k' (number), 'strategyqa' (yes/no),
            'mmlu' (letter), or a free-text task name.
        domain: a finer label used in per-domain tables and selection plots (defaults to task).
    """

    id: str
    prompt: str
    answer: str = ""
    task: str = ""
    domain: str = ""

    @cached_property
    def options(self) -> tuple[str, ...] | None:
        """A multiple-choice prompt's option texts in order A-D (None for other prompts): a reply
        that names an option's text is judged by it (``laser.tasks.extract.is_correct``)."""
        from laser.tasks.choice import parse_options

        found = parse_options(self.prompt)
        return tuple(found) if found else None

    def correct(self, text: str) -> bool:
        """Is ``text`` a right answer to this prompt? The one correctness every evaluator and every
        answer-based feedback uses: ``laser.tasks.extract.is_correct`` with the option texts."""
        from laser.tasks.extract import is_correct

        return is_correct(self.task, text, self.answer, options=self.options)

    @property
    def group(self) -> str:
        """The label results are broken down by: the domain, else the task."""
        return self.domain or self.task
