"""Loaders for GSM8K, StrategyQA and MMLU in their official formats, and user prompt files.

Every loader returns ``list[Example]`` whose ``answer`` is already normalised (``"72"``, ``"yes"``,
``"B"``) and whose ``prompt`` asks for the answer in the form ``laser.tasks.extract_answer``
reads best ("The answer is ..."). Prompt templates are ``str.format`` strings and a parameter of
every loader. Bad input fails fast with a ``DataError`` naming ``file:line`` and the field.

The Hugging Face Hub is used only when a loader is given a split name instead of a path (GSM8K:
``openai/gsm8k``, config ``main``; MMLU: ``cais/mmlu``); ``datasets`` is imported at that moment.
"""

from __future__ import annotations

import csv
import io
import json
import string
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from laser.tasks.base import Example
from laser.tasks.extract import CHOICE_LETTERS, normalize_gold

__all__ = ["DataError", "load_gsm8k", "load_mmlu", "load_strategyqa", "load_task", "read_prompts_jsonl"]

GSM8K_TEMPLATE = (
    "Question: {question}\nSolve it step by step, then give the final answer after 'The answer is', as a number."
)
STRATEGYQA_TEMPLATE = "Question: {question}\nThink briefly, then end with 'The answer is yes.' or 'The answer is no.'"
MMLU_TEMPLATE = (
    "The following is a multiple choice question about {subject}.\n\n"
    "{question}\n{choices}\n"
    "Give the final answer as 'The answer is (X)', where X is A, B, C or D."
)


class DataError(ValueError):
    """A dataset or prompt file is missing, empty or malformed; the message names file:line."""


