"""Item 6: the suite ends with ONE summary table of its figures (tests/reliability/conftest.py).
Checked by running a one-test selection of the suite with `-m reliability` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import conftest
from .conftest import TITLE

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]


def test_summary_table_is_printed_once_at_the_end():
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "reliability",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/reliability/test_bad_input.py",
        "-k",
        "bom_and_crlf or lists_every_problem",
    ]
    proc = subprocess.run(
        cmd,
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert out.count(TITLE) == 1, out
    table = out[out.index(TITLE) :]
    assert "4 bad input" in table and "BOM + CRLF prompt file accepted" in table and "yes" in table
    assert "config with 7 faults: problems listed in one error  all 7 named" in table
    assert "suite wall time:" in table and "2 passed" in out


def test_case_figures_say_how_many_ran_and_whether_all_passed(monkeypatch):
    """A case figure is the number of cases and whether all passed, not an N/N that a passing run
    always prints: three cases with one failing read "1 of 3 FAILED", one passing case "all 1 passed"."""
    for name in ("_FIGURES", "_CASES", "_COUNTS"):  # this test's figures stay out of the real table
        monkeypatch.setattr(conftest, name, {})
    figures = conftest.Figures()
    for ok in (True, False, True):
        try:
            with figures.case("9 demo", "three cases"):
                assert ok
        except AssertionError:
            pass
    with figures.case("9 demo", "one case"):
        pass
    rows = {(item, fig): value for item, fig, value in conftest.summary_rows()}
    assert rows == {("9 demo", "three cases"): "1 of 3 FAILED", ("9 demo", "one case"): "all 1 passed"}
