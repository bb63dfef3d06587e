"""Serve reward models over HTTP on loopback: the server behind ``laser serve-rm``.

Routes (JSON in, JSON out):

* ``GET /health`` -> ``{"status": "ok", "rms": [names]}``; ``GET /health?rm=NAME`` ->
  ``{"status": "ok", "rm": NAME}`` (404 for an RM not served).
* ``POST /score`` with ``{"prompts": [...], "responses": [...], "rm": name}`` -> ``{"scores":
  [float | null, ...], "rm": name}``; ``rm`` may be left out when one RM is served.
* ``POST /get_reward`` (OpenRLHF's remote-RM API) with ``{"query": [...], "prompts": [...]}`` ->
  ``{"rewards": [...], "scores": [...], "rm": name}``. A query that starts with its prompt is split
  into (prompt, response); without ``prompts`` (or when a query does not start with its prompt)
  the RM sees ``prompt = ""`` and ``response = query``. Other fields (OpenRLHF's ``labels``) are
  ignored.

With a ``router:`` section in its config (see :func:`server_from_config`) the server is also one
routed reward: ``/score`` and ``/get_reward`` without an RM name score each prompt with the RM the
routing core picks for it (every response of one prompt, across requests, with the same RM while
its group is open), answer ``"rm": [name per response]``, and learn from each finished group of
``router.group_size`` responses: against the request's ``labels`` (OpenRLHF's gold answers) where
given, else the group's majority answer, for the configured ``router.task``. With ``router.selector:
reliability`` a group is instead a probe (scored by every RM that is up) or scored by the best RM of
its group (the request field ``router.group_key``), and probes teach the label model from the RMs'
agreement (docs/remote_rm.md); the label model refits outside the lock below, in a child process
(:mod:`laser.integrations.background_refit`, ``RMServer.refit_mode``). The router's state is saved
atomically every ``router.save_every`` finished groups and restored at start.

Every served RM also has its own URLs: ``/score?rm=NAME`` and ``/get_reward?rm=NAME`` pick the RM
from the query string, because OpenRLHF addresses a remote RM by URL alone and sends only
``query``, ``prompts`` and ``labels``. A body ``rm`` that names another RM than the URL is a 400.

Bad requests get HTTP 400 (413 when too large) with ``{"error": "..."}`` naming the field; an RM
that raises gets HTTP 500 with its message. NaN scores go out as ``null``. Calls into the RMs are
serialised by one lock because models are not thread-safe (and several RMs may share one model):
the server handles connections concurrently but scores one batch at a time. There is no
authentication, which is why the default host is 127.0.0.1.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import threading
import urllib.parse
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping, Sequence

import numpy as np

from laser.rewards.base import RewardModel, check_scores

log = logging.getLogger(__name__)


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class RMServer(ThreadingHTTPServer):
    """A threading HTTP server that scores with a fixed set of reward models.

    Use :func:`make_server` to build one. ``serve_forever()`` blocks (run it in a thread in
    tests); ``shutdown()`` stops it from another thread; ``server_close()`` frees the port.
    """

    daemon_threads = True  # a stuck client connection never blocks shutdown
    #: reliability routing, where the label model's refits compute: ``process`` (one child process),
    #: ``thread`` (the refit thread of this process: it shares the interpreter lock with the
    #: requests) or ``lock`` (in the request that completes a probe, under the lock: as verl's actor)
    refit_mode = "process"
    request_queue_size = 128  # listen backlog: the default 5 drops bursts of concurrent clients

    def __init__(
        self,
        rms: Mapping[str, RewardModel],
        host: str,
        port: int,
        max_batch: int,
        max_body_bytes: int,
        request_timeout: float,
        router=None,
    ):
        self.rms = dict(rms)
        self.router = router  # a laser.integrations.grouped.SharedRouter over self.rms, or None
        self.max_batch, self.max_body_bytes = max_batch, max_body_bytes
        self.request_timeout = request_timeout
        self.lock = threading.Lock()
        if self.refit_mode not in ("process", "thread", "lock"):
            raise ValueError(f"RMServer.refit_mode: {self.refit_mode!r} is not 'process', 'thread' or 'lock'")
        super().__init__((host, port), _Handler)
        self.refits = None  # reliability routing: the label model's refits, outside self.lock
        if router is not None and router.spec.selector == "reliability" and self.refit_mode != "lock":
            from laser.integrations.background_refit import BackgroundRefits

            self.refits = BackgroundRefits(router.router, self.lock, self.refit_mode == "process")
            with self.lock:  # a refit pending when the state was saved is redone (a no-op for the others)
                self.refits.mark([g for g, st in router.router.reliability.groups_.items() if st.observed])

    def server_close(self) -> None:
        """Stop the refit worker (its current refit finishes), then free the port."""
        if self.refits is not None:
            self.refits.stop()
        super().server_close()

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.port}"

    def pick(self, name: object, url_name: str | None = None) -> str | None:
        """The RM a request asks for (URL ``?rm=`` or body ``rm``), the only one served, or None:
        routed (several RMs and a router)."""
        if url_name is not None:
            if name is not None and name != url_name:
                raise _BadRequest(f'field "rm" ({name!r}) differs from the URL\'s rm={url_name!r}')
            if url_name not in self.rms:
                raise _BadRequest(f"URL rm={url_name!r}: unknown reward model (served: {', '.join(self.rms)})", 404)
            return url_name
        if name is None:
            if len(self.rms) == 1:
                return next(iter(self.rms))
            if self.router is not None:
                return None  # the router picks per prompt
            raise _BadRequest(
                f'field "rm" is required when several reward models are served (served: {", ".join(self.rms)})'
            )
        if not isinstance(name, str) or name not in self.rms:
            raise _BadRequest(f'field "rm": unknown reward model {name!r} (served: {", ".join(self.rms)})')
        return name

    def score(self, name: str, prompts: list[str], responses: list[str]) -> list[float | None]:
        """Score under the lock; NaN becomes None so it is written as JSON null."""
        rm = self.rms[name]
        with self.lock:
            raw = rm.score(prompts, responses)
        arr = check_scores(raw, len(responses), name)
        return [None if np.isnan(v) else float(v) for v in arr]

    def score_routed(
        self, prompts: list[str], responses: list[str], labels: list, groups: list | None = None
    ) -> tuple[list, list[str]]:
        """Each response scored by the RM the router picks for its prompt (a probe of the reliability
        router: by every RM that is up, the reward being the picked RM's score); the router learns
        from every group this request completes. Returns (scores with None for NaN, RM name per response)."""
        from laser.integrations.routing_spec import row_task

        names, shared, n = list(self.rms), self.router, len(responses)
        groups = groups or [None] * n
        with self.lock:  # the router's state and the models: one request at a time
            plans = [shared.plan(p, p, g) for p, g in zip(prompts, groups, strict=True)]
            arms = [plan[0] for plan in plans]
            got: list[dict] = [{} for _ in range(n)]
            failed: set[int] = set()
            while True:
                todo = [(i, k) for i in range(n) for k in {arms[i], *plans[i]} if k not in got[i] and k not in failed]
                if not todo:
                    break
                for k in sorted({k for _, k in todo}):
                    idx = [i for i, kk in todo if kk == k]
                    try:
                        raw = self.rms[names[k]].score([prompts[i] for i in idx], [responses[i] for i in idx])
                        for i, v in zip(idx, check_scores(raw, len(idx), names[k]), strict=True):
                            got[i][k] = float(v)
                    except Exception as exc:  # masked by the core's rule; the rows go to another RM
                        failed.add(k)
                        for i in idx:
                            arms[i] = shared.fail(prompts[i], k, f"{type(exc).__name__}: {exc}")
            scores = np.array([got[i][arms[i]] for i in range(n)])
            for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
                task = row_task(shared.spec.task, groups[i])
                probe = got[i] if len(got[i]) > 1 else None
                shared.report(p, arms[i], r, float(scores[i]), labels[i], task, probe)
        return [None if np.isnan(v) else float(v) for v in scores], [names[k] for k in arms]


class _Handler(BaseHTTPRequestHandler):
    server: RMServer
    server_version = "laser-serve-rm"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # a client that stalls mid-request is dropped
        super().setup()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _route(self) -> tuple[str, str | None]:
        """The path and the ``rm`` query parameter; any other parameter is a 400."""
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"rm"})
        if unknown or len(query.get("rm", [])) > 1:
            raise _BadRequest(f"URL query {parts.query!r}: only one rm=NAME parameter is accepted")
        return parts.path, query["rm"][0] if "rm" in query else None

    def do_GET(self) -> None:
        try:
            route, url_rm = self._route()
            if route != "/health":
                raise _BadRequest(f"no route GET {self.path} (try GET /health, POST /score)", 404)
            reply = {"status": "ok", "rms": list(self.server.rms)}
            if self.server.router is not None:
                with self.server.lock:
                    reply["router"] = self.server.router.stats()
                    if self.server.refits is not None:
                        reply["router"]["refits"] = self.server.refits.counters()
            if url_rm is not None:
                reply = {"status": "ok", "rm": self.server.pick(None, url_rm)}
        except _BadRequest as exc:
            self._send(exc.status, {"error": str(exc)})
            return
        self._send(200, reply)

    def do_POST(self) -> None:
        try:
            route, url_rm = self._route()
        except _BadRequest as exc:
            self._send(exc.status, {"error": str(exc)})
            return
        if route not in ("/score", "/get_reward"):
            self._send(404, {"error": f"no route POST {self.path} (try /score or /get_reward)"})
            return
        try:
            body = self._read_json()
            name = self.server.pick(body.get("rm"), url_rm)
            if route == "/score":
                prompts = _strings(body, "prompts")
                responses = _strings(body, "responses")
                if len(prompts) != len(responses):
                    raise _BadRequest(
                        f'fields "prompts" and "responses" differ in length ({len(prompts)} vs {len(responses)})'
                    )
            else:
                prompts, responses = _split_queries(body)
            if len(responses) > self.server.max_batch:
                raise _BadRequest(
                    f"{len(responses)} responses exceed max_batch {self.server.max_batch}; send smaller batches", 413
                )
            labels = _labels(body, len(responses)) if name is None else None
            groups = _groups(body, self.server.router, len(responses)) if name is None else None
        except _BadRequest as exc:
            self._send(exc.status, {"error": str(exc)})
            return
        try:
            if name is None:
                scores, name = self.server.score_routed(prompts, responses, labels, groups)
            else:
                scores = self.server.score(name, prompts, responses)
        except Exception as exc:  # the RM's failure is the client's 500, the server lives on
            log.warning("reward model %r failed: %s", name, exc)
            what = f"reward model {name!r}" if name is not None else "routing"
            self._send(500, {"error": f"{what} failed: {type(exc).__name__}: {exc}"})
            return
        if route == "/score":
            self._send(200, {"scores": scores, "rm": name})
        else:
            self._send(200, {"rewards": scores, "scores": scores, "rm": name})

    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _BadRequest("a Content-Length header is required", 411)
        if int(length) > self.server.max_body_bytes:
            raise _BadRequest(f"body of {length} bytes exceeds {self.server.max_body_bytes}", 413)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest(f"body must be a JSON object, got {type(body).__name__}")
        return body

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj, allow_nan=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away before the answer was written")


def _strings(body: dict, field: str) -> list[str]:
    """``body[field]`` as a list of strings, or a 400 naming the field and the bad item."""
    if field not in body:
        raise _BadRequest(f'field "{field}" is missing (keys: {", ".join(sorted(body))})')
    items = body[field]
    if not isinstance(items, list):
        raise _BadRequest(f'field "{field}" must be a list of strings, got {type(items).__name__}')
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _BadRequest(f'field "{field}"[{i}] must be a string, got {type(item).__name__}')
    return items


def _labels(body: dict, n: int) -> list:
    """OpenRLHF's ``labels`` (gold answers; optional): one per response, a string or null."""
    labels = body.get("labels")
    if labels is None:
        return [None] * n
    if not isinstance(labels, list) or len(labels) != n:
        raise _BadRequest(f'field "labels" must be a list of {n} strings or nulls, one per response')
    bad = [i for i, x in enumerate(labels) if x is not None and not isinstance(x, (str, int, float))]
    if bad:
        raise _BadRequest(
            f'field "labels"[{bad[0]}] must be a string, a number or null, got {type(labels[bad[0]]).__name__}'
        )
    return [None if x is None else str(x) for x in labels]


def _groups(body: dict, router, n: int) -> list | None:
    """The group of each response: the body field ``router.group_key`` (one string for the request,
    or one string or null per response); absent: None (one group)."""
    key = router.spec.group_key
    value = body.get(key)
    if value is None or router.spec.selector != "reliability":
        return None
    if isinstance(value, (str, int)):
        return [str(value)] * n
    if not isinstance(value, list) or len(value) != n:
        raise _BadRequest(f'field "{key}" (router.group_key) must be a string or a list of {n} strings or nulls')
    bad = [i for i, x in enumerate(value) if x is not None and not isinstance(x, (str, int))]
    if bad:
        raise _BadRequest(f'field "{key}"[{bad[0]}] must be a string or null, got {type(value[bad[0]]).__name__}')
    return [None if x is None else str(x) for x in value]


def _split_queries(body: dict) -> tuple[list[str], list[str]]:
    """OpenRLHF sends ``query`` = prompt + response (some versions say ``queries``)."""
    field = "query" if "query" in body or "queries" not in body else "queries"
    queries = _strings(body, field)
    if body.get("prompts") is None:
        return [""] * len(queries), queries
    prompts = _strings(body, "prompts")
    if len(prompts) != len(queries):
        raise _BadRequest(f'fields "{field}" and "prompts" differ in length ({len(queries)} vs {len(prompts)})')
    pairs = [(p, q[len(p) :]) if q.startswith(p) else ("", q) for p, q in zip(prompts, queries, strict=True)]
    return [p for p, _ in pairs], [r for _, r in pairs]


def make_server(
    rms: Mapping[str, RewardModel] | Sequence[RewardModel] | RewardModel,
    host: str = "127.0.0.1",
    port: int = 0,
    max_batch: int = 4096,
    max_body_bytes: int = 64 * 1024 * 1024,
    request_timeout: float = 60.0,
    router=None,
) -> RMServer:
    """Build (and bind) a server for one or several reward models.

    Args:
        rms: one RM, a list of RMs (keyed by their ``name``), or a ``{name: rm}`` mapping.
        host: interface to bind; 127.0.0.1 by default because the API has no authentication.
        port: TCP port; 0 picks a free one (read it back from ``server.port``).
        max_batch: most responses accepted in one request (more gets HTTP 413).
        max_body_bytes: largest request body accepted (more gets HTTP 413).
        request_timeout: seconds a connection may stall while sending its request.
        router: a :class:`laser.integrations.grouped.SharedRouter` over these RMs (in this order):
            requests without an RM name are routed per prompt.

    Returns:
        The bound :class:`RMServer`; call ``serve_forever()`` to start answering.

    Raises:
        ValueError: no RMs, or two RMs with the same name.
    """
    if isinstance(rms, Mapping):
        table = dict(rms)
    else:
        items = [rms] if not isinstance(rms, (list, tuple)) else list(rms)
        names = [rm.name for rm in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate reward model names: {', '.join(dup)}")
        table = dict(zip(names, items, strict=True))
    if not table:
        raise ValueError("make_server needs at least one reward model")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if router is not None and router.router.names != list(table):
        raise ValueError(f"the router's arms {router.router.names} are not the served RMs {list(table)}")
    return RMServer(table, host, port, max_batch, max_body_bytes, request_timeout, router)


def server_from_config(config_path: str, port: int = 0, host: str = "127.0.0.1") -> RMServer:
    """Build (and bind) a server for the reward models listed in a YAML config.

    The YAML holds a top-level ``rewards:`` list of RM specs, built by
    ``laser.rewards.factory.build_reward_models``, and optionally a ``router:`` section
    (:class:`laser.integrations.routing_spec.RoutingSpec`; ``task`` is required for a bandit, ``group_size`` is the
    trainer's samples per prompt, ``state_dir`` defaults to ``<config stem>_router/`` beside the
    config). The whole file is checked before any model loads.

    Raises:
        FileNotFoundError: the config file does not exist.
        laser.config.ConfigError: every problem of the file (unknown keys, RM specs, router keys).
    """
    from pathlib import Path

    import yaml

    from laser.config import ConfigError
    from laser.integrations.grouped import SharedRouter
    from laser.integrations.routing_spec import check_config

    with open(config_path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    routed = isinstance(cfg, dict) and "router" in cfg
    default_dir = str(Path(config_path).resolve().with_name(Path(config_path).stem + "_router"))
    specs, spec, problems = check_config(cfg, routed, state_dir=default_dir)
    if spec is not None and spec.task in (None, "auto") and spec.selector != "reliability":
        problems.append(
            "router.task: required by serve-rm: the answer format (gsm8k, mmlu, ...) that labels "
            "and majority answers are checked in"
        )
    if problems:
        raise ConfigError(problems, config_path)
    from laser.rewards.factory import build_reward_models  # heavy backends load only here

    rms = build_reward_models(specs)
    router = SharedRouter([rm.name for rm in rms], asdict(spec), rms=rms) if spec is not None else None
    return make_server(rms, host=host, port=port, router=router)


def serve_rm_main(config_path: str, port: int, host: str = "127.0.0.1") -> None:
    """Serve the reward models of a YAML config until interrupted (``laser serve-rm``).

    Args:
        config_path: YAML file with a top-level ``rewards:`` list of RM specs.
        port: TCP port to listen on.
        host: interface to bind; keep 127.0.0.1 unless the network is trusted.

    Raises:
        FileNotFoundError, ValueError: see :func:`server_from_config`.
    """
    server = server_from_config(config_path, port, host)
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>`: every thread's stack to stderr (a server that hangs)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: the API has no authentication", host)
    print(
        f"serving reward models {list(server.rms)} on {server.url} "
        "(GET /health, POST /score, POST /get_reward); Ctrl-C stops",
        flush=True,
    )
    if server.router is not None:
        r = server.router
        learns = (
            f"groups by request field {r.spec.group_key!r}"
            if r.spec.selector == "reliability"
            else f"feedback {r.spec.feedback}"
        )
        print(
            f"  routed ({r.spec.selector}, {learns}, groups of {r.spec.group_size}): "
            f"{server.url}/get_reward  state: {r.root}"
            f"{f' (resumed from {r.resumed_from.name})' if r.resumed_from else ''}",
            flush=True,
        )
    for name in server.rms:
        quoted = urllib.parse.quote(name, safe="")
        print(f"  {name}: {server.url}/score?rm={quoted}  (OpenRLHF: {server.url}/get_reward?rm={quoted})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