def _check_template(template: str, allowed: Sequence[str]) -> None:
    """Reject a template that lacks ``{question}`` or uses a field the loader cannot fill."""
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"prompt template {template!r} is not a valid format string: {exc}") from exc
    unknown = sorted(used - set(allowed))
    if unknown or "question" not in used:
        problem = f"unknown field(s) {unknown}" if unknown else "no {question} field"
        raise ValueError(f"prompt template has {problem}; available fields: {list(allowed)}")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8-sig")  # utf-8-sig drops a byte-order mark
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; CRLF and a BOM are fine."""
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty" if not text else f"{path}: only blank lines")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def _string_field(record: dict, field: str, where: str) -> str:
    """The non-empty string ``record[field]``, or a DataError listing the keys found."""
    if field not in record:
        keys = ", ".join(map(str, record)) or "none"
        raise DataError(f'{where}: field "{field}" missing (keys: {keys})')
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f'{where}: field "{field}" must be a string, got {type(value).__name__}')
    if not value.strip():
        raise DataError(f'{where}: field "{field}" is empty')
    return value


def _gold(task: str, value: object, field: str, where: str) -> str:
    try:
        return normalize_gold(task, value)
    except ValueError as exc:
        raise DataError(f'{where}: field "{field}": {exc}') from exc


def _check_unique_ids(examples: list[Example], wheres: list[str]) -> None:
    first: dict[str, str] = {}
    for ex, where in zip(examples, wheres, strict=True):
        if ex.id in first:
            raise DataError(f'{where}: duplicate id "{ex.id}" (first at {first[ex.id]})')
        first[ex.id] = where


def _hub_rows(repo: str, config: str, split: str) -> list[dict]:
    """Rows of a Hub dataset split; imports ``datasets`` only now (needs the network once)."""
    try:
        import datasets  # noqa: PLC0415 - optional, heavy, network
    except ImportError as exc:
        raise ImportError(
            f"loading {repo} split {split!r} from the Hugging Face Hub needs the `datasets` "
            "package (pip install datasets); or pass the path of a local copy"
        ) from exc
    return [dict(row) for row in datasets.load_dataset(repo, config, split=split)]


def _is_split_name(value: str | Path) -> bool:
    text = str(value)
    return (
        not isinstance(value, Path)
        and not Path(text).exists()
        and "/" not in text
        and "\\" not in text
        and not text.endswith((".json", ".jsonl", ".csv"))
    )


def _pick_file(folder: Path, split: str | None, suffix: str) -> Path:
    files = sorted(folder.glob(f"*{suffix}"))
    if split is not None:
        path = folder / f"{split}{suffix}"
        if not path.is_file():
            raise DataError(f"{folder}: no {split}{suffix} (found: {[f.name for f in files]})")
        return path
    if len(files) != 1:
        raise DataError(f"{folder}: holds {[f.name for f in files]}; pass split= to pick one")
    return files[0]


def load_gsm8k(path_or_split: str | Path, split: str | None = None, template: str = GSM8K_TEMPLATE) -> list[Example]:
    """Load GSM8K from its official jsonl (``{"question", "answer"}`` per line) or the Hub.

    Args:
        path_or_split: a ``.jsonl`` file; a folder holding ``train.jsonl``/``test.jsonl`` (then
            ``split`` picks one); or a split name (``"test"``, ``"train[:100]"``) to download
            ``openai/gsm8k`` (config ``main``) with the ``datasets`` library.
        split: the split to read from a folder (ignored for a file).
        template: prompt template with field ``{question}``.

    Returns:
        Examples with ``task="gsm8k"``, ``answer`` the normalised number after ``####``, ids
        ``gsm8k-<file stem or split>-<row index>``.

    Raises:
        DataError: missing file, bad JSON, a missing/empty field or an answer without a number.
    """
    _check_template(template, ["question"])
    if _is_split_name(path_or_split):
        name = str(path_or_split)
        rows = list(enumerate(_hub_rows("openai/gsm8k", "main", name)))
        source, wheres = f"gsm8k-{name}", [f"openai/gsm8k[{name}] row {i}" for i, _ in rows]
    else:
        path = Path(path_or_split)
        if path.is_dir():
            path = _pick_file(path, split, ".jsonl")
        rows = list(_iter_jsonl(path))
        source, wheres = f"gsm8k-{path.stem}", [f"{path}:{lineno}" for lineno, _ in rows]
    examples = []
    for index, ((_, record), where) in enumerate(zip(rows, wheres, strict=True)):
        question = _string_field(record, "question", where)
        solution = _string_field(record, "answer", where)
        answer = _gold("gsm8k", solution, "answer", where)
        prompt = template.format(question=question)
        examples.append(Example(f"{source}-{index}", prompt, answer, task="gsm8k"))
    return examples


def _json_array_items(text: str, path: Path) -> list[tuple[int, object]]:
    """``(line_number, item)`` for each element of a top-level JSON array."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
    decoder, items, pos = json.JSONDecoder(), [], text.index("[") + 1
    for _ in data:  # re-walk the (valid) array to learn where each item starts
        while text[pos] in " \t\r\n,":
            pos += 1
        item, end = decoder.raw_decode(text, pos)
        items.append((text.count("\n", 0, pos) + 1, item))
        pos = end
    return items


def load_strategyqa(path: str | Path, template: str = STRATEGYQA_TEMPLATE) -> list[Example]:
    """Load StrategyQA from its official json (a list of ``{"qid", "question", "answer", ...}``).

    A ``.jsonl`` file with the same fields per line is read too. The official test file has no
    ``answer``; such questions get ``answer=""``.

    Args:
        path: the json (or jsonl) file.
        template: prompt template with fields ``{question}`` and optionally ``{facts}`` (the
            item's ``facts`` joined by spaces; empty when absent).

    Returns:
        Examples with ``task="strategyqa"``, ``answer`` ``"yes"``/``"no"``/``""``, ids
        ``strategyqa-<qid>`` (or ``strategyqa-<file stem>-<index>`` without a qid).

    Raises:
        DataError: bad JSON, a non-object item, missing question, non-boolean answer, duplicate qid.
    """
    _check_template(template, ["question", "facts"])
    path = Path(path)
    if path.suffix == ".jsonl":
        items = list(_iter_jsonl(path))
    else:
        text = _read_text(path)
        if not text.strip():
            raise DataError(f"{path}: file is empty")
        items = _json_array_items(text, path)
    if not items:
        raise DataError(f"{path}: no questions")
    examples, wheres = [], []
    for index, (lineno, item) in enumerate(items):
        where = f"{path}:{lineno}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
        question = _string_field(item, "question", where)
        answer = "" if item.get("answer") is None else _gold("strategyqa", item["answer"], "answer", where)
        facts = item.get("facts") or []
        facts_text = " ".join(facts) if isinstance(facts, list) else str(facts)
        qid = item.get("qid")
        ex_id = f"strategyqa-{qid}" if qid not in (None, "") else f"strategyqa-{path.stem}-{index}"
        prompt = template.format(question=question, facts=facts_text)
        examples.append(Example(ex_id, prompt, answer, task="strategyqa"))
        wheres.append(where)
    _check_unique_ids(examples, wheres)
    return examples


