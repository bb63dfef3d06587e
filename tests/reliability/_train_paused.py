"""`laser train` with a pause inside one checkpoint write, so a test can SIGKILL it there.

``python _train_paused.py train --config X ...`` runs ``laser.cli.main.main`` unchanged except that
the checkpoint of global step ``LASER_KILLTEST_STEP`` sleeps ``LASER_KILLTEST_PAUSE`` seconds after
writing each file (before its fsync) when ``LASER_KILLTEST_WHERE=files``, or after the manifest,
before the rename, when it is ``rename`` (any other value: no pause). The library has no test
hook; the pause is patched in here.

``python _train_paused.py --fork-server`` imports everything once, then for each JSON line
``{"argv": [...], "env": {...}, "stderr": path}`` on stdin forks a child that runs
``main(argv)`` with that environment, and prints the child's pid. The children are ordinary
processes of the same program (killable with SIGKILL); forking skips the ~3 s of imports.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

from laser.routing import checkpoint
from laser.training import checkpoint as trainer_checkpoint

real_write, real_fsync = checkpoint.write_checkpoint, checkpoint._fsync


def _setting():
    env = os.environ
    return (
        int(env.get("LASER_KILLTEST_STEP", "-1")),
        float(env.get("LASER_KILLTEST_PAUSE", "0")),
        env.get("LASER_KILLTEST_WHERE", ""),
    )


def paused_write(root, global_step, writers, keep_last=2):
    step, pause, where = _setting()
    if global_step == step and where == "files":

        def slow(write):
            def run(path):
                write(path)
                time.sleep(pause)

            return run

        writers = {name: slow(w) for name, w in writers.items()}
    return real_write(root, global_step, writers, keep_last)


def paused_fsync(path):
    real_fsync(path)
    step, pause, where = _setting()
    if where == "rename" and Path(path).name.startswith(checkpoint.TMP_PREFIX + f"{step:08d}-"):
        time.sleep(pause)  # the folder is complete (manifest written), not yet renamed


trainer_checkpoint.write_checkpoint = paused_write
checkpoint._fsync = paused_fsync


def fork_server() -> None:
    import transformers  # noqa: F401  (everything `laser train` imports, loaded once)
    from accelerate import Accelerator  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401

    from laser.cli.main import main
    from laser.policy import model  # noqa: F401
    from laser.rewards import factory, rules  # noqa: F401
    from laser.training import loop  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.environ.update(req["env"])
            fd = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            rc = 1
            try:
                rc = main(req["argv"])
            finally:
                os._exit(rc)
        print(pid, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--fork-server"]:
        fork_server()
    else:
        from laser.cli.main import main

        sys.exit(main(sys.argv[1:]))
