"""Figures of the reliability suite, collected by the tests and printed as ONE table at the end.

Tests ask for the ``figures`` fixture and record what they measured::

    figures.set("1 crash/resume", "kill landed inside a checkpoint write", "yes")
    figures.count("1 crash/resume", "kills that landed inside a checkpoint write")
    with figures.case("4 bad input", "bad datasets rejected (file:line + field)"):
        ...  # counts as ok only when the block finishes without an exception

``pytest_terminal_summary`` prints the table (and the suite's wall time) whenever at least one
figure was recorded, e.g. after ``python -m pytest -m reliability``. A ``case`` figure says how
many cases ran and whether all passed (``all 14 passed``, or ``2 of 14 FAILED``): a passing run
can only print the first, so the count of cases is the figure.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

TITLE = "LASeR reliability summary"
_FIGURES: dict[tuple[str, str], str] = {}  # (item, figure) -> value, in recording order
_CASES: dict[tuple[str, str], list[int]] = {}  # (item, figure) -> [ok, total]
_COUNTS: dict[tuple[str, str], int] = {}  # (item, figure) -> running count
_START = time.perf_counter()


class Figures:
    """Recorder handed to tests (see the module docstring)."""

    def set(self, item: str, figure: str, value) -> None:
        _FIGURES[(item, figure)] = str(value)

    def count(self, item: str, figure: str, n: int = 1) -> None:
        _COUNTS[(item, figure)] = _COUNTS.get((item, figure), 0) + int(n)

    @contextmanager
    def case(self, item: str, figure: str):
        counts = _CASES.setdefault((item, figure), [0, 0])
        counts[1] += 1
        yield
        counts[0] += 1


@pytest.fixture
def figures() -> Figures:
    return Figures()


def summary_rows() -> list[tuple[str, str, str]]:
    rows = [(item, fig, value) for (item, fig), value in _FIGURES.items()]
    rows += [
        (item, fig, f"all {total} passed" if ok == total else f"{total - ok} of {total} FAILED")
        for (item, fig), (ok, total) in _CASES.items()
    ]
    rows += [(item, fig, str(n)) for (item, fig), n in _COUNTS.items()]
    return sorted(rows, key=lambda r: r[0].split()[0])  # stable: recording order within an item


def pytest_sessionstart(session) -> None:
    global _START
    _START = time.perf_counter()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = summary_rows()
    if not rows:
        return
    w_item = max(len(r[0]) for r in rows)
    w_fig = max(len(r[1]) for r in rows)
    tr = terminalreporter
    tr.write_sep("=", TITLE)
    tr.write_line(f"{'item':<{w_item}}  {'figure':<{w_fig}}  value")
    last = None
    for item, fig, value in rows:
        tr.write_line(f"{item if item != last else '':<{w_item}}  {fig:<{w_fig}}  {value}")
        last = item
    tr.write_line(f"suite wall time: {time.perf_counter() - _START:.1f} s (exit status {int(exitstatus)})")
