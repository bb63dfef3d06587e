"""Task metrics: accuracy, token F1, ROUGE-L, head-to-head win rate and bootstrap intervals.

Only numpy is imported at module load. ROUGE-L comes from the maintained ``rouge-score`` package
(Google Research), imported on first use because it pulls in nltk (about 2.5 s).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import Protocol, Sequence

import numpy as np

from laser.tasks.extract import is_correct

__all__ = ["PairwiseJudge", "accuracy", "bootstrap_ci", "rouge_l", "token_f1", "win_rate"]

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class PairwiseJudge(Protocol):
    """What ``win_rate`` needs from a judge."""

    def prefer(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> np.ndarray:
        """P(response a is better than response b) per item, averaged over both presentation
        orders; float array of shape ``(n,)`` in [0, 1], NaN where the judge could not decide."""
        ...


def _check_lengths(**seqs: Sequence) -> int:
    lengths = {name: len(seq) for name, seq in seqs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"length mismatch: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"no items to score ({', '.join(lengths)} are empty)")
    return n


def example_accuracy(examples: Sequence, texts: Sequence[str], sort_groups: bool = False) -> dict:
    """The one accuracy of responses to :class:`~laser.tasks.base.Example` prompts.

    Each response is judged by ``Example.correct`` (the task's answer extraction, gold answer and
    multiple-choice option texts); accuracy is per group (domain, else task) and their macro
    average, as in the paper's tables (groups in first-seen order, or sorted by name).

    Returns:
        ``{"accuracy": {group: acc, ..., "average": acc}, "correct": [bool per example]}``.
    """
    _check_lengths(examples=examples, texts=texts)
    correct = [ex.correct(t) for ex, t in zip(examples, texts, strict=True)]
    by_group: dict[str, list[bool]] = {}
    for ex, ok in zip(examples, correct, strict=True):
        by_group.setdefault(ex.group, []).append(ok)
    acc = {g: float(np.mean(v)) for g, v in (sorted(by_group.items()) if sort_groups else by_group.items())}
    acc["average"] = float(np.mean(list(acc.values()))) if acc else float("nan")
    return {"accuracy": acc, "correct": correct}


def accuracy(task: str, texts: Sequence[str], golds: Sequence[object]) -> float:
    """Fraction of responses whose extracted answer equals the gold answer.

    Args:
        task: answer format, see ``laser.tasks.extract_answer``.
        texts: model responses.
        golds: gold answers, bare or raw (see ``laser.tasks.extract.normalize_gold``).

    Returns:
        Mean of ``is_correct`` over the items; a response with no extractable answer counts wrong.

    Raises:
        ValueError: empty or mismatched inputs, unknown task, or an unparseable gold answer.
    """
    n = _check_lengths(texts=texts, golds=golds)
    return sum(is_correct(task, text, gold) for text, gold in zip(texts, golds, strict=True)) / n


def _squad_tokens(text: str) -> list[str]:
    """SQuAD answer normalisation: lower case, drop punctuation, drop a/an/the, split on space."""
    text = str(text).lower().translate(_PUNCTUATION)
    return _ARTICLES_RE.sub(" ", text).split()


def token_f1(prediction: str, reference: str | Sequence[str]) -> float:
    """SQuAD-style token F1 between a prediction and one or several references (max over them).

    With ``c`` the multiset overlap of normalised tokens, ``P = c/|pred|``, ``R = c/|ref|`` and
    ``F1 = 2PR/(P+R)``; when either side normalises to no tokens, F1 is 1 if both do, else 0.

    Args:
        prediction: the response.
        reference: a gold answer or a non-empty list of them.

    Returns:
        F1 in [0, 1].
    """
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("token_f1 needs at least one reference")
    pred = _squad_tokens(prediction)
    best = 0.0
    for ref in refs:
        gold = _squad_tokens(ref)
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@lru_cache(maxsize=2)
def _rouge_scorer(use_stemmer: bool):
    try:
        from rouge_score import rouge_scorer  # noqa: PLC0415 - optional and slow to import
    except ImportError as exc:
        raise ImportError(
            "rouge_l needs the `rouge-score` package: pip install 'laser-rm[metrics]' (or pip install rouge-score)"
        ) from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(prediction: str, reference: str | Sequence[str], use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure (longest common subsequence) from the ``rouge-score`` package.

    ``rouge-score``'s default tokenizer lower-cases and keeps only ``[a-z0-9]`` runs, so text in
    other scripts scores 0; use ``token_f1`` or your own metric for such text.

    Args:
        prediction: the response.
        reference: a reference text or a non-empty list of them (max over them).
        use_stemmer: apply the Porter stemmer to both sides.

    Returns:
        F-measure in [0, 1].

    Raises:
        ImportError: ``rouge-score`` is not installed (the message says how to install it).
    """
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("rouge_l needs at least one reference")
    scorer = _rouge_scorer(bool(use_stemmer))
    return max(scorer.score(str(ref), str(prediction))["rougeL"].fmeasure for ref in refs)


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Resamples ``values`` with replacement ``n_boot`` times using
    ``numpy.random.default_rng(seed)``, and returns the ``(1-level)/2`` and ``(1+level)/2``
    quantiles of the resampled means. Deterministic for a given seed.

    Args:
        values: 1-D finite numbers (per-item scores, e.g. 0/1 correctness).
        n_boot: number of bootstrap resamples.
        seed: seed of the resampling generator.
        level: coverage of the interval, in (0, 1).

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: empty, non-1-D or non-finite values, or a bad ``n_boot``/``level``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("bootstrap_ci values must be finite (drop NaN items first)")
    if n_boot < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot}, {level}")
    rng = np.random.default_rng(seed)
    chunk = max(1, 1_000_000 // x.size)  # bound memory at about 8 MB of indices per chunk
    means = np.concatenate(
        [
            x[rng.integers(0, x.size, size=(min(chunk, n_boot - start), x.size))].mean(axis=1)
            for start in range(0, n_boot, chunk)
        ]
    )
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def win_rate(
    prompts: Sequence[str],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
    judge: PairwiseJudge,
    *,
    tie_tol: float = 1e-9,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float | int]:
    """Head-to-head win rate of system a over system b under a pairwise judge.

    Each item's outcome is 1 when the judge's P(a better) exceeds 0.5, 0.5 when it equals 0.5
    (within ``tie_tol``, since order-averaged probabilities carry rounding error), else 0.
    Items the judge returns NaN for are skipped. The interval is a percentile bootstrap of the
    mean outcome (``bootstrap_ci`` with ``seed``), which handles half-point ties, unlike a
    binomial (Wilson) interval.

    Args:
        prompts: the prompts, one per item.
        responses_a: system a's responses.
        responses_b: system b's responses.
        judge: an object with ``prefer(prompts, responses_a, responses_b) -> np.ndarray``.
        tie_tol: |P - 0.5| at or below this counts as a tie.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        level: interval coverage.

    Returns:
        ``{"win_rate", "ci_low", "ci_high", "n", "wins", "ties", "losses", "skipped"}``; ``n``
        counts the decided (non-NaN) items.

    Raises:
        ValueError: mismatched or empty inputs, a judge output of the wrong shape or outside
            [0, 1], or no item the judge could decide.
    """
    n_items = _check_lengths(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
    p = np.asarray(judge.prefer(prompts, responses_a, responses_b), dtype=np.float64)
    if p.shape != (n_items,):
        raise ValueError(f"judge.prefer returned shape {p.shape}, expected ({n_items},)")
    decided = ~np.isnan(p)
    if not ((p[decided] >= 0.0) & (p[decided] <= 1.0)).all():
        raise ValueError("judge.prefer must return probabilities in [0, 1] (or NaN)")
    if not decided.any():
        raise ValueError(f"the judge decided none of the {n_items} items (all NaN)")
    p = p[decided]
    tie = np.abs(p - 0.5) <= tie_tol
    outcome = np.where(tie, 0.5, (p > 0.5).astype(np.float64))
    low, high = bootstrap_ci(outcome, n_boot=n_boot, seed=seed, level=level)
    wins, ties = int(((p > 0.5) & ~tie).sum()), int(tie.sum())
    return {
        "win_rate": float(outcome.mean()),
        "ci_low": low,
        "ci_high": high,
        "n": int(p.size),
        "wins": wins,
        "ties": ties,
        "losses": int(p.size) - wins - ties,
        "skipped": int(n_items - p.size),
    }
