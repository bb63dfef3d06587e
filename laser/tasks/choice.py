"""Letter answers (MMLU-style): from a free-form reply to the option it commits to.

Instruction-tuned models rarely write a bare capital letter. They write "The correct answer is
(b).", "**C**", "B is the answer", "A is wrong, B is wrong, so C", "..., which is option D",
"C. Paris" or only the option's text ("Paris"). ``extract_choice`` reads these in tiers of
evidence, strongest first; the first tier that matches decides, and within a tier the *last*
match in the text wins (a reply that corrects itself commits to its final statement).

1. An explicit statement naming a letter: an answer marker ("the answer is", "Answer:",
   "the correct option would be") followed by the letter; the letter followed by "is the
   (correct) answer" / "is correct"; a conclusion ("so", "therefore", "which is", "leaving",
   "I choose", "go with") followed by the letter; or ``\\boxed{B}``.
2. The whole reply is one letter: "B", "(b)", "**C**", "D.".
3. The reply starts with an option label: "B) Paris", "C. 42", "(d) none" (a bare lower-case
   "c)" is not a label: too easily an accident of a tiny model's output). Skipped when the reply
   begins by listing the options (labels of three or more letters at line starts): an echo of
   the question is not an answer.
4. The last parenthesised capital "(B)" anywhere.
5. Only when the option texts are known (``options``) and the reply does not list the options
   (as in tier 3; a walk-through glosses every option): an option's text in answer position
   ("the answer is Paris", "7 times 8 equals 56.", "Paris is the correct answer"), else the one
   option whose text the reply mentions when it mentions exactly one. Options written as numbers
   count only in answer position: numbers in working are not commitments.

A letter is upper case unless it is delimited as a label: "(b)", or lower case after an answer
marker and before punctuation or the end of a line ("Answer: b."). A capital "A" followed by a
lower-case word is the English article ("Therefore, A person ...") and never reads as an answer
after a conclusion word; a letter inside a word never does. Letters are A-D.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["extract_choice", "parse_options"]

LETTERS = "ABCD"

# A label: "(b)" / "(B)", or a capital not followed by a word character.
_LABEL = r"(?:\((?P<p>[A-Da-d])\)|(?P<u>[A-D])(?![\w']))"
# A letter after an explicit answer marker: a label, or a lower-case letter followed (after
# markdown) by punctuation or the line's end ("Answer: b." but not "the answer is a bit"), and
# never glued to the word before it ("the answer isc").
_LETTER = r"(?:" + _LABEL + r"|(?<![A-Za-z])(?P<l>[a-d])(?=[*_]*[ \t]*(?:[.)\]:,;!?\n]|$)))"
# A letter after a conclusion word: as above for "(b)", but a capital must be followed by
# punctuation, a line end, "is"/"was", or a capitalised word or digit (not "A person").
_STRICT_LETTER = (
    r"(?:\((?P<p>[A-Da-d])\)"
    r"|(?P<u>[A-D])(?=[*_]*(?:[ \t]*(?:[.)\]:,;!?\n]|$)|\s+(?:is|was)\b|\s+[A-Z0-9(\"']"
    r"|\s*[-\u2013\u2014]\s)))"
)
_OPTION_WORD = r"(?i:option|choice|letter)"
_VERB = (
    r"(?i:(?:is|was|would\s+be|will\s+be|should\s+be|must\s+be|has\s+to\s+be)"
    r"(?:\s+(?:actually|clearly|definitely|indeed|likely|probably|obviously|therefore))?\b|=|:)"
)
_MARKER = (
    r"(?i:\b(?:answer|option|choice)s?\b(?:\s+to\s+(?:this|the|your)\s+question)?)[\s*_]*"
    + _VERB
    + r"[\s:=*_\"'\[]*(?:"
    + _OPTION_WORD
    + r"\s*)?"
)
_AFFIRM = (
    r"[*_\"')\]]*\s+(?i:is|was|would\s+be|must\s+be|seems\s+to\s+be)\s+(?i:the\s+)?"
    r"(?i:(?:(?:correct|right|best|true|final|most\s+likely)\s+)?(?:answer|option|choice)\b"
    r"|(?:correct|right|true)\b)"
)
_CONCLUSION = (
    r"(?i:\b(?:so|thus|therefore|hence|leaving|leaves|which\s+(?:is|leaves|gives|makes)"
    r"|that\s+(?:is|leaves|gives)|i\s+(?:would\s+)?(?:choose|chose|pick|select|say)"
    r"|go(?:ing)?\s+with|the\s+(?:only|remaining)\s+(?:one|option|choice)\s+is)\b)"
    r"[,:]?\s*(?i:(?:it|this)\s+(?:is|must\s+be|has\s+to\s+be)\s+)?(?i:the\s+)?"
)
_TIER1 = [
    re.compile(_MARKER + _LETTER),
    re.compile(r"(?:(?<![\w'])" + _OPTION_WORD + r"\s*)?" + r"(?<![\w'])" + _LETTER + _AFFIRM),
    re.compile(
        _CONCLUSION
        + r"(?:"
        + _OPTION_WORD
        + r"\s*"
        + _LETTER.replace("?P<", "?P<o")
        + "|"
        + _STRICT_LETTER.replace("?P<", "?P<s")
        + ")"
    ),
    re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*" + _LETTER),
    re.compile(r"(?:^|\n)[\s*_#>]*A:[\s*_]*" + _STRICT_LETTER),  # "A: B" is "Answer: B"
]
_ALONE_RE = re.compile(r"^[\s*_\"'\[]*" + _LABEL + r"[\s*_\"').\]]*$")
_START_RE = re.compile(
    r"^[\s*\"']*(?:" + _OPTION_WORD + r"\s+)?"
    r"(?:\((?P<p>[A-Da-d])\)|(?P<u>[A-D])(?:\*\*)?[).:])"
)
_LINE_LABEL_RE = re.compile(r"^[\s*_\"'#>-]*\(?(?P<u>[A-D])[).:]", re.MULTILINE)
_PAREN_RE = re.compile(r"\((?P<u>[A-D])\)")
_OPTION_LINE_RE = re.compile(r"^[ \t]*\(?(?P<u>[A-D])[.)][ \t]*(?P<text>\S.*?)[ \t]*$", re.MULTILINE)

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
).split()


def _letter(match: re.Match) -> str:
    value = next(v for k, v in match.groupdict().items() if v and k.lstrip("os") in ("p", "u", "l"))
    return value.upper()


def _last(patterns: Sequence[re.Pattern], text: str) -> re.Match | None:
    """The match that ends last over several patterns (ties: the earlier pattern)."""
    best = None
    for pattern in patterns:
        for match in pattern.finditer(text):
            if best is None or match.end() > best.end():
                best = match
    return best


def parse_options(prompt: str) -> list[str] | None:
    """The four option texts of a prompt that lists them on lines ``A. text`` .. ``D. text``.

    ``A) text`` and ``(A) text`` lines are read too; the last line of each letter wins (a
    few-shot prompt lists earlier questions' options first).

    Returns:
        ``[text_A, text_B, text_C, text_D]``, or ``None`` unless all four are found.
    """
    found = {m.group("u"): m.group("text") for m in _OPTION_LINE_RE.finditer(str(prompt))}
    return [found[L] for L in LETTERS] if set(found) == set(LETTERS) else None


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+$]?\d[\d,]*(?:\.\d+)?%?", text.strip()))


def _option_pattern(text: str, number_alias: bool) -> str:
    """A regex for one option's text: whole words, any spacing; case-insensitive unless the text
    is at most two characters ("Au", "Go"). ``number_alias`` also accepts a small number written
    the other way ("Six" <-> "6")."""
    text = text.strip().rstrip(".")
    body = r"\s+".join(re.escape(w) for w in text.split())
    low = text.lower()
    if number_alias and low in _NUMBER_WORDS:
        body = f"(?:{body}|{_NUMBER_WORDS.index(low)})"
    elif number_alias and low.isdigit() and int(low) < len(_NUMBER_WORDS):
        body = f"(?:{body}|{_NUMBER_WORDS[int(low)]})"
    if len(text) > 2 and text[:1].isalnum():
        body = f"(?i:{body})"
    return r"(?<![\w.,])" + body + r"(?![\w]|[.,]\d)"


def _positional(letter: str, option: str) -> list[re.Pattern]:
    """An option's text in answer position: after an answer marker, before "is the answer",
    or ending the reply's last statement ("... equals 56.", "The capital of France is Paris.");
    a statement inside the working ("B. Ag: the symbol for silver is Ag.") does not count."""
    grp = f"(?P<t{letter}>{_option_pattern(option, number_alias=True)})"
    return [
        re.compile(_MARKER + grp),
        re.compile(grp + r"[\s*_\"')]*" + _AFFIRM),
        re.compile(
            r"(?:(?i:\b(?:is|are|equals|makes|gives)\b)|=)\s*[*_\"']*" + grp + r"[*_\"']*[ \t]*[.!]?[\s*_\"']*$"
        ),
    ]


def _from_option_text(text: str, options: Sequence[str]) -> str | None:
    """Tier 5: an option's text in answer position (last one), else the only option mentioned."""
    given = [(L, o) for L, o in zip(LETTERS, options, strict=False) if o and o.strip()]
    match = _last([p for L, o in given for p in _positional(L, o)], text)
    if match is not None:
        return next(k[1] for k, v in match.groupdict().items() if k.startswith("t") and v)
    taken: list[tuple[int, int]] = []
    mentioned = set()
    for L, option in sorted(given, key=lambda lo: -len(lo[1])):  # longest first
        if _is_number(option):
            continue  # a number in the working is not a commitment
        for m in re.finditer(_option_pattern(option, number_alias=False), text):
            if not any(s <= m.start() < e for s, e in taken):  # "Cell" inside "Cell wall"
                mentioned.add(L)
                taken.append(m.span())
    return mentioned.pop() if len(mentioned) == 1 else None


def extract_choice(text: str, options: Sequence[str] | None = None) -> str | None:
    """The letter ``"A"``-``"D"`` a reply commits to, or ``None``; the tiers are in the module doc.

    Args:
        text: the reply.
        options: the four option texts in order A-D, when known (see ``parse_options``); they
            enable tier 5 only, so a reply that names a letter reads the same with or without them.

    Raises:
        ValueError: ``options`` is given but does not hold four texts.
    """
    if options is not None and (isinstance(options, str) or len(options) != len(LETTERS)):
        raise ValueError(f"options must be {len(LETTERS)} texts (A-D), got {options!r}")
    match = _last(_TIER1, text) or _ALONE_RE.match(text)
    if match is not None:
        return _letter(match)
    listing = len({m.group("u") for m in _LINE_LABEL_RE.finditer(text)}) >= 3
    match = _START_RE.match(text)
    if match is not None and not listing:
        return _letter(match)
    matches = list(_PAREN_RE.finditer(text))
    if matches:
        return matches[-1].group("u")
    if options is None or listing:
        return None
    return _from_option_text(text, [str(o) for o in options])
