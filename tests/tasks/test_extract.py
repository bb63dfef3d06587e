"""Answer extraction: hand-written cases per format, the whole shared GSM8K set, properties."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laser.tasks.extract import (
    extract_answer,
    is_correct,
    normalize_gold,
    normalize_number,
    parse_options,
)

GSM8K_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "gsm8k"


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
    [
        ("$1,000", "1000"),
        ("2.50", "2.5"),
        ("3.0", "3"),
        ("-0.0", "0"),
        (".5", "0.5"),
        ("007", "7"),
        ("+4", "4"),
        ("1,080", "1080"),
        ("12 apples", None),
        ("", None),
        ("-", None),
    ],
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
    for task, bad in [
        ("gsm8k", "many"),
        ("gsm8k", True),
        ("strategyqa", "maybe"),
        ("mmlu", 4),
        ("mmlu", "E"),
        ("mmlu", None),
    ]:
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
        if extract_answer("gsm8k", solution) != expected or not is_correct("gsm8k", solution, solution):
            misses.append((i, expected, extract_answer("gsm8k", solution)))
    print(f"gsm8k {split}: {n_rows - len(misses)}/{n_rows} solutions extract to their own answer")
    assert misses == []


@settings(max_examples=200, deadline=None)
@given(
    value=st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False),
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


# ---------------------------------------------------------------- free-form letters and yes/no
@pytest.mark.parametrize(
    "text, expected",
    [
        # lower-case or parenthesised letters after a marker
        ("Answer: (b)", "B"),
        ("The correct answer is (c).", "C"),
        ("The answer is b.", "B"),
        ("Final answer: d", "D"),
        ("**Answer:** B", "B"),
        ("**Final Answer: (A)**", "A"),
        ("The best option would be C, because ...", "C"),
        ("The correct choice is: D) 42", "D"),
        ("The answer to this question is B.", "B"),
        # the letter before "is the answer" / "is correct"
        ("B is the answer.", "B"),
        ("(C) is correct: water boils at 100 degrees.", "C"),
        ("Option D is the correct answer.", "D"),
        ("I think B is right.", "B"),
        # the chosen option after the others were ruled out
        ("A is wrong, B is wrong, so C.", "C"),
        ("A and B are too small and D is too large, leaving C.", "C"),
        ("Options A, B and D contradict the premise. Therefore, (d) is out too... so the answer must be B", "B"),
        ("Adding the two gives 56, which is option B.", "B"),
        ("56 is the product, which is option (b)", "B"),
        ("I would choose C.", "C"),
        ("I'd go with option A here.", "A"),
        ("Step 1: 7*8=56.\nStep 2: 56 matches the second option.\nSo B", "B"),
        # markdown, a letter alone, a label at the start
        ("**C**", "C"),
        ("(b)", "B"),
        ("**B.** Paris", "B"),
        ("(c) Carbon dioxide", "C"),
        ("Option C: Paris", "C"),
        ("A: B", "B"),  # "A:" is "Answer:" when a letter follows
        # a later explicit statement corrects a leading label
        ("A. Shark\n\nThe correct answer is D. Frog.", "D"),
        ("The answer is A. No wait, B is correct.", "B"),
    ],
)
def test_choice_free_forms(text: str, expected: str) -> None:
    assert extract_answer("mmlu", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Therefore, A person must pay the tax.",  # a capital "A" is an article
        "So A dog is a mammal.",
        "The answer is a bit more subtle than that.",  # lower-case "a" before a word
        "The answer isc",  # a letter glued to a word
        "1. A is incorrect.",  # ruling one out is not choosing
        "B is not correct and C is incorrect.",
        "The answer isn't D.",
        "The answer is not C, I think.",
        "A. Nucleus\nB. Cell wall\nC. Ribosome\nD. Vacuole",  # an echo of the option list
        "A. Spanish: spoken in Spain.\nB. Portuguese: spoken in Portugal.\nC. French: spoken in",
        "c) is a label only in parentheses",
        "bad cab fed a dab",
        "A hexagon has 6 sides.",  # no options given: the text alone names no letter
    ],
)
def test_choice_not_an_answer(text: str) -> None:
    assert extract_answer("mmlu", text) is None


OPTIONS = ["Berlin", "Madrid", "Paris", "Rome"]


@pytest.mark.parametrize(
    "text, options, expected",
    [
        ("Paris", OPTIONS, "C"),
        ("The answer is Paris.", OPTIONS, "C"),
        ("The capital of France is Paris.", OPTIONS, "C"),
        ("Paris is the correct answer; Berlin is in Germany.", OPTIONS, "C"),
        ("It is not Berlin or Madrid; the capital of France is paris", OPTIONS, "C"),
        ("Berlin and Madrid are big cities.", OPTIONS, None),  # two options, no choice
        ("London is big.", OPTIONS, None),
        ("7 times 8 equals 56.", ["54", "56", "64", "48"], "B"),  # a number in answer position
        ("7 times 8 is 56, not 54.", ["54", "56", "64", "48"], None),  # numbers in working only
        ("We add 54 and 2 to get the total", ["54", "56", "64", "48"], None),
        ("A hexagon has six sides.", ["Five", "Six", "Seven", "Eight"], "B"),
        ("The answer is 6.", ["Five", "Six", "Seven", "Eight"], "B"),  # number <-> number word
        ("It is the nucleus.", ["Nucleus", "Cell wall", "Ribosome", "Vacuole"], "A"),
        ("The cell wall holds it.", ["Cell", "Cell wall", "Ribosome", "Vacuole"], "B"),
        ("Gold is Au.", ["Au", "Ag", "Gd", "Go"], "A"),
        ("You go to the lab and find au in a sample", ["Au", "Ag", "Gd", "Go"], None),
        # a letter stated explicitly always wins over option text
        ("The answer is D. Paris", OPTIONS, "D"),
        ("E. Rome", OPTIONS, "D"),  # no option E: its text decides
    ],
)
def test_choice_option_text(text: str, options: list[str], expected: str | None) -> None:
    assert extract_answer("mmlu", text, options=options) == expected


def test_options_from_prompt_and_is_correct() -> None:
    prompt = "Q: What is the capital of France?\nA. Berlin\nB) Madrid\n(C) Paris\nD. Rome\nAnswer:"
    options = parse_options(prompt)
    assert options == ["Berlin", "Madrid", "Paris", "Rome"]
    assert parse_options("Max? A.46 B.35 C.17 D.55") is None  # not one option per line
    assert parse_options("A. x\nB. y\nC. z") is None
    assert is_correct("mmlu", "It is Paris.", "C", options=options)
    assert not is_correct("mmlu", "It is Paris.", "C")  # without options: no letter, wrong
    with pytest.raises(ValueError, match="4 texts"):
        extract_answer("mmlu", "Paris", options=["Paris", "Rome"])
    assert extract_answer("strategyqa", "Yes", options=options) == "yes"  # ignored elsewhere


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes, it can.", "yes"),
        ("No.", "no"),
        ("**No**", "no"),
        ("The answer is yes", "yes"),
        ("True. The Sun is a star.", "yes"),
        ("False, because penguins cannot fly.", "no"),
        ("The answer to this question is no, 17 is odd.", "no"),
        ("**Final answer:** False", "no"),
        ("My verdict: yes.", "yes"),
        # a final verdict after reasoning that mentions both words
        ("Some say yes because they swim. Others say no. Overall, no.", "no"),
        ("1. 2. Yes.\n\nPenguins are birds.\n\n2. No.\n\n3. No, they do not fly.", "no"),
        ("Penguins have wings, yes, but they are for swimming. Therefore, no.", "no"),
        ("It seems unlikely at first. In conclusion, yes, it could.", "yes"),
        # "no" as a determiner or in the instruction's echo is not a verdict
        ("There are no prime numbers above it that divide it.", None),
        ("Answer yes or no: the question is hard.", None),
        ("Penguins swim well, so no plane is needed. Yes.", "yes"),
        ("Truly, the sun is bright.", None),
        ("True love is rare.", None),  # "True" before a word is not a verdict
    ],
)
def test_yesno_free_forms(text: str, expected: str | None) -> None:
    assert extract_answer("strategyqa", text) == expected


_WORDS = st.text(alphabet="abcdABCDxyzXYZ", min_size=2, max_size=6)
_PHRASES = st.sampled_from(
    [
        "The answer is",
        "Answer:",
        "so",
        "Therefore,",
        "which is option",
        "is correct",
        "is the answer",
        "I choose",
        "(",
        ")",
        ".",
        ",",
        "\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_WORDS, _PHRASES), max_size=12))
def test_letters_inside_words_never_read_as_choices(tokens: list[str]) -> None:
    """Every A-D here sits inside a word of two or more letters, so no tier may fire, whatever
    answer markers and brackets surround it (tokens are joined by single spaces)."""
    assert extract_answer("mmlu", " ".join(tokens)) is None


# ---------------------------------------------------------------- real replies (SmolLM2)
REPLIES = Path(__file__).resolve().parents[1] / "data" / "smollm2_answer_outputs.jsonl"

#: Replies whose hand label the extractor does not reproduce, with why. Every other reply must
#: extract to its label exactly; a reply that starts to match is removed from here by hand.
KNOWN_MISREADS = {
    # the option is stated only as a fact inside working, or as a digit for a word option
    ("mc08", "greedy"): "'6 sides' for option 'Six': digits in working are not read as options",
    ("mc08", "sample-t0.8-seed3"): "'6 sides' for option 'Six'",
    ("mc10", "greedy"): "names Au, Ag and Gd while walking through the options",
    ("mc10", "sample-t0.8-seed3"): "walks through the options (a listing)",
    ("mc13", "greedy"): "'0 degrees' stated in step 1, more numbers follow; truncated",
    ("mc22", "sample-t0.8-seed3"): "states the stratosphere, then lists every option",
    ("mc23", "sample-t0.8-seed4"): "mentions two options' texts (carry oxygen, fight infection)",
    # a letter is read where the label says the reply commits to none
    ("mc12", "sample-t0.8-seed1"): "'A. 15' is retracted ('the above answer is incorrect')",
    ("mc07", "sample-t0.8-seed2"): "'A: 1D: ...' reads as option label A",
    ("mc11", "sample-t0.8-seed4"): "'B. Africa (D)': the leading label B is read",
    ("mc21", "sample-t0.8-seed4"): "garbled lines; the last parenthesised letter (B) is read",
    # yes/no affirmed or denied in words other than yes/no
    ("yn02", "greedy"): "'Water is indeed composed of ... hydrogen and oxygen'",
    ("yn02", "sample-t0.8-seed2"): "'Water is indeed ... composed of hydrogen and oxygen'",
    ("yn02", "sample-t0.8-seed3"): "'water is composed of two hydrogen ... and a single oxygen'",
    ("yn02", "sample-t0.8-seed4"): "'Water is composed of two hydrogen atoms and one oxygen atom'",
    ("yn08", "greedy"): "'A tomato is indeed a fruit'",
    ("yn11", "greedy"): "'whales do breathe air'",
    ("yn13", "sample-t0.8-seed1"): "'It is larger than the Atlantic Ocean'",
    ("yn05", "sample-t0.8-seed4"): "'17 is not a prime number' ('no positive integer divisors' is a determiner)",
    ("yn09", "sample-t0.8-seed4"): "'The Roman Empire didn't exist before 1000 AD'",
    ("yn15", "sample-t0.8-seed4"): "'Of course, triangle has three sides'",
}


def _replies() -> list[dict]:
    rows = [json.loads(line) for line in REPLIES.read_text(encoding="utf-8").splitlines() if line]
    unlabelled = [(r["id"], r["decoding"]) for r in rows if r["label"] == "?"]
    assert not unlabelled, f"{REPLIES.name}: label these replies by hand first: {unlabelled}"
    return rows


def test_real_replies() -> None:
    """SmolLM2-135M-Instruct's replies to 24 letter and 16 yes/no questions (greedy and four
    samples each; ``tests/data/make_smollm2_outputs.py``), each labelled by hand with the answer
    it commits to. The extractor, given the option texts, reproduces every label except those in
    KNOWN_MISREADS. Figures (printed with ``-s``): letters 109/120 replies agree with the label,
    4 read a letter where the reply commits to none, 7 committed replies are missed; yes/no 70/80
    agree, 0 read a verdict that is not there, 10 missed. The extractor before issue 13 read
    89/120 and 69/80 (11 and 2 wrong reads, 20 and 9 missed)."""
    rows = _replies()
    assert len(rows) == 200 and {r["split"] for r in rows} == {"dev", "heldout"}
    wrong = {}
    for task in ("mmlu", "strategyqa"):
        rs = [r for r in rows if r["task"] == task]
        got = [extract_answer(task, r["reply"], options=r["options"]) for r in rs]
        bad = {(r["id"], r["decoding"]): g for r, g in zip(rs, got, strict=True) if g != r["label"]}
        print(
            f"{task}: {len(rs) - len(bad)}/{len(rs)} agree with the hand label; "
            f"{sum(g is not None for g in bad.values())} wrong reads, "
            f"{sum(g is None for g in bad.values())} missed"
        )
        wrong.update(bad)
    changed = {k: wrong.get(k, "now right") for k in set(wrong) ^ set(KNOWN_MISREADS)}
    assert not changed, changed


def test_option_texts_only_add_answers() -> None:
    """Option texts are tier 5: a reply that reads as a letter without them reads the same with
    them, on every real reply. The options are also what ``parse_options`` reads off the prompt."""
    for r in _replies():
        if r["task"] == "mmlu":
            assert parse_options(r["prompt"]) == r["options"]
            plain = extract_answer("mmlu", r["reply"])
            if plain is not None:
                assert extract_answer("mmlu", r["reply"], options=r["options"]) == plain, r["id"]
