"""`laser serve-rm` as an operator sees it: ``kill -USR1`` dumps every thread's stack to stderr and
the server keeps serving; Ctrl-C stops it even while a client holds a connection open without
sending a request (the handler threads are daemons, so ``server_close`` does not wait for them;
the request timeout is 60 s, far above the wait below)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request

from helpers import start_cheap_serve_rm


def test_usr1_dumps_stacks_and_ctrl_c_stops_the_server_with_a_stalled_client(tmp_path):
    proc, url, err = start_cheap_serve_rm(tmp_path)
    try:
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while "serve_forever" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        dump = err.read_text()
        assert "Current thread" in dump and "serve_forever" in dump, dump
        with urllib.request.urlopen(url + "/health", timeout=10) as resp:  # still serving after the dump
            assert json.loads(resp.read())["status"] == "ok"

        stalled = socket.create_connection(
            ("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5
        )  # connects, never sends a request
        time.sleep(0.5)  # the server accepts it; a handler thread blocks reading the request line
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            rc = None
        waited = time.monotonic() - t
        stalled.close()
        assert rc == 0, f"serve-rm still running {waited:.0f} s after Ctrl-C with a stalled client: {err.read_text()}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
