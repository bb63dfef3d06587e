"""The reliability router's refits in the background, outside the routed server's lock.

A routed ``laser serve-rm`` serialises its requests with one lock (the models are not thread-safe
and the router's state is shared). With ``selector: reliability`` the request that completes a probe
group used to refit the group's label model (the fit plus ``n_boot`` bootstrap refits, about 10^2 ms)
under that lock while every other request waited. :class:`BackgroundRefits` moves the refit out:

* the request adds the probe's votes to its group's window under the lock (as before) and marks
  the group stale (:meth:`BackgroundRefits.mark`, lock held);
* one worker thread takes a stale group, copies what the refit reads under the lock
  (:meth:`~laser.routing.reliability.ReliabilityRouter.refit_snapshot`), computes the fit without
  the lock (:meth:`~laser.routing.reliability.ReliabilityRouter.refit_compute`, a pure function
  of the copy) and writes it under the lock (:meth:`~laser.routing.reliability.ReliabilityRouter.refit_apply`),
  so a request sees the group's previous fit or its new one, never half of one;
* the compute runs in one spawned child process (``process=True``, the server's default): in a
  thread of the server it would hold the interpreter lock for most of its ~10^2 ms (the label
  model works on K x K matrices, Python-bound), which slows every request as much as the server
  lock did (benchmarks/soak_serve_rm.py: throughput unchanged, only p99 lower). The child holds
  a router with the same hyper-parameters, talks over one socket pair (a snapshot in, a result out), is
  started on first use, again once if it died, and exits when its parent does (SIGKILL included:
  its socket closes);
* one refit per group at a time, coalesced: a group marked again while its refit runs is refitted
  once more afterwards (with every vote that arrived meanwhile);
* an error in a refit (the label model's ValueError: too few votes; anything else: logged with its
  traceback) leaves the group on its fallback and the worker goes on;
* a state save takes the lock, so it holds whole fits; a refit still pending when the state was
  saved is redone after a restore (:meth:`BackgroundRefits.mark` of every restored group: the votes
  are saved, and a refit of an unchanged window gives the fit it had).

verl's Ray actor (:mod:`laser.integrations.verl`) calls the router one call at a time and keeps the
synchronous refit (``ReliabilityGroups.defer_refit`` left None), as do training and the TRL router.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("laser")


class BackgroundRefits:
    """One worker thread that refits the stale groups of a
    :class:`~laser.integrations.grouped_reliability.ReliabilityGroups` (see the module docstring).

    Args:
        groups: the routed server's reliability adapter; its ``defer_refit`` is set to :meth:`mark`.
        lock: the lock every other call into ``groups`` holds (the server's).
        process: compute the fits in a child process (else in the worker thread itself).

    Attributes:
        done_, failed_: refits written, and those among them that ended on the fallback because of
            an error other than the label model's ValueError.
    """

    def __init__(self, groups: Any, lock: threading.Lock, process: bool = True):
        self.router = groups.reliability
        self.process, self.child = process, None  # the child: (process, its end of the pipe)
        self.lock, self.cond = lock, threading.Condition(lock)
        self.stale: dict[str, None] = {}  # groups waiting for a refit, oldest first
        self.running: str | None = None
        self.stopping = False
        self.done_ = self.failed_ = 0
        groups.defer_refit = self.mark
        self.thread = threading.Thread(target=self._run, name="laser-refit", daemon=True)
        self.thread.start()

    def mark(self, groups: list[str]) -> None:
        """Queue a refit of each of ``groups`` (the caller holds the lock)."""
        for g in groups:
            self.stale[str(g)] = None
        self.cond.notify()

    def pending(self) -> int:
        """Refits queued or running (the caller holds the lock)."""
        return len(self.stale) + (self.running is not None)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no refit is queued or running; False when ``timeout`` seconds passed first."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.pending() or self.stopping, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: the refit it is computing finishes, the queued ones are dropped (their
        votes stay in the state; a restart refits them)."""
        with self.cond:
            self.stopping = True
            if self.stale:
                log.info("laser router: %d pending refit(s) dropped at shutdown", len(self.stale))
            self.cond.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)
        if self.child is not None and not self.thread.is_alive():
            self._end_child()

    def _run(self) -> None:
        with self.cond:
            while True:
                self.cond.wait_for(lambda: self.stale or self.stopping)
                if self.stopping:
                    return
                group = next(iter(self.stale))
                del self.stale[group]
                try:
                    self._refit(group)
                except Exception:  # a snapshot or apply that raised: logged, the worker goes on
                    log.exception("laser router: refit of group %r failed", group)
                self.cond.notify_all()  # drain() waiters

    def _refit(self, group: str) -> None:
        """Snapshot under the lock (held on entry), compute without it, apply under it."""
        st = self.router.groups_.get(group)
        if st is None:
            return
        snap = self.router.refit_snapshot(group)
        self.running = group
        self.lock.release()
        try:
            result = self._compute(snap)
        finally:
            self.lock.acquire()
            self.running = None
        if self.router.groups_.get(group) is st:  # not replaced meanwhile (a state load)
            self.router.refit_apply(group, result)
            self.done_ += 1
            self.failed_ += "reason" in result

    def _compute(self, snap: dict) -> dict:
        t0 = time.perf_counter()
        try:
            return self._in_child(snap) if self.process else self.router.refit_compute(snap)
        except Exception as exc:  # the worker lives on; the group stays on its fallback
            log.exception("laser router: refit of group %r failed", snap["group"])
            error = f"{type(exc).__name__}: {exc}"
            return {"error": error, "reason": f"refit failed ({error})", "seconds": time.perf_counter() - t0}

    def _in_child(self, snap: dict) -> dict:
        """``refit_compute(snap)`` in the child process (started on first use, and again once
        when it died, e.g. killed for memory)."""
        for attempt in (0, 1):
            if self.child is None:
                self.child = _start_child(self.router._hparams())
            try:
                self.child[1].send(snap)
                kind, out = self.child[1].recv()
            except (EOFError, OSError):
                self._end_child()
                if attempt or self.stopping:
                    raise RuntimeError("the refit process died" + (" twice in a row" if attempt else "")) from None
                log.warning("laser router: the refit process died; starting another")
                continue
            if kind == "raise":  # an error other than the label model's ValueError, with its traceback
                error, tb = out
                log.error("laser router: refit of group %r failed in the refit process:\n%s", snap["group"], tb)
                return {"error": error, "reason": f"refit failed ({error})", "seconds": 0.0}
            return out
        raise AssertionError("unreachable")

    def _end_child(self) -> None:
        import subprocess

        proc, conn = self.child
        self.child = None
        conn.close()  # the child reads EOF and returns
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def counters(self) -> dict:
        """``pending``, ``done``, ``failed`` (the caller holds the lock)."""
        return {"pending": self.pending(), "done": self.done_, "failed": self.failed_}


