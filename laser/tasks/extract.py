"""Answer extraction: from a model's free text to the task's normalised answer.

Three answer formats cover the paper's tasks:

* ``number`` (task ``gsm8k``; aliases ``number``, ``numeric``): a decimal number written
  without ``$``, thousands commas, leading ``+`` or superfluous zeros: ``"$1,000.50"`` -> ``"1000.5"``,
  ``"3.0"`` -> ``"3"``, ``"-0"`` -> ``"0"``.
* ``yesno`` (task ``strategyqa``; alias ``yesno``): ``"yes"`` or ``"no"``.
* ``choice`` (task ``mmlu``; aliases ``choice``, ``mc``): a capital letter ``A``-``D``, read from
  the free forms instruction-tuned models write ("Answer: (b)", "B is the answer", "so C",
  "..., which is option D", and, given the option texts, "Paris"); see ``laser.tasks.choice``.

Each extractor tries tiers of evidence in a fixed order and returns the first tier that matches;
within a tier the *last* match in the text wins (models restate and correct themselves, and the
final statement is the one they commit to). The tiers are documented on ``_extract_number``,
``_extract_yesno`` and in ``laser.tasks.choice``. Extraction never raises on odd text: it returns
``None`` when nothing answer-like is found, and ``is_correct`` counts ``None`` as wrong.

``tests/data/smollm2_answer_outputs.jsonl`` holds 200 real replies of SmolLM2-135M-Instruct with
hand labels; ``tests/tasks/test_extract.py::test_real_replies`` lists the ones still misread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from laser.tasks.choice import LETTERS as CHOICE_LETTERS
from laser.tasks.choice import extract_choice, parse_options

__all__ = [
    "TASK_FORMATS",
    "extract_answer",
    "is_correct",
    "normalize_gold",
    "normalize_number",
    "parse_options",
]

#: task name or alias -> answer format.
TASK_FORMATS: dict[str, str] = {
    "gsm8k": "number",
    "number": "number",
    "numeric": "number",
    "strategyqa": "yesno",
    "yesno": "yesno",
    "mmlu": "choice",
    "choice": "choice",
    "mc": "choice",
}

# A number: optional minus (not a hyphen glued to a word or digit, so "16-3" is 16 and 3), optional
# "$", then either comma-grouped thousands or plain digits, then an optional decimal part.
_NUMBER = (
    r"(?P<sign>(?<![\w.)\]-])-)?(?:\$\s?)?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?|\.\d+)"
)
_NUMBER_RE = re.compile(_NUMBER)
# Characters allowed between an answer marker and the number: spaces, ':', '=', markdown bold,
# opening brackets, and a LaTeX "\(" or "$".
_FILLER = r"[\s:=*_(\[{$\\]*"
_HASH_RE = re.compile(r"####" + _FILLER + _NUMBER)
_BOXED_RE = re.compile(r"\\boxed\{" + _FILLER + _NUMBER)
_NUMBER_MARKER_RE = re.compile(
    r"(?:(?i:\banswers?\b)\s*(?i:is|was|would\s+be|will\s+be|=|:)|(?<![A-Za-z])A:)" + _FILLER + _NUMBER
)
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: "<<9*2=18>>"

_YESNO_WORD = r"(?<![\w-])(?P<word>yes|no|true|false)(?![\w-])"
# Words that may follow a verdict "no" ("No it isn't", "no, because"). Before any other lower-case
# word "no" is a determiner ("there is no record", "no prime numbers"), not a verdict.
_CLAUSE_WORDS = (
    r"(?:it|that|this|they|he|she|i|we|you|there|not|is|was|because|since|as|but|and|so"
    r"|the\s+answer)\b"
)
_NOT_DETERMINER = r"(?![ \t]+(?!" + _CLAUSE_WORDS + r")(?-i:[a-z]))"
# What must follow yes/no/true/false after a conclusion word or at the start: punctuation, a line
# end, or a clause word ("Therefore, no.", "False, because" but not "so no plane is needed").
_VERDICT_END = r"(?=[*_\"')\]]*(?:[ \t]*(?:[.,!;:?\n]|$)|\s+(?i:" + _CLAUSE_WORDS + ")))"
_YESNO_MARKER_RE = re.compile(
    r"\b(?:answers?|verdict)\b(?:\s+to\s+(?:this|the|your|that)\s+question)?[\s*_]*"
    r"(?:is|was|would\s+be|=|:)[\s:=*_\"'(\[]*" + _YESNO_WORD,
    re.IGNORECASE,
)
_YESNO_CONCLUSION_RE = re.compile(
    r"\b(?:so|thus|therefore|hence|in\s+conclusion|in\s+summary|in\s+short|overall|to\s+conclude)"
    r"\b[,:]?\s*(?:(?:the\s+answer\s+is|my\s+answer\s+is|i\s+(?:would\s+)?say)[\s:]*)?[*_\"']*"
    r"(?<![\w-])(?P<word>yes|no)(?![\w-])" + _VERDICT_END,
    re.IGNORECASE,
)
_YESNO_START_RE = re.compile(
    r"^[\s*\"'(\[#>-]*(?:(?P<word>yes|no)(?![\w-])|(?P<tf>true|false)" + _VERDICT_END + ")",
    re.IGNORECASE,
)
_YESNO_ANY_RE = re.compile(r"(?<![\w-])(?:(?P<word>yes)|(?P<no>no)" + _NOT_DETERMINER + r")(?![\w-])", re.IGNORECASE)
_YESNO_PAIR_RE = re.compile(r"\b(?:yes\s*(?:or|/)\s*no|no\s*(?:or|/)\s*yes)\b", re.IGNORECASE)


def _canonical_format(task: str) -> str:
    fmt = TASK_FORMATS.get(str(task).strip().lower())
    if fmt is None:
        valid = ", ".join(sorted(TASK_FORMATS))
        raise ValueError(f"unknown task {task!r} for answer extraction; valid tasks: {valid}")
    return fmt


def normalize_number(text: str) -> str | None:
    """Normalise one written number: drop ``$``, commas and ``+``; trim zeros.

    Examples: ``"$1,000"`` -> ``"1000"``, ``"2.50"`` -> ``"2.5"``, ``"3.0"`` -> ``"3"``,
    ``"-0.0"`` -> ``"0"``, ``".5"`` -> ``"0.5"``, ``"007"`` -> ``"7"``.

    Returns:
        The normalised number, or ``None`` when ``text`` is not a single number.
    """
    s = str(text).strip().replace("\u2212", "-").replace("$", "").replace(",", "").strip()
    if s.startswith("+"):
        s = s[1:]
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", s):
        return None
    negative = s.startswith("-")
    s = s.lstrip("-")
    whole, _, frac = s.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    return "-" + out if negative and out != "0" else out


def _number_from_match(m: re.Match) -> str | None:
    return normalize_number((m.group("sign") or "") + m.group("num"))


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def _extract_number(text: str) -> str | None:
    """Tiers: 1. ``#### N`` (the GSM8K gold format); 2. ``\\boxed{N}``; 3. an answer marker
    directly followed by a number: "The answer is N", "Final answer: N", "answer = N", "A: N";
    4. the last number anywhere in the text. GSM8K calculator annotations ``<<...>>`` are removed
    first. A marker that is not directly followed by a number (after spaces, ``:``, ``=``, ``*``,
    brackets or ``$``) does not count, so "the answer is 5 + 3 = 8" yields 5 but "the answer is
    that 8" falls through to the last number, 8.
    """
    text = _CALCULATOR_RE.sub(" ", text.replace("\u2212", "-"))
    for pattern in (_HASH_RE, _BOXED_RE, _NUMBER_MARKER_RE, _NUMBER_RE):
        match = _last(pattern, text)
        if match is not None:
            return _number_from_match(match)
    return None


def _yesno(word: str) -> str:
    word = word.lower()
    return "yes" if word in ("yes", "true") else "no"


def _last_of(patterns: tuple[re.Pattern, ...], text: str) -> re.Match | None:
    """The match that ends last over several patterns."""
    matches = [m for m in (_last(p, text) for p in patterns) if m is not None]
    return max(matches, key=lambda m: m.end()) if matches else None


def _extract_yesno(text: str) -> str | None:
    """Tiers: 1. a stated verdict, last one: an answer marker followed by yes/no/true/false
    ("So the answer is no.", "Answer: **Yes**", "The answer to this question is no"), or a
    conclusion word followed by a standalone yes/no ("Therefore, yes.", "So no, it cannot");
    2. the text *starts* with a standalone yes/no ("No, because ...", "**Yes**") or with
    True/False as a verdict ("False.", "True, it is"); 3. the *last* standalone "yes", or "no"
    used as a verdict. Words must stand alone: "eyes", "nobody", "yesterday" and "no-one" never
    match, and "no" followed by another word is a determiner ("there is no record"), not a
    verdict, outside tiers 1 (after a marker) and 2. "yes or no" / "yes/no" (an echo of the
    instruction) is ignored in tier 3.
    """
    match = _last_of((_YESNO_MARKER_RE, _YESNO_CONCLUSION_RE), text)
    if match is not None:
        return _yesno(match.group("word"))
    match = _YESNO_START_RE.search(text)
    if match is not None:
        return _yesno(match.group("word") or match.group("tf"))
    match = _last(_YESNO_ANY_RE, _YESNO_PAIR_RE.sub(" ", text))
    return _yesno(match.group("word") or match.group("no")) if match else None


_EXTRACTORS = {"number": _extract_number, "yesno": _extract_yesno}


def extract_answer(task: str, text: str, options: Sequence[str] | None = None) -> str | None:
    """Extract the normalised answer from a model response.

    Args:
        task: ``"gsm8k"`` / ``"number"`` / ``"numeric"``, ``"strategyqa"`` / ``"yesno"``, or
            ``"mmlu"`` / ``"choice"`` / ``"mc"`` (case-insensitive).
        text: the response.
        options: letter tasks only: the four option texts (A-D), e.g. from
            ``parse_options(prompt)``. With them a reply that gives only an option's text
            ("Paris") is read as that option's letter; without them such a reply reads as
            ``None``. Ignored by the other formats.

    Returns:
        ``"72"``-style numbers, ``"yes"``/``"no"``, or a letter ``"A"``-``"D"``; ``None`` when the
        text holds no answer of that form.

    Raises:
        ValueError: unknown task (the message lists the valid ones), or ``options`` that are
            not four texts.
    """
    fmt = _canonical_format(task)
    if text is None:
        return None
    if fmt == "choice":
        return extract_choice(str(text), options)
    return _EXTRACTORS[fmt](str(text))


def normalize_gold(task: str, gold: object) -> str:
    """Normalise a gold answer given bare or in the dataset's raw form.

    Accepted forms: GSM8K: a number (str/int/float) or a worked solution ending in ``#### N``;
    StrategyQA: ``True``/``False``, ``"true"``/``"false"``, ``"yes"``/``"no"``; MMLU: a letter
    ``A``-``D`` (either case) or a 0-based index (int or digit string, as in the Hub's ``answer``).

    Raises:
        ValueError: unknown task, or a gold answer that is not of the task's form.
    """
    fmt = _canonical_format(task)
    out: str | None = None
    if fmt == "number":
        if isinstance(gold, bool):
            out = None
        elif isinstance(gold, (int, float)):
            out = normalize_number(format(Decimal(str(gold)), "f"))
        elif isinstance(gold, str):
            tail = gold.rsplit("####", 1)[1] if "####" in gold else gold
            out = normalize_number(tail)
    elif fmt == "yesno":
        if isinstance(gold, bool):
            out = "yes" if gold else "no"
        elif isinstance(gold, str) and gold.strip().lower() in ("yes", "no", "true", "false"):
            out = _yesno(gold.strip())
    else:
        if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(CHOICE_LETTERS):
            out = CHOICE_LETTERS[gold]
        elif isinstance(gold, str):
            g = gold.strip().upper()
            if len(g) == 1 and g in CHOICE_LETTERS:
                out = g
            elif g.isdigit() and int(g) < len(CHOICE_LETTERS):
                out = CHOICE_LETTERS[int(g)]
    if out is None:
        raise ValueError(f"gold answer {gold!r} is not a valid {fmt} answer for task {task!r}")
    return out


def is_correct(task: str, text: str, gold: object, options: Sequence[str] | None = None) -> bool:
    """Whether the answer extracted from ``text`` equals the gold answer.

    Args:
        task: see ``extract_answer``.
        text: the model response.
        gold: the bare answer or the dataset's raw answer field (see ``normalize_gold``).
        options: letter tasks only: the option texts, see ``extract_answer``.

    Returns:
        True when the extracted answer equals the normalised gold answer (numbers compare by
        value, so "2.5" equals "2.50"); False when nothing could be extracted.

    Raises:
        ValueError: unknown task, or an unparseable gold answer (a data error, never a miss).
    """
    expected = normalize_gold(task, gold)
    got = extract_answer(task, text, options)
    if got is None:
        return False
    if _canonical_format(task) == "number":
        try:
            return Decimal(got) == Decimal(expected)
        except InvalidOperation:  # pragma: no cover - both sides come from normalize_number
            return False
    return got == expected
