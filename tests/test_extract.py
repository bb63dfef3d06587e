"""Answer extraction: hand-written cases per format, the whole shared GSM8K set, properties."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laser.tasks.extract import extract_answer, is_correct, normalize_gold, normalize_number

GSM8K_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 72", "72"),
        ("She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 18", "18"),
        ("The answer is 72.", "72"),
        ("the answer is: 72 apples", "72"),
        ("Final answer: 72", "72"),
        ("Q: how many?\nA: 72", "72"),
        ("It costs $1,000 in total.", "1000"),
        ("The answer is $1,000,000.", "1000000"),
        ("The temperature drops to -3 degrees.", "-3"),
        ("x = (-3)", "-3"),
        ("Each costs 2.50", "2.5"),
        ("That is 3.0 hours", "3"),
        ("worth $0.75", "0.75"),
        ("about .5 of it", "0.5"),
        ("The answer is **$18**.", "18"),
        (r"so $\boxed{1,234.50}$", "1234.5"),
        ("answer = 42", "42"),
        ("She ends with 24.", "24"),
        # an explicit marker beats the last number, even when numbers follow it
        ("The answer is 72. Check: 70 + 2 = 72, and 5 * 3 = 15.", "72"),
        ("#### 5\nThe answer is 7", "5"),  # "####" outranks "the answer is"
        (r"\boxed{9} because the answer is 8", "9"),  # \boxed outranks "the answer is"
        ("The answer is 3. No wait, the answer is 4.", "4"),  # last marker wins within a tier
        # hyphens between numbers are minus operators, not signs
        ("16-3-4=9", "9"),
        ("She has 20 - 5", "5"),
        ("Calculated <<2*3=6>>6 cookies, then 6+1=7", "7"),
        # a marker not followed directly by a number does not count
        ("The answer is that she has 8 left", "8"),
        ("She must answer 5 questions; 4 * 5 = 20", "20"),
        ("The answer is 5 + 3 = 8", "5"),
        # thousands commas only in groups of three; a list is several numbers
        ("pick 1,2,3", "3"),
        ("In 2023 she was 31.", "31"),
        ("\u22123 is the answer", "-3"),  # unicode minus sign
        ("no digits at all", None),
        ("", None),
    ],
)
def test_number_extraction(text: str, expected: str | None) -> None:
    assert extract_answer("gsm8k", text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("So the answer is yes.", "yes"),
        ("Answer: **No**", "no"),
        ("There is no record of it, so the answer is yes.", "yes"),  # marker beats a stray "no"
        ("The answer is true.", "yes"),
        ("answer: false", "no"),
        ("Yes. Penguins cannot fly, so no plane is needed.", "yes"),  # leading word beats last
        ("No, because it is too far. Yes, really far.", "no"),
        ("Hmm. I think yes. Actually, no.", "no"),  # fallback: the last standalone word
        ("**Yes**, it can.", "yes"),
        ("Her eyes are blue and nobody knows.", None),  # "eyes", "nobody" are not answers
        ("Yesterday a notable person said nothing", None),
        ("no-one came", None),
        ("", None),
    ],
)
def test_yesno_extraction(text: str, expected: str | None) -> None:
    assert extract_answer("strategyqa", text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is (B).", "B"),
        ("Answer: B", "B"),
        ("the correct answer is option C because ...", "C"),
        ("The answer is: **D**", "D"),
        ("B) Paris", "B"),
        ("C. 42", "C"),
        ("(D) none of the above", "D"),
        ("B", "B"),
        ("  (A).  ", "A"),
        ("**C**", "C"),
        (r"$\boxed{D}$", "D"),
        ("A dog barks; so I pick (C) here", "C"),
        ("(A) is tempting but the answer is (C)", "C"),  # marker beats a leading label
        ("A dog barks.", None),  # a capital A in prose is not a choice
        ("The answer is E", None),  # only A-D
        ("b", None),  # lower case is not a letter answer
        ("", None),
    ],
)
def test_choice_extraction(text: str, expected: str | None) -> None:
    assert extract_answer("mmlu", text) == expected


def test_aliases_and_case() -> None:
    assert extract_answer("number", "A: 3") == extract_answer("numeric", "A: 3") == "3"
    assert extract_answer("yesno", "yes") == "yes"
    assert extract_answer("choice", "B") == extract_answer("mc", "B") == "B"
    assert extract_answer("GSM8K", "#### 4") == "4"


def test_unknown_task_names_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'squad'.*gsm8k.*mmlu.*strategyqa"):
        extract_answer("squad", "x")
    with pytest.raises(ValueError, match="unknown task"):
        is_correct("squad", "x", "y")


@pytest.mark.parametrize(
    "raw, expected",
    [("$1,000", "1000"), ("2.50", "2.5"), ("3.0", "3"), ("-0.0", "0"), (".5", "0.5"),
     ("007", "7"), ("+4", "4"), ("1,080", "1080"), ("12 apples", None), ("", None), ("-", None)],
)
def test_normalize_number(raw: str, expected: str | None) -> None:
    assert normalize_number(raw) == expected


def test_normalize_gold_forms() -> None:
    assert normalize_gold("gsm8k", "so 2+2=4\n#### 1,080") == "1080"
    assert normalize_gold("gsm8k", 72) == "72"
    assert normalize_gold("gsm8k", 2.50) == "2.5"
    assert normalize_gold("strategyqa", True) == "yes"
    assert normalize_gold("strategyqa", "False") == "no"
    assert normalize_gold("strategyqa", "Yes") == "yes"
    assert normalize_gold("mmlu", 2) == "C"  # the Hub's 0-based index
    assert normalize_gold("mmlu", "3") == "D"
    assert normalize_gold("mmlu", "b") == "B"
    for task, bad in [("gsm8k", "many"), ("gsm8k", True), ("strategyqa", "maybe"),
                      ("mmlu", 4), ("mmlu", "E"), ("mmlu", None)]:
        with pytest.raises(ValueError, match="not a valid"):
            normalize_gold(task, bad)


def test_is_correct() -> None:
    assert is_correct("gsm8k", "The answer is 2.50", "2.5")
    assert is_correct("gsm8k", "so $1,000", "#### 1,000")
    assert not is_correct("gsm8k", "The answer is 71", "72")
    assert not is_correct("gsm8k", "I don't know", "72")  # nothing extracted -> wrong
    assert is_correct("strategyqa", "So the answer is no.", False)
    assert not is_correct("strategyqa", "Yes", False)
    assert is_correct("mmlu", "The answer is (C)", 2)
    assert not is_correct("mmlu", "The answer is (C)", "A")


def _gsm8k_rows(split: str) -> list[dict]:
    path = GSM8K_DIR / f"{split}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.mark.parametrize("split, n_rows", [("train", 7473), ("test", 1319)])
def test_every_gsm8k_solution_extracts_to_its_own_answer(split: str, n_rows: int) -> None:
    """The expected answer is computed independently of the extractor: the text after the
    last "####", stripped, with thousands commas removed (every shared answer is an integer)."""
    rows = _gsm8k_rows(split)
    assert len(rows) == n_rows
    misses = []
    for i, row in enumerate(rows):
        solution = row["answer"]
        expected = solution.split("####")[-1].strip().replace(",", "")
        assert int(expected) == int(Decimal(expected))  # all shared gold answers are integers
        if extract_answer("gsm8k", solution) != expected or not is_correct(
            "gsm8k", solution, solution
        ):
            misses.append((i, expected, extract_answer("gsm8k", solution)))
    print(f"gsm8k {split}: {n_rows - len(misses)}/{n_rows} solutions extract to their own answer")
    assert misses == []


@settings(max_examples=200, deadline=None)
@given(
    value=st.decimals(min_value=-10**9, max_value=10**9, places=2, allow_nan=False),
    dollar=st.booleans(),
    commas=st.booleans(),
    template=st.sampled_from(["The answer is {}.", "#### {}", "Final answer: {}", "so {} left"]),
)
def test_number_round_trip(value: Decimal, dollar: bool, commas: bool, template: str) -> None:
    """Any number written in any accepted style comes back as its canonical value."""
    written = f"{abs(value):,.2f}" if commas else f"{abs(value):.2f}"
    written = ("-" if value < 0 else "") + ("$" if dollar else "") + written
    got = extract_answer("gsm8k", "Some 12 steps first. " + template.format(written))
    assert got is not None and Decimal(got) == value
    assert got == normalize_number(str(value))
