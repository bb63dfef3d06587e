"""The training loop with ``selector.kwargs.labelled_pairs`` as one rank of two (CPU, gloo).

Run by tests/routing/test_labelled_pairs.py (slow):
``accelerate launch --multi_gpu --num_processes 2 labelled_two_process_run.py OUT``. Each rank
trains one iteration of the embedded-benchmark run of that test and writes OUT/rank<r>.json: its
router's state, the labelled texts its RMs scored and its pool's counters.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from test_labelled_pairs import benchmark_run, labelled_file  # noqa: E402


def main(out: str) -> None:
    out = Path(out)
    path, rows = labelled_file(out)
    texts = {(r["prompt"], r["chosen"]) for r in rows} | {(r["prompt"], r["rejected"]) for r in rows}
    calls: list = []
    tr = benchmark_run(out, 1, calls, path)
    tr.run()
    rank = tr.acc.process_index
    record = {
        "world": tr.acc.num_processes,
        "router": str(tr.strategy.state_dict()["router"]),
        "labelled": {g: st.labelled for g, st in tr.strategy.selector.groups_.items()},
        "signs": {g: st.sign_source for g, st in tr.strategy.selector.groups_.items()},
        "labelled_calls": sorted(c for c in calls if (c[1], c[2]) in texts),
        "pool": tr.pool.responses_scored.tolist(),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1])