def _mmlu_subject(stem: str) -> str:
    for suffix in ("_test", "_dev", "_val", "_train", "_auxiliary_train"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _mmlu_example(
    ex_id: str, subject: str, question: str, options: Sequence[str], answer: str, template: str
) -> Example:
    choices = "\n".join(f"{letter}. {text}" for letter, text in zip(CHOICE_LETTERS, options, strict=True))
    prompt = template.format(question=question, choices=choices, subject=subject.replace("_", " "))
    return Example(ex_id, prompt, answer, task="mmlu", domain=subject)


def _read_mmlu_csv(path: Path, template: str) -> list[Example]:
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    reader = csv.reader(io.StringIO(text, newline=""))
    subject, examples, start = _mmlu_subject(path.stem), [], 1
    for row in reader:
        where, start = f"{path}:{start}", reader.line_num + 1  # a quoted field may span lines
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != 6:
            raise DataError(f"{where}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
        if not row[0].strip():
            raise DataError(f"{where}: column 1 (question) is empty")
        answer = row[5].strip().upper()
        if answer not in CHOICE_LETTERS:
            raise DataError(f"{where}: column 6 (answer) must be one of A-D, got {row[5]!r}")
        ex_id = f"mmlu-{path.stem}-{len(examples)}"
        examples.append(_mmlu_example(ex_id, subject, row[0], row[1:5], answer, template))
    return examples


def load_mmlu(
    path_or_split: str | Path,
    split: str | None = None,
    subjects: Sequence[str] | None = None,
    template: str = MMLU_TEMPLATE,
) -> list[Example]:
    """Load MMLU from its official csv files (no header: question, A, B, C, D, answer) or the Hub.

    Args:
        path_or_split: one ``<subject>_<split>.csv`` file; a folder of them (or the official
            ``data`` folder with ``dev/``, ``val/``, ``test/`` inside, then ``split`` picks one);
            or a split name (``"test"``) to download ``cais/mmlu`` (config ``all``).
        split: keep only ``*_<split>.csv`` files of a folder; for the Hub, the split.
        subjects: keep only these subjects (file-name prefix, e.g. ``"abstract_algebra"``).
        template: prompt template with fields ``{question}``, ``{choices}`` (lines ``"A. ..."``)
            and ``{subject}`` (underscores as spaces).

    Returns:
        Examples with ``task="mmlu"``, ``domain`` the subject, ``answer`` a letter A-D.

    Raises:
        DataError: no csv files, wrong column count, empty question, bad answer letter.
    """
    _check_template(template, ["question", "choices", "subject"])
    if _is_split_name(path_or_split):
        examples = []
        for i, row in enumerate(_hub_rows("cais/mmlu", "all", str(path_or_split))):
            where = f"cais/mmlu[{path_or_split}] row {i}"
            answer = _gold("mmlu", row.get("answer"), "answer", where)
            subject = str(row.get("subject") or "mmlu")
            ex_id = f"mmlu-{path_or_split}-{i}"
            question = _string_field(row, "question", where)
            options = row.get("choices")
            if not isinstance(options, (list, tuple)) or len(options) != len(CHOICE_LETTERS):
                raise DataError(f'{where}: field "choices" must be a list of 4 options')
            examples.append(_mmlu_example(ex_id, subject, question, options, answer, template))
    else:
        path = Path(path_or_split)
        if path.is_dir():
            folder = path / split if split and (path / split).is_dir() else path
            pattern = f"*_{split}.csv" if split and folder == path else "*.csv"
            files = sorted(folder.glob(pattern))
            if not files:
                raise DataError(f"{folder}: no MMLU csv files matching {pattern}")
        else:
            files = [path]
        examples = [ex for f in files for ex in _read_mmlu_csv(f, template)]
    if subjects is not None:
        examples = [ex for ex in examples if ex.domain in set(subjects)]
    if not examples:
        raise DataError(f"{path_or_split}: no MMLU questions (subjects={subjects}, split={split})")
    return examples


TASK_LOADERS = {"gsm8k": load_gsm8k, "strategyqa": load_strategyqa, "mmlu": load_mmlu}


def load_task(
    name: str,
    path: str | Path | None,
    split: str | None = None,
    limit: int | None = None,
    seed: int | None = None,
    template: str | None = None,
) -> list[Example]:
    """Load a task by name and optionally subsample it.

    Args:
        name: ``"gsm8k"``, ``"strategyqa"`` or ``"mmlu"``.
        path: file or folder; ``None`` downloads ``split`` from the Hub (GSM8K and MMLU only).
        split: split to pick from a folder, or the Hub split.
        limit: keep at most this many examples.
        seed: when given, shuffle with ``numpy.random.default_rng(seed)`` before ``limit``
            (a reproducible random subset, in shuffled order); otherwise keep file order.
        template: prompt template; ``None`` uses the loader's default.

    Raises:
        ValueError: unknown task name or a bad ``limit``. DataError: see each loader.
    """
    key = str(name).strip().lower()
    if key not in TASK_LOADERS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASK_LOADERS))}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    kwargs = {} if template is None else {"template": template}
    if key == "strategyqa":
        if path is None:
            raise ValueError("strategyqa has no Hub loader here; pass the path of the official json")
        examples = load_strategyqa(path, **kwargs)
    else:
        if path is None and split is None:
            raise ValueError(f"{key}: pass a path, or a split name to download from the Hub")
        source = split if path is None else path
        examples = TASK_LOADERS[key](source, split=None if path is None else split, **kwargs)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(examples))
        examples = [examples[i] for i in order]
    return examples[:limit] if limit is not None else examples


