"""A scriptable faulty reward-model server on 127.0.0.1, for tests of the remote RM client.

Each request consumes the next :class:`Reply` of the script; once the script is spent, every
request gets ``then``. A reply with ``body=None`` is a correct answer whose scores are the
responses' lengths (for the laser API: ``{"scores": [...]}``; for ``/get_reward``:
``{"rewards": [...]}``, lengths of the queries).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """What the server does for one request.

    Attributes:
        status: HTTP status code.
        body: None for correct scores, or a dict/list (sent as JSON), str or bytes (sent raw).
        delay: seconds to wait before answering (to exceed a client's read timeout).
        headers: extra response headers, e.g. ``{"Retry-After": "2"}``.
    """

    status: int = 200
    body: object = None
    delay: float = 0.0
    headers: dict = field(default_factory=dict)


def correct_scores(payload: dict) -> dict:
    """The right answer of the fault server: one score per response, its length."""
    if "responses" in payload:
        return {"scores": [float(len(r)) for r in payload["responses"]]}
    return {"rewards": [float(len(q)) for q in payload["query"]]}


class FaultServer:
    """Serve a script of replies on 127.0.0.1 from a background thread (a context manager).

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        requests: the decoded JSON body of every request received, in order.
        paths: the path of every request received, in order.
    """

    def __init__(self, script: list[Reply] | None = None, then: Reply | None = None):
        self.script = list(script or [])
        self.then = then or Reply()
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def _next(self, path: str, payload: dict) -> Reply:
        with self._lock:
            self.paths.append(path)
            self.requests.append(payload)
            return self.script.pop(0) if self.script else self.then

    def _handler_class(self):
        fault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                payload = json.loads(raw)
                reply = fault._next(self.path, payload)
                if reply.delay:
                    time.sleep(reply.delay)
                body = correct_scores(payload) if reply.body is None else reply.body
                if isinstance(body, (dict, list)):
                    data = json.dumps(body).encode()
                else:
                    data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (read timeout) before we answered

        return Handler
