"""Answer extraction: from a model's free text to the task's normalised answer.

Three answer formats cover the paper's tasks:

* ``number`` (task ``gsm8k``; aliases ``number``, ``numeric``): a decimal number written
  without ``$``, thousands commas, leading ``+`` or superfluous zeros: ``"$1,000.50"`` -> ``"1000.5"``,
  ``"3.0"`` -> ``"3"``, ``"-0"`` -> ``"0"``.
* ``yesno`` (task ``strategyqa``; alias ``yesno``): ``"yes"`` or ``"no"``.
* ``choice`` (task ``mmlu``; aliases ``choice``, ``mc``): a capital letter ``A``-``D``.

Each extractor tries tiers of evidence in a fixed order and returns the first tier that matches;
within a tier the *last* match in the text wins (models restate and correct themselves, and the
final statement is the one they commit to). The tiers are documented on each ``_extract_*``
function. Extraction never raises on odd text: it returns ``None`` when nothing answer-like is
found, and ``is_correct`` counts ``None`` as wrong.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["TASK_FORMATS", "extract_answer", "is_correct", "normalize_gold", "normalize_number"]

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

CHOICE_LETTERS = "ABCD"

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
    r"(?:(?i:\banswers?\b)\s*(?i:is|was|would\s+be|will\s+be|=|:)|(?<![A-Za-z])A:)"
    + _FILLER
    + _NUMBER
)
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: "<<9*2=18>>"

_YESNO_WORD = r"(?<![\w-])(?P<word>yes|no|true|false)(?![\w-])"
_YESNO_MARKER_RE = re.compile(
    r"\banswers?\b\s*(?:is|was|would\s+be|=|:)[\s:=*\"'(\[]*" + _YESNO_WORD, re.IGNORECASE
)
_YESNO_START_RE = re.compile(r"^[\s*\"'(\[#>-]*(?P<word>yes|no)(?![\w-])", re.IGNORECASE)
_YESNO_ANY_RE = re.compile(r"(?<![\w-])(?P<word>yes|no)(?![\w-])", re.IGNORECASE)

_LETTER = r"(?P<letter>[A-D])(?![\w])"
_CHOICE_MARKER_RE = re.compile(
    r"(?i:\banswers?\b)\s*(?i:is|was|would\s+be|=|:)"
    r"(?:\s*(?i:option|choice))?[\s:=*\"'(\[]*" + _LETTER
)
_CHOICE_BOXED_RE = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*" + _LETTER)
_CHOICE_ALONE_RE = re.compile(r"^[\s*\"'(\[]*" + _LETTER + r"[\s*\"').\]]*$")
_CHOICE_START_RE = re.compile(r"^[\s*\"']*(?:\((?P<p>[A-D])\)|(?P<q>[A-D])[).:])")
_CHOICE_PAREN_RE = re.compile(r"\((?P<letter>[A-D])\)")


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
    match = None
    for match in pattern.finditer(text):
        pass
    return match


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


def _extract_yesno(text: str) -> str | None:
    """Tiers: 1. an answer marker followed by yes/no/true/false ("So the answer is no.",
    "Answer: **Yes**"); 2. the text *starts* with a standalone yes/no ("No, because ...");
    3. the *last* standalone yes/no word. Words must stand alone: "eyes", "nobody", "yesterday"
    and "no-one" never match. Tier 3 is the weakest evidence ("there is no way ..." reads as
    "no"); tiers 1-2 catch well-formatted answers first.
    """
    for pattern in (_YESNO_MARKER_RE, _YESNO_START_RE):
        match = _last(pattern, text) if pattern is _YESNO_MARKER_RE else pattern.search(text)
        if match is not None:
            return _yesno(match.group("word"))
    match = _last(_YESNO_ANY_RE, text)
    return _yesno(match.group("word")) if match else None


def _extract_choice(text: str) -> str | None:
    """Tiers: 1. an answer marker followed by a letter ("The answer is (B)", "Answer: B",
    "the correct answer is option C") or ``\\boxed{B}``, last match; 2. the whole text is one
    letter ("B", "(B).", "**B**"); 3. the text starts with an option label ("B) Paris",
    "C. 42", "(D) none"); 4. the last parenthesised letter "(B)" anywhere. A bare capital
    inside prose ("A dog ...") is never read as a choice. Letters are A-D, upper case only.
    """
    for pattern in (_CHOICE_MARKER_RE, _CHOICE_BOXED_RE):
        match = _last(pattern, text)
        if match is not None:
            return match.group("letter")
    match = _CHOICE_ALONE_RE.match(text)
    if match is not None:
        return match.group("letter")
    match = _CHOICE_START_RE.match(text)
    if match is not None:
        return match.group("p") or match.group("q")
    match = _last(_CHOICE_PAREN_RE, text)
    return match.group("letter") if match else None


_EXTRACTORS = {"number": _extract_number, "yesno": _extract_yesno, "choice": _extract_choice}


def extract_answer(task: str, text: str) -> str | None:
    """Extract the normalised answer from a model response.

    Args:
        task: ``"gsm8k"`` / ``"number"`` / ``"numeric"``, ``"strategyqa"`` / ``"yesno"``, or
            ``"mmlu"`` / ``"choice"`` / ``"mc"`` (case-insensitive).
        text: the response.

    Returns:
        ``"72"``-style numbers, ``"yes"``/``"no"``, or a letter ``"A"``-``"D"``; ``None`` when the
        text holds no answer of that form.

    Raises:
        ValueError: unknown task (the message lists the valid ones).
    """
    fmt = _canonical_format(task)
    if text is None:
        return None
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


def is_correct(task: str, text: str, gold: object) -> bool:
    """Whether the answer extracted from ``text`` equals the gold answer.

    Args:
        task: see ``extract_answer``.
        text: the model response.
        gold: the bare answer or the dataset's raw answer field (see ``normalize_gold``).

    Returns:
        True when the extracted answer equals the normalised gold answer (numbers compare by
        value, so "2.5" equals "2.50"); False when nothing could be extracted.

    Raises:
        ValueError: unknown task, or an unparseable gold answer (a data error, never a miss).
    """
    expected = normalize_gold(task, gold)
    got = extract_answer(task, text)
    if got is None:
        return False
    if _canonical_format(task) == "number":
        try:
            return Decimal(got) == Decimal(expected)
        except InvalidOperation:  # pragma: no cover - both sides come from normalize_number
            return False
    return got == expected