def _start_child(hparams: dict) -> tuple:
    """One child Python process computing refits with a router of ``hparams``
    (:meth:`~laser.routing.reliability.ReliabilityRouter.refit_compute` reads nothing else), over a
    socket pair: one snapshot in, one result out. A plain subprocess, not multiprocessing's spawn
    (which re-imports the server's main module, the CLI, in the child): it imports numpy and the
    router only, in its own session (a terminal's Ctrl-C reaches the server, which ends it)."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    a, b = socket.socketpair()
    mine, theirs = Connection(a.detach()), b.detach()
    code = (
        "import sys; sys.path[:0] = __import__('json').loads(sys.argv[1]); "
        "from laser.integrations.background_refit import _child_main; _child_main(int(sys.argv[2]))"
    )
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(sys.path), str(theirs)], pass_fds=[theirs], start_new_session=True
        )
    finally:
        os.close(theirs)  # only the child holds its end: its reads end when this process does
    mine.send(hparams)
    return proc, mine


def _child_main(fd: int) -> None:
    """The child's loop: the router's hyper-parameters, then per refit a snapshot in and
    ``("ok", result)`` or ``("raise", (error, traceback))`` out; returns when the socket closes
    (the server stopped, or died: SIGKILL leaves no process behind)."""
    import traceback
    from multiprocessing.connection import Connection

    from laser.routing.reliability import ReliabilityRouter

    conn, router = Connection(fd), None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the server stopped or died
            return
        if router is None:  # the first message: the hyper-parameters
            router = ReliabilityRouter(**msg)
            continue
        try:
            out = ("ok", router.refit_compute(msg))
        except Exception:  # the parent logs it and leaves the group on its fallback
            tb = traceback.format_exc()
            out = ("raise", (tb.strip().splitlines()[-1], tb))
        try:
            conn.send(out)
        except OSError:  # the parent ended while this refit ran
            return
