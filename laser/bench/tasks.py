"""The embedded synthetic benchmark: four short procedural domains with exact answers.

Each domain mirrors one of the paper's reasoning formats and is scored with the same answer
extraction as the real dataset it imitates (``laser.tasks.extract``):

=========  ==============  ====================================  ==========================================
domain     task (format)   prompt (``SEP`` not shown)            worked response (the SFT target)
=========  ==============  ====================================  ==========================================
arith      gsm8k (number)  ``12+6*3=?`` or ``6*3+12=?``          ``6*3=18. 12+18=30. The answer is 30``
compare    strategyqa      ``Is 38+29>65?``                      ``38+29=67. 67>65. The answer is yes``
choice     mmlu (letter)   ``Max? A.46 B.35 C.17 D.55``          ``55 is max. The answer is D``
count      gsm8k (number)  ``How many a in bdacaab?``            ``The answer is 3``
=========  ==============  ====================================  ==========================================

Every ``Example.prompt`` already ends with ``SEP``, so a policy is fed ``Example.prompt`` exactly
as SFT saw it and the response starts right after it. Prompts are at most 40 characters because the
embedded policy is a tiny character-level model.

Train and test splits are disjoint by construction: every possible item is assigned to one split
by a hash of its prompt text, independent of the seed, so no seed ever produces a test prompt in
any train set. Within a split, items are unique.

Pure Python + numpy: no dependency beyond the standard library and numpy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import numpy as np

from laser.tasks.base import Example

__all__ = [
    "DOMAINS",
    "DOMAIN_TASKS",
    "SEP",
    "STYLES",
    "VERSIONS",
    "format_prompt",
    "make_benchmark",
    "solve",
    "worked_response",
    "wrong_response",
]

#: Separator between prompt and response; every synthetic prompt ends with it.
SEP = "\n"

#: domain -> task (the answer format and extractor used to score it).
DOMAIN_TASKS: dict[str, str] = {
    "arith": "gsm8k",
    "compare": "strategyqa",
    "choice": "mmlu",
    "count": "gsm8k",
}

#: The domain names, in table order.
DOMAINS: tuple[str, ...] = tuple(DOMAIN_TASKS)

#: Benchmark versions: "v1" is the original demo; "v2" (issue 13, a benchmark with power) keeps the
#: items and adds the ``answer_first`` response style, which the v2 SFT start mixes in (see
#: ``laser.bench.policy.PRESETS``), and experts that mislead off their domains
#: (``laser.bench.rms.make_demo_rms``).
VERSIONS: tuple[str, ...] = ("v1", "v2")

#: Response styles of ``worked_response``: ``v1`` (the original targets), ``worked`` (v2: working
#: first, then "The answer is X"; count gets a running tally) and ``answer_first`` (v2: the same
#: characters with "The answer is X" moved to the front, so the answer is guessed before the
#: working that would have produced it).
STYLES: tuple[str, ...] = ("v1", "worked", "answer_first")

_TEST_BUCKETS = 3  # of 10 hash buckets: 30% of each domain's item space is test-only
_LETTERS = "ABCD"
_COUNT_ALPHABET = "abcd"


# ---------------------------------------------------------------- generators (rng -> prompt body)
def _gen_arith(rng: np.random.Generator) -> str:
    a, b, c = int(rng.integers(10, 50)), int(rng.integers(2, 7)), int(rng.integers(2, 7))
    return f"{a}+{b}*{c}=?" if rng.random() < 0.5 else f"{b}*{c}+{a}=?"


def _gen_compare(rng: np.random.Generator) -> str:
    a, b = int(rng.integers(10, 50)), int(rng.integers(10, 50))
    d = int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1)
    return f"Is {a}+{b}>{a + b + d}?"


def _gen_choice(rng: np.random.Generator) -> str:
    low = int(rng.integers(10, 60))  # a window of 40: equal tens digits are common
    values = rng.choice(np.arange(low, low + 40), size=4, replace=False)
    return "Max? " + " ".join(f"{L}.{int(v)}" for L, v in zip(_LETTERS, values, strict=True))


def _gen_count(rng: np.random.Generator) -> str:
    length = int(rng.integers(6, 10))
    text = "".join(rng.choice(list(_COUNT_ALPHABET), size=length))
    return f"How many {_COUNT_ALPHABET[int(rng.integers(0, 4))]} in {text}?"


def _gen_compare_close(rng: np.random.Generator) -> str:
    a, b = int(rng.integers(10, 50)), int(rng.integers(10, 50))
    d = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)  # 1-3 away: a guess is not enough
    return f"Is {a}+{b}>{a + b + d}?"


def _gen_choice_sum(rng: np.random.Generator) -> str:
    a, b = int(rng.integers(10, 50)), int(rng.integers(10, 50))
    offsets = rng.choice(np.r_[-9:0, 1:10], size=3, replace=False)  # distractors near the sum
    values = np.insert(a + b + offsets, int(rng.integers(0, 4)), a + b)
    return f"{a}+{b}=? " + " ".join(f"{L}.{int(v)}" for L, v in zip(_LETTERS, values, strict=True))


def _gen_count_fixed(rng: np.random.Generator) -> str:
    text = "".join(rng.choice(list(_COUNT_ALPHABET), size=8))  # one length: the tally lines up
    return f"How many {_COUNT_ALPHABET[int(rng.integers(0, 4))]} in {text}?"


#: version -> domain -> generator.
_GENERATORS: dict[str, dict[str, Callable[[np.random.Generator], str]]] = {
    "v1": {"arith": _gen_arith, "compare": _gen_compare, "choice": _gen_choice, "count": _gen_count},
    "v2": {"arith": _gen_arith, "compare": _gen_compare_close, "choice": _gen_choice_sum, "count": _gen_count_fixed},
}

# ---------------------------------------------------------------- parsers (prompt -> structure)
_PATTERNS: dict[str, re.Pattern] = {
    "arith": re.compile(r"^(?:(?P<a>\d+)\+(?P<b>\d+)\*(?P<c>\d+)|(?P<b2>\d+)\*(?P<c2>\d+)\+(?P<a2>\d+))=\?$"),
    "compare": re.compile(r"^Is (\d+)\+(\d+)>(\d+)\?$"),
    "choice": re.compile(r"^Max\? A\.(\d+) B\.(\d+) C\.(\d+) D\.(\d+)$"),
    "count": re.compile(r"^How many ([a-z]) in ([a-z]+)\?$"),
    "choice_sum": re.compile(r"^(\d+)\+(\d+)=\? A\.(\d+) B\.(\d+) C\.(\d+) D\.(\d+)$"),
}
#: prompt form -> domain (v2's choice asks which option is a sum).
_FORM_DOMAIN = {"arith": "arith", "compare": "compare", "choice": "choice", "count": "count", "choice_sum": "choice"}


def _parse(prompt: str) -> tuple[str, tuple] | None:
    """``(form, groups)`` of a synthetic prompt (a form is a key of ``_PATTERNS``), else None."""
    body = prompt.removesuffix(SEP)
    for domain, pattern in _PATTERNS.items():
        m = pattern.match(body)
        if m and domain == "arith":  # -> (a, b, c, a_first) for "a+b*c" / "b*c+a"
            d = m.groupdict()
            a_first = d["a"] is not None
            keys = ("a", "b", "c") if a_first else ("a2", "b2", "c2")
            return domain, (*(int(d[k]) for k in keys), a_first)
        if m:
            return domain, m.groups()
    return None


def _answer(domain: str, g: tuple) -> str:
    if domain == "arith":
        return str(g[0] + g[1] * g[2])
    if domain == "compare":
        return "yes" if int(g[0]) + int(g[1]) > int(g[2]) else "no"
    if domain == "choice":
        return _LETTERS[int(np.argmax([int(v) for v in g]))]
    if domain == "choice_sum":
        return _LETTERS[[int(v) for v in g[2:]].index(int(g[0]) + int(g[1]))]
    return str(g[1].count(g[0]))


def solve(prompt: str) -> tuple[str, str] | None:
    """Solve a synthetic prompt from its text alone (what the demo's expert RMs do).

    Args:
        prompt: a synthetic prompt, with or without the trailing ``SEP``.

    Returns:
        ``(domain, answer)`` with the answer in normalised form (``"33"``, ``"yes"``, ``"C"``),
        or ``None`` when the text is not a synthetic prompt.
    """
    parsed = _parse(prompt)
    if parsed is None:
        return None
    form, groups = parsed
    return _FORM_DOMAIN[form], _answer(form, groups)


# ---------------------------------------------------------------- responses
def _working(domain: str, g: tuple, answer: str) -> str:
    """The worked steps (without the final "The answer is X") consistent with ``answer``."""
    if domain == "arith":
        a, b, c, a_first = g
        total = f"{a}+{b * c}" if a_first else f"{b * c}+{a}"
        return f"{b}*{c}={b * c}. {total}={answer}"
    if domain == "compare":
        a, b, c = int(g[0]), int(g[1]), int(g[2])
        s = a + b
        if (answer == "yes") != (s > c):  # a wrong verdict comes from a wrong sum
            s = c + (c - s) if c != s else c + 1
        return f"{a}+{b}={s}. {s}{'>' if answer == 'yes' else '<'}{c}"
    if domain == "choice":
        return f"{g[_LETTERS.index(answer)]} is max"
    if domain == "choice_sum":
        return f"{g[0]}+{g[1]}={g[2 + _LETTERS.index(answer)]}"
    letter, text = g  # count: the running tally of the letter, its last digit is the answer
    tally = np.cumsum([ch == letter for ch in text])
    if str(tally[-1]) != answer:  # a wrong count: the tally slips at the end
        tally = np.append(tally[:-1], int(answer))
    return "".join(str(int(t)) for t in tally)


def worked_response(prompt: str, answer: str | None = None, style: str = "v1") -> str:
    """The worked response for a prompt, with "The answer is X" (the SFT target).

    Args:
        prompt: a synthetic prompt (with or without ``SEP``).
        answer: the final answer to write; ``None`` writes the correct one. A wrong answer gives a
            response whose worked steps are consistent with that wrong answer (the last step is
            where the mistake shows), which is how a model's wrong answer usually looks.
        style: one of ``STYLES``. ``"v1"``: working then answer, count without working (the
            original targets). ``"worked"``: working then answer, count with a running tally
            (``bdacaab`` counting ``a`` -> ``0011233``). ``"answer_first"``: the ``"worked"``
            response with its two parts swapped (``The answer is 30. 6*3=18. 12+18=30``): same
            length, same characters.

    Raises:
        ValueError: ``prompt`` is not a synthetic prompt, or ``style`` is unknown.
    """
    if style not in STYLES:
        raise ValueError(f"unknown response style {style!r}; valid: {', '.join(STYLES)}")
    parsed = _parse(prompt)
    if parsed is None:
        raise ValueError(f"not a synthetic benchmark prompt: {prompt!r}")
    domain, g = parsed
    answer = _answer(domain, g) if answer is None else answer
    final = f"The answer is {answer}"
    if style == "v1" and domain == "count":
        return final
    working = _working(domain, g, answer)
    return f"{final}. {working}" if style == "answer_first" else f"{working}. {final}"


def wrong_response(example: Example, rng: np.random.Generator, style: str = "v1") -> str:
    """A plausible incorrect worked response for an example (for RM reliability checks).

    Numbers are moved by 1-5 (either sign, so never equal to the gold), yes/no is flipped, and a
    letter is replaced by another option. ``style`` is passed to :func:`worked_response`.
    """
    domain, gold = example.domain, example.answer
    if DOMAIN_TASKS.get(domain) == "gsm8k":
        shift = int(rng.integers(1, 6)) * (1 if rng.random() < 0.5 else -1)
        if domain == "count" and int(gold) + shift < 0:
            shift = -shift
        wrong = str(int(gold) + shift)
    elif domain == "compare":
        wrong = "no" if gold == "yes" else "yes"
    elif domain == "choice":
        wrong = str(rng.choice([L for L in _LETTERS if L != gold]))
    else:
        raise ValueError(f"example {example.id!r}: unknown synthetic domain {domain!r}")
    return worked_response(example.prompt, wrong, style)


def format_prompt(example: Example) -> str:
    """The exact text a policy is fed for an example: ``example.prompt`` (it already ends in SEP)."""
    return example.prompt if example.prompt.endswith(SEP) else example.prompt + SEP


# ---------------------------------------------------------------- benchmark
def _split_of(body: str) -> str:
    bucket = hashlib.blake2b(body.encode(), digest_size=8).digest()[0] % 10
    return "test" if bucket < _TEST_BUCKETS else "train"


def _domain_items(domain: str, n: int, seed: int, split: str, version: str = "v1") -> list[str]:
    gen = _GENERATORS[version][domain]
    rng = np.random.default_rng([seed, DOMAINS.index(domain), 0 if split == "train" else 1])
    seen: dict[str, None] = {}
    attempts, max_attempts = 0, 50 * n + 1000
    while len(seen) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"domain {domain!r}: found only {len(seen)} distinct {split} items after "
                f"{max_attempts} draws; n_per_domain={n} is too large for this domain"
            )
        body = gen(rng)
        if _split_of(body) == split:
            seen.setdefault(body)
    return list(seen)


def make_benchmark(
    n_per_domain: int,
    seed: int = 0,
    split: str = "train",
    domains: tuple[str, ...] = DOMAINS,
    version: str = "v1",
) -> list[Example]:
    """Generate the synthetic benchmark.

    Args:
        n_per_domain: examples per domain (distinct prompts).
        seed: generator seed; the same (seed, split) always gives the same list.
        split: ``"train"`` or ``"test"``. The splits partition each domain's item space by a hash
            of the prompt, so they never overlap whatever the seeds.
        domains: which domains to include, in output order (default: all of ``DOMAINS``).
        version: the benchmark version, one of ``VERSIONS``.

    Returns:
        ``n_per_domain * len(domains)`` examples, domain-major, with ``prompt`` ending in ``SEP``,
        ``answer`` normalised, ``task`` the scorer's task name and ``domain`` the domain name.

    Raises:
        ValueError: unknown split or domain, non-positive ``n_per_domain``, or more examples than
            a domain's split can supply.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown benchmark version {version!r}; valid: {', '.join(VERSIONS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n_per_domain <= 0:
        raise ValueError(f"n_per_domain must be positive, got {n_per_domain}")
    unknown = [d for d in domains if d not in DOMAIN_TASKS]
    if unknown:
        raise ValueError(f"unknown synthetic domains {unknown}; valid: {list(DOMAINS)}")
    out = []
    for domain in domains:
        for i, body in enumerate(_domain_items(domain, n_per_domain, seed, split, version)):
            answer = solve(body)[1]
            out.append(Example(f"{domain}-{split}-{seed}-{i}", body + SEP, answer, DOMAIN_TASKS[domain], domain))
    return out
