"""Item 6: the suite ends with ONE summary table of its figures (tests/reliability/conftest.py).
Checked by running a one-test selection of the suite with `-m reliability` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TITLE

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]


def test_summary_table_is_printed_once_at_the_end():
    cmd = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider",
           "tests/reliability/test_bad_input.py", "-k", "bom_and_crlf or lists_every_problem"]
    proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert out.count(TITLE) == 1, out
    table = out[out.index(TITLE):]
    assert "4 bad input" in table and "BOM + CRLF prompt file accepted" in table and "yes" in table
    assert "config with 7 faults: problems listed in one error  7/7" in table
    assert "suite wall time:" in table and "2 passed" in out
