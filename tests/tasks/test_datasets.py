"""Task loaders (official file formats, Hub path with a fake `datasets`) and prompt files."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from laser.tasks.datasets import (
    DataError,
    load_gsm8k,
    load_mmlu,
    load_strategyqa,
    load_task,
    read_prompts_jsonl,
)
from laser.tasks.extract import extract_answer

GSM8K_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "gsm8k"


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- GSM8K


@pytest.mark.parametrize("split, n_rows", [("test", 1319), ("train", 7473)])
def test_gsm8k_shared_folder(split: str, n_rows: int) -> None:
    if not GSM8K_DIR.is_dir():
        pytest.skip("shared GSM8K not present")
    examples = load_gsm8k(GSM8K_DIR, split=split)
    assert len(examples) == n_rows
    assert len({ex.id for ex in examples}) == n_rows
    rows = [json.loads(line) for line in (GSM8K_DIR / f"{split}.jsonl").read_text().splitlines()]
    for ex, row in zip(examples, rows, strict=True):
        assert ex.answer == row["answer"].split("####")[-1].strip().replace(",", "")
        assert row["question"] in ex.prompt and "The answer is" in ex.prompt
        assert ex.task == "gsm8k" and ex.group == "gsm8k"
    assert examples[0].id == f"gsm8k-{split}-0"


def test_gsm8k_file_and_template(tmp_path: Path) -> None:
    path = _write(tmp_path / "mini.jsonl", json.dumps({"question": "1+1?", "answer": "2\n#### 2"}))
    (ex,) = load_gsm8k(path, template="Q: {question}\nA:")
    assert ex == type(ex)("gsm8k-mini-0", "Q: 1+1?\nA:", "2", task="gsm8k")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['choices'\]"):
        load_gsm8k(path, template="{question} {choices}")
    with pytest.raises(ValueError, match="no {question} field"):
        load_gsm8k(path, template="Solve it.")


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "q", "answer": "#### 1"}', "", "{not json"], r"bad\.jsonl:3: invalid JSON"),
        (['{"answer": "#### 1"}'], r'bad\.jsonl:1: field "question" missing \(keys: answer\)'),
        (['{"question": "q", "answer": 7}'], r'bad\.jsonl:1: field "answer" must be a string'),
        (['{"question": " ", "answer": "#### 1"}'], r'bad\.jsonl:1: field "question" is empty'),
        (['{"question": "q", "answer": "no number"}'], r'bad\.jsonl:1: field "answer": gold'),
        (["[1, 2]"], r"bad\.jsonl:1: expected a JSON object, got list"),
    ],
)
def test_gsm8k_errors_name_file_line_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", "\n".join(lines))
    with pytest.raises(DataError, match=message):
        load_gsm8k(path)


def test_gsm8k_folder_needs_split(tmp_path: Path) -> None:
    for name in ("train", "test"):
        _write(tmp_path / f"{name}.jsonl", '{"question": "q", "answer": "#### 1"}\n')
    with pytest.raises(DataError, match=r"holds \['test.jsonl', 'train.jsonl'\]; pass split="):
        load_gsm8k(tmp_path)
    with pytest.raises(DataError, match="no dev.jsonl"):
        load_gsm8k(tmp_path, split="dev")
    with pytest.raises(DataError, match="no such file"):
        load_gsm8k(tmp_path / "missing.jsonl")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """A stand-in `datasets` module: records its calls, serves canned rows, no network."""
    calls: list[tuple] = []
    rows = {
        "openai/gsm8k": [{"question": "2*3?", "answer": "2*3=6\n#### 6"}],
        "cais/mmlu": [{"question": "1+1?", "subject": "math", "choices": ["1", "2", "3", "4"], "answer": 1}],
    }

    def load_dataset(repo: str, config: str, split: str) -> list[dict]:
        calls.append((repo, config, split))
        return rows[repo]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_paths_use_datasets_lazily(fake_hub: list[tuple]) -> None:
    (ex,) = load_gsm8k("test")
    assert (ex.id, ex.answer) == ("gsm8k-test-0", "6")
    (mc,) = load_task("mmlu", None, split="test[:1]")
    assert (mc.id, mc.answer, mc.domain) == ("mmlu-test[:1]-0", "B", "math")
    assert "A. 1\nB. 2\nC. 3\nD. 4" in mc.prompt
    assert fake_hub == [("openai/gsm8k", "main", "test"), ("cais/mmlu", "all", "test[:1]")]


def test_hub_without_datasets_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match=r"pip install datasets"):
        load_gsm8k("train")


# ---------------------------------------------------------------- StrategyQA

STRATEGYQA = [
    {
        "qid": "a1",
        "term": "Penguin",
        "question": "Can a penguin fly?",
        "answer": False,
        "facts": ["Penguins are flightless.", "They swim."],
    },
    {"qid": "b2", "question": "Is water wet?", "answer": True},
    {"qid": "c3", "question": "Is the sun a star?", "answer": "yes"},
]


def test_strategyqa_official_json(tmp_path: Path) -> None:
    path = _write(tmp_path / "strategyqa_train.json", json.dumps(STRATEGYQA, indent=2))
    examples = load_strategyqa(path, template="{facts} | {question}")
    assert [(ex.id, ex.answer) for ex in examples] == [
        ("strategyqa-a1", "no"),
        ("strategyqa-b2", "yes"),
        ("strategyqa-c3", "yes"),
    ]
    assert examples[0].prompt == "Penguins are flightless. They swim. | Can a penguin fly?"
    assert examples[1].prompt == " | Is water wet?"
    default = load_strategyqa(path)
    assert all(extract_answer("strategyqa", ex.prompt) is not None for ex in default)  # asks yes/no


def test_strategyqa_unlabelled_and_jsonl(tmp_path: Path) -> None:
    test_file = _write(tmp_path / "test.json", json.dumps([{"qid": "x", "question": "Q?"}]))
    assert load_strategyqa(test_file)[0].answer == ""
    lines = "\n".join(json.dumps(item) for item in STRATEGYQA)
    assert [ex.answer for ex in load_strategyqa(_write(tmp_path / "s.jsonl", lines))] == ["no", "yes", "yes"]


def test_strategyqa_errors_name_the_item_line(tmp_path: Path) -> None:
    """With indent=2 each item opens with a line "  {"; the second one is the bad item."""
    bad = [STRATEGYQA[0], {"qid": "z", "question": "Q?", "answer": "maybe"}]
    text = json.dumps(bad, indent=2)
    line_of_second = [i for i, ln in enumerate(text.splitlines(), 1) if ln == "  {"][1]
    path = _write(tmp_path / "bad.json", text)
    with pytest.raises(DataError, match=rf'bad\.json:{line_of_second}: field "answer"'):
        load_strategyqa(path)
    # lines: "[", "  {", 3 keys, "  },", "  {" -> the second item opens on line 7
    dup = _write(tmp_path / "dup.json", json.dumps([STRATEGYQA[1], STRATEGYQA[1]], indent=2))
    with pytest.raises(DataError, match=r'dup\.json:7: duplicate id "strategyqa-b2" \(first at .*dup\.json:2\)'):
        load_strategyqa(dup)
    with pytest.raises(DataError, match=r"broken\.json:2: invalid JSON"):
        load_strategyqa(_write(tmp_path / "broken.json", '[\n{"qid": }\n]'))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_strategyqa(_write(tmp_path / "obj.json", '{"qid": "a"}'))
    with pytest.raises(DataError, match="no questions"):
        load_strategyqa(_write(tmp_path / "empty_list.json", "[]"))


# ---------------------------------------------------------------- MMLU

ALGEBRA = 'What is 2+2?,3,4,5,6,B\n"Which, with a comma\nand a newline?",x,y,z,w,D\n'


def test_mmlu_csv_prompt_and_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "abstract_algebra_test.csv", ALGEBRA)
    first, second = load_mmlu(path)
    assert first.prompt == (
        "The following is a multiple choice question about abstract algebra.\n\n"
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\n"
        "Give the final answer as 'The answer is (X)', where X is A, B, C or D."
    )
    assert (first.id, first.answer, first.task, first.domain) == (
        "mmlu-abstract_algebra_test-0",
        "B",
        "mmlu",
        "abstract_algebra",
    )
    assert second.answer == "D" and "Which, with a comma\nand a newline?" in second.prompt


def test_mmlu_folders_split_and_subjects(tmp_path: Path) -> None:
    test_dir = tmp_path / "data" / "test"
    test_dir.mkdir(parents=True)
    _write(test_dir / "abstract_algebra_test.csv", ALGEBRA)
    _write(test_dir / "anatomy_test.csv", "Bones?,206,100,12,3,A\n")
    (tmp_path / "data" / "dev").mkdir()
    _write(tmp_path / "data" / "dev" / "anatomy_dev.csv", "Heart?,1,2,3,4,A\n")
    assert len(load_mmlu(test_dir)) == 3
    assert [ex.domain for ex in load_mmlu(tmp_path / "data", split="test")] == [
        "abstract_algebra",
        "abstract_algebra",
        "anatomy",
    ]
    assert [ex.id for ex in load_mmlu(tmp_path / "data", split="dev")] == ["mmlu-anatomy_dev-0"]
    assert len(load_mmlu(test_dir, subjects=["anatomy"])) == 1
    with pytest.raises(DataError, match="no MMLU questions"):
        load_mmlu(test_dir, subjects=["astronomy"])
    with pytest.raises(DataError, match="no MMLU csv files"):
        load_mmlu(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        (ALGEBRA + "short,row,B\n", r"x_test\.csv:4: expected 6 columns .* got 3"),  # row 3 spans 2-3
        ("Q?,1,2,3,4,E\n", r"x_test\.csv:1: column 6 \(answer\) must be one of A-D, got 'E'"),
        ("\n,1,2,3,4,A\n", r"x_test\.csv:2: column 1 \(question\) is empty"),
        ("", r"x_test\.csv: file is empty"),
    ],
)
def test_mmlu_errors_name_file_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_mmlu(_write(tmp_path / "x_test.csv", text))


# ---------------------------------------------------------------- load_task


def test_load_task_dispatch_limit_seed(tmp_path: Path) -> None:
    lines = [json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(20)]
    path = _write(tmp_path / "g.jsonl", "\n".join(lines))
    assert [ex.answer for ex in load_task("gsm8k", path, limit=3)] == ["0", "1", "2"]
    a = load_task("GSM8K", path, limit=5, seed=7)
    assert a == load_task("gsm8k", path, limit=5, seed=7)  # reproducible
    assert len({ex.id for ex in a}) == 5 and a != load_task("gsm8k", path, limit=5)
    assert sorted(ex.answer for ex in load_task("gsm8k", path, seed=1)) == sorted(
        str(i) for i in range(20)
    )  # a permutation: nothing lost or repeated
    assert load_task("gsm8k", path, template="{question}?")[0].prompt == "q0?"
    with pytest.raises(ValueError, match="unknown task 'squad'; valid tasks: gsm8k, mmlu, strategyqa"):
        load_task("squad", path)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_task("gsm8k", path, limit=0)
    with pytest.raises(ValueError, match="strategyqa has no Hub loader"):
        load_task("strategyqa", None)
    with pytest.raises(ValueError, match="pass a path, or a split name"):
        load_task("gsm8k", None)


# ---------------------------------------------------------------- user prompt files


def test_read_prompts_bom_crlf_blank_lines(tmp_path: Path) -> None:
    text = '{"id": "a", "prompt": "Hi", "answer": "yes"}\r\n\r\n{"prompt": "Yo", "task": "x"}\r\n'
    path = _write(tmp_path / "p.jsonl", "\ufeff" + text)
    a, b = read_prompts_jsonl(path, task="strategyqa")
    assert (a.id, a.prompt, a.answer, a.task) == ("a", "Hi", "yes", "strategyqa")
    assert (b.id, b.prompt, b.answer, b.task) == ("p-3", "Yo", "", "x")  # id from line 3


def test_read_prompts_custom_fields_and_types(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", '{"n": 7, "text": "Q", "gold": true, "domain": "d"}\n')
    (ex,) = read_prompts_jsonl(path, prompt_field="text", id_field="n", answer_field="gold")
    assert (ex.id, ex.prompt, ex.answer, ex.domain) == ("7", "Q", "true", "d")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"p\.jsonl: file is empty"),
        ("\n  \n\r\n", r"p\.jsonl: only blank lines"),
        ('{"prompt": "a"}\n{"prompt": "b",}\n', r"p\.jsonl:2: invalid JSON"),
        ('\n{"id": 1, "text": "a"}\n', r'p\.jsonl:2: field "prompt" missing \(keys: id, text\)'),
        ('{"prompt": ["a"]}', r'p\.jsonl:1: field "prompt" must be a string, got list'),
        ('{"prompt": ""}', r'p\.jsonl:1: field "prompt" is empty'),
        (
            '{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}',
            r'p\.jsonl:2: duplicate id "x" \(first at .*p\.jsonl:1\)',
        ),
        ('{"id": 1, "prompt": "a"}\n{"id": "1", "prompt": "b"}', r'p\.jsonl:2: duplicate id "1"'),
        ('{"id": true, "prompt": "a"}', r'p\.jsonl:1: field "id" must be a non-empty string'),
        ('{"prompt": "a", "answer": {"x": 1}}', r'p\.jsonl:1: field "answer" must be a string'),
    ],
)
def test_read_prompts_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_prompts_jsonl(_write(tmp_path / "p.jsonl", text))


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, ValueError)
    with pytest.raises(ValueError, match="no such file"):
        read_prompts_jsonl("/nonexistent/prompts.jsonl")


def test_import_laser_tasks_stays_light() -> None:
    """`import laser.tasks` must not pull torch, transformers, datasets or rouge-score/nltk."""
    import ast
    import subprocess

    code = (
        "import sys, laser.tasks as t; "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'rouge_score', 'nltk') "
        "if m in sys.modules)); print(sorted(t.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert {
        "Example",
        "extract_answer",
        "is_correct",
        "load_gsm8k",
        "load_strategyqa",
        "load_mmlu",
        "load_task",
        "read_prompts_jsonl",
        "DataError",
        "accuracy",
        "token_f1",
        "rouge_l",
        "win_rate",
    } <= set(ast.literal_eval(out[1]))
