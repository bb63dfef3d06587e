"""Tasks: datasets, answer extraction and metrics (GSM8K numbers, StrategyQA yes/no, MMLU letters,
token F1 / ROUGE-L, pairwise win rate). Imports numpy only; ``datasets`` and ``rouge-score`` load
lazily when a Hub split or ROUGE-L is asked for."""

from laser.tasks.base import Example
from laser.tasks.datasets import (
    DataError,
    load_gsm8k,
    load_mmlu,
    load_strategyqa,
    load_task,
    read_prompts_jsonl,
)
from laser.tasks.extract import extract_answer, is_correct
from laser.tasks.metrics import accuracy, bootstrap_ci, rouge_l, token_f1, win_rate

__all__ = [
    "DataError",
    "Example",
    "accuracy",
    "bootstrap_ci",
    "extract_answer",
    "is_correct",
    "load_gsm8k",
    "load_mmlu",
    "load_strategyqa",
    "load_task",
    "read_prompts_jsonl",
    "rouge_l",
    "token_f1",
    "win_rate",
]