def read_prompts_jsonl(
    path: str | Path,
    prompt_field: str = "prompt",
    id_field: str = "id",
    answer_field: str = "answer",
    task: str = "",
) -> list[Example]:
    """Read a user prompt file: one JSON object per line, blank lines skipped, BOM/CRLF fine.

    Args:
        path: the ``.jsonl`` file.
        prompt_field: the non-empty string field holding the prompt.
        id_field: optional string/int id field; absent -> ``"<file stem>-<line>"``.
        answer_field: optional gold answer (kept as text; bools become ``"true"``/``"false"``).
        task: the task for every record, unless a record has its own ``"task"`` string field;
            a ``"domain"`` string field is kept too.

    Returns:
        One Example per record, in file order.

    Raises:
        DataError: missing or empty file, only blank lines, invalid JSON, missing/non-string/empty
            prompt, a bad id or answer type, or a duplicate id; the message names file:line.
    """
    path = Path(path)
    examples, wheres = [], []
    for lineno, record in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        prompt = _string_field(record, prompt_field, where)
        raw_id = record.get(id_field)
        if raw_id is None:
            ex_id = f"{path.stem}-{lineno}"
        elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id).strip():
            ex_id = str(raw_id)
        else:
            raise DataError(f'{where}: field "{id_field}" must be a non-empty string or integer')
        answer = record.get(answer_field)
        if isinstance(answer, bool):
            answer = "true" if answer else "false"
        elif answer is None:
            answer = ""
        elif isinstance(answer, (int, float, str)):
            answer = str(answer)
        else:
            raise DataError(f'{where}: field "{answer_field}" must be a string, number or boolean')
        ex_task = record.get("task", task)
        domain = record.get("domain", "")
        if not isinstance(ex_task, str) or not isinstance(domain, str):
            raise DataError(f'{where}: fields "task" and "domain" must be strings')
        examples.append(Example(ex_id, prompt, answer, task=ex_task, domain=domain))
        wheres.append(where)
    _check_unique_ids(examples, wheres)
    return examples
