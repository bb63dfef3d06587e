"""``laser <command> ...`` as one rank of a run under a forced engine (tests/training/engine_force.py).

    accelerate launch --multi_gpu --num_processes 2 tests/training/engine_train.py ENGINE train --config run.yaml

Used by tests/training/test_engines_kill9.py and benchmarks/engine_step_time.py; on GPUs run
``accelerate launch --config_file examples/accelerate/<engine>.yaml -m laser.cli.main ...`` instead.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from engine_force import cpu_engine_accelerator  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    cpu_engine_accelerator(sys.argv[1])  # the Trainer's Accelerator() reuses this state
    from laser.cli.main import main

    sys.exit(main(sys.argv[2:]))
