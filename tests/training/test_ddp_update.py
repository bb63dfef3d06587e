"""The Accelerate-prepared update on 2 processes equals the single-process update on the same
samples and pairs, when the ranks hold different numbers of pairs (6 and 3; one prompt has none)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import two_cpu_processes

SCRIPT = Path(__file__).with_name("ddp_update_script.py")


def _run(cmd, tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "1",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


# Slow suite only: tests/training/test_engines.py::test_two_processes_equal_one_under_every_engine[ddp]
# runs this very step (its step 1 has the same 5/1/0/3 pairs per prompt, micro_batch_pairs=2, on
# Accelerator(cpu=True) under 2 gloo processes) and three more, and asserts the weights after each
# step, the gradient norm (a wrong loss scale changes it) and AdamW's moments against 1 process.
@pytest.mark.slow
def test_two_process_ddp_update_equals_single_process(tmp_path):
    pytest.importorskip("accelerate")
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one")], tmp_path)
    _run(
        [
            *two_cpu_processes(port=None),
            str(SCRIPT),
            str(tmp_path / "two"),
        ],
        tmp_path,
    )
    one = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["n_pairs"] == two["n_pairs"] == 9
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert set(one["weights"]) == set(two["weights"])
    diff = max(float((one["weights"][n] - two["weights"][n]).abs().max()) for n in one["weights"])
    # gradients: a missing num_processes factor (DDP averages) would halve them, a per-rank mean
    # instead of the global one would weight rank 1's 3 pairs like rank 0's 6
    gdiff = max(float((one["grads"][n] - two["grads"][n]).abs().max()) for n in one["grads"])
    gmax = max(float(one["grads"][n].abs().max()) for n in one["grads"])
    print(f"max |w_1proc - w_2proc| = {diff:.3e}; max |g_1proc - g_2proc| = {gdiff:.3e} (max |g| {gmax:.3e})")
    assert diff < 1e-6
    assert gdiff < 1e-6 * max(gmax, 1.0) and gmax > 1e-3
