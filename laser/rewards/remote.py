"""A reward model served over HTTP: timeouts, bounded retries, schema checks, circuit breaker.

``RemoteRM`` implements the RewardModel protocol by POSTing to a server (``laser serve-rm`` or
any server speaking the same JSON, or an OpenRLHF-style ``/get_reward`` endpoint). What a caller
may rely on:

* every request has an explicit connect timeout and read timeout (and, optionally, a deadline for
  the whole ``score()`` call, retries included);
* transport failures (timeout, refused or reset connection), HTTP 5xx and HTTP 429 are retried at
  most ``max_retries`` times with exponential backoff and seeded jitter; other 4xx are not retried;
* a 200 answer whose body is not a JSON object holding exactly one finite number or null per
  response is a failure too. It is *not* retried: a server that answered 200 with the wrong
  payload gives the same payload again (a truncated body is a transport error and is retried);
* after the attempts are spent, ``score()`` raises :class:`RewardModelUnavailable` naming the
  endpoint and the last error; after ``breaker_failures`` consecutive failed calls the circuit
  opens and ``available()`` turns False until ``breaker_cooldown`` seconds have passed.

See docs/remote_rm.md for the breaker's state machine and the wire format.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
import urllib.parse
from typing import Callable, Sequence

import numpy as np

from laser.rewards.base import RewardModelError

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_ROUTES = {"laser": ("/score", "scores"), "openrlhf": ("/get_reward", "rewards")}


class RewardModelUnavailable(RewardModelError):
    """A remote reward model could not be reached or answered badly, after its retries."""


class ScoreSchemaError(ValueError):
    """A server's answer is not a JSON object holding one finite number or null per response."""


class _AttemptError(Exception):
    """One failed HTTP attempt: its message, whether retrying may help, and any Retry-After."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def parse_scores(body: bytes, n: int, key: str = "scores") -> np.ndarray:
    """Decode a server's JSON answer into a float64 score vector.

    Args:
        body: the raw response body.
        n: the number of responses that were sent.
        key: the field holding the list ("scores" for the laser API, "rewards" for OpenRLHF).

    Returns:
        float64 array of shape ``(n,)``; JSON ``null`` (and the non-standard ``NaN`` literal that
        Python's json module writes) become NaN, meaning "unscorable".

    Raises:
        ScoreSchemaError: malformed JSON, not an object, missing ``key``, wrong count, or an item
            that is not a finite number or null (booleans and strings are rejected).
    """
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScoreSchemaError(f"response is not valid JSON ({exc}); body starts {body[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ScoreSchemaError(f"response JSON is a {type(obj).__name__}, expected an object")
    if key not in obj:
        raise ScoreSchemaError(f"response has no key {key!r} (keys: {', '.join(sorted(obj))})")
    items = obj[key]
    if not isinstance(items, list):
        raise ScoreSchemaError(f"{key!r} is a {type(items).__name__}, expected a list")
    if len(items) != n:
        raise ScoreSchemaError(f"{key!r} has {len(items)} items for {n} responses")
    out = np.empty(n, dtype=np.float64)
    for i, v in enumerate(items):
        if v is None:
            out[i] = np.nan
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ScoreSchemaError(f"{key}[{i}] is {v!r} ({type(v).__name__}), expected a number or null")
        elif math.isinf(v):
            raise ScoreSchemaError(f"{key}[{i}] is {v}; scores must be finite or null")
        else:
            out[i] = float(v)
    return out


class RemoteRM:
    """Client for a reward model behind HTTP, with retries and a circuit breaker.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``. With no path the route is chosen by
            ``api`` (``/score`` or ``/get_reward``); a URL with a path is used as given.
        name: the arm's name in logs and configs.
        connect_timeout: seconds allowed to open the TCP connection.
        read_timeout: seconds allowed for each socket read while waiting for the answer.
        max_retries: extra attempts per request after the first (0 = no retry).
        backoff_base: delay before retry k (k = 0, 1, ...) is ``backoff_base * 2**k`` seconds ...
        backoff_max: ... capped at ``backoff_max`` ...
        jitter: ... times a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` (in [0, 1]).
            A server's ``Retry-After`` (seconds) raises the delay, still capped at ``backoff_max``.
        deadline: optional budget in seconds for one ``score()`` call, retries and backoff
            included; no attempt or sleep starts past it, and timeouts shrink to fit it.
        breaker_failures: consecutive failed ``score()`` calls that open the circuit.
        breaker_cooldown: seconds the circuit stays open before one trial call is let through.
        batch_size: send at most this many responses per request (None = all in one request).
        api: ``"laser"`` (``{"prompts", "responses"} -> {"scores"}``) or ``"openrlhf"``
            (``{"query": prompt + response, "prompts"} -> {"rewards"}``).
        seed: seed of the owned random generator used for jitter.
        server_rm: name of the RM to use when the server serves several (sent as ``"rm"``;
            OpenRLHF's own server ignores it).
        sleep: function used to wait between retries (inject a fake one in tests).
        clock: monotonic clock in seconds (inject a fake one in tests).

    Attributes:
        last_error: the most recent failure's message, None after a successful call.
        n_requests: HTTP attempts made (refused connections included).
        n_retries: attempts beyond the first of each request.
        n_failures: ``score()`` calls that reached the network and failed.
        n_rejected: ``score()`` calls refused at once because the circuit was open.
    """

    def __init__(
        self,
        url: str,
        name: str,
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        jitter: float = 0.25,
        deadline: float | None = None,
        breaker_failures: int = 3,
        breaker_cooldown: float = 30.0,
        batch_size: int | None = None,
        api: str = "laser",
        seed: int = 0,
        server_rm: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        _check_args(locals())
        self.url, self.name, self.api, self.server_rm = url, name, api, server_rm
        self.connect_timeout, self.read_timeout, self.deadline = connect_timeout, read_timeout, deadline
        self.max_retries, self.backoff_base, self.backoff_max = max_retries, backoff_base, backoff_max
        self.jitter, self.batch_size, self.seed = jitter, batch_size, seed
        self.breaker_failures, self.breaker_cooldown = breaker_failures, breaker_cooldown
        self._sleep, self._clock = sleep, clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        parts = urllib.parse.urlsplit(url)
        route, self._key = _ROUTES[api]
        path = parts.path if parts.path not in ("", "/") else route
        self._path = path + (f"?{parts.query}" if parts.query else "")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._https else 80)
        self.endpoint = f"{parts.scheme}://{parts.netloc}{self._path}"
        self.last_error: str | None = None
        self.n_requests = self.n_retries = self.n_failures = self.n_rejected = 0
        self._consecutive_failures = 0
        self._opened_at: float | None = None  # None = circuit closed
        self._trial_running = False

    # ---- circuit breaker -------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"closed"``, ``"open"``, or ``"half_open"`` (cooldown over or trial call running)."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._trial_running or self._clock() - self._opened_at >= self.breaker_cooldown:
                return "half_open"
            return "open"

    def available(self) -> bool:
        """Whether ``score()`` would try the network now (False while the circuit is open)."""
        with self._lock:
            if self._opened_at is None:
                return True
            return not self._trial_running and self._clock() - self._opened_at >= self.breaker_cooldown

    def _enter(self) -> bool:
        """Admit a call: returns whether it is the half-open trial; raises if the circuit is open."""
        with self._lock:
            if self._opened_at is None:
                return False
            waited = self._clock() - self._opened_at
            if self._trial_running or waited < self.breaker_cooldown:
                self.n_rejected += 1
                why = (
                    "a trial call is running"
                    if self._trial_running
                    else (f"retry in {self.breaker_cooldown - waited:.1f} s")
                )
                raise RewardModelUnavailable(
                    f"remote reward model {self.name!r} at {self.endpoint}: circuit open after "
                    f"{self._consecutive_failures} consecutive failed calls ({why}); "
                    f"last error: {self.last_error}"
                )
            self._trial_running = True
            return True

    def _leave(self, ok: bool, error: str | None) -> None:
        with self._lock:
            self._trial_running = False
            if ok:
                self._consecutive_failures, self._opened_at, self.last_error = 0, None, None
            if ok or error is None:
                return
            self.n_failures += 1
            self._consecutive_failures += 1
            self.last_error = error
            if self._opened_at is not None or self._consecutive_failures >= self.breaker_failures:
                self._opened_at = self._clock()  # trial failed, or threshold reached: (re)open

    # ---- scoring -----------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each (prompt, response) pair on the server.

        Returns:
            float64 array of shape ``(len(responses),)``; NaN where the server returned null.

        Raises:
            ValueError: ``prompts`` and ``responses`` differ in length (a caller bug; not sent).
            RewardModelUnavailable: the circuit is open, or a request failed after its retries
                (or, in the half-open trial, after its single attempt). The message names the
                endpoint and the last error.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if len(responses) == 0:
            return np.empty(0, dtype=np.float64)
        trial = self._enter()
        ok, error = False, None
        try:
            start = self._clock()
            until = None if self.deadline is None else start + self.deadline
            size = self.batch_size or len(responses)
            parts = [
                self._request(list(prompts[i : i + size]), list(responses[i : i + size]), until, trial)
                for i in range(0, len(responses), size)
            ]
            ok = True
            return np.concatenate(parts)
        except RewardModelUnavailable as exc:
            error = str(exc)
            raise
        except Exception as exc:  # a bug: counted as a failure so the breaker stays sane
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:  # error stays None on KeyboardInterrupt: only the trial flag is cleared
            self._leave(ok, error)

    def _request(self, prompts: list[str], responses: list[str], until: float | None, trial: bool) -> np.ndarray:
        """One request with its retries; returns the scores or raises RewardModelUnavailable."""
        if self.api == "laser":
            payload = {"prompts": prompts, "responses": responses}
        else:
            payload = {"query": [p + r for p, r in zip(prompts, responses, strict=True)], "prompts": prompts}
        if self.server_rm is not None:
            payload["rm"] = self.server_rm
        body = json.dumps(payload).encode()
        attempts = 1 if trial else self.max_retries + 1
        for k in range(attempts):
            if k > 0:
                with self._lock:
                    self.n_retries += 1
            try:
                return self._attempt(body, len(responses), until)
            except _AttemptError as exc:
                err = exc
            with self._lock:
                self.last_error = str(err)
            if not err.retryable or k == attempts - 1:
                break
            delay = self._backoff(k, err.retry_after)
            if until is not None and self._clock() + delay >= until:
                err = _AttemptError(f"{err}; deadline of {self.deadline} s leaves no time to retry", False)
                break
            self._sleep(delay)
        raise RewardModelUnavailable(
            f"remote reward model {self.name!r} at {self.endpoint} failed after {k + 1} "
            f"attempt(s){' (half-open trial)' if trial else ''}: {err}"
        )

    def _backoff(self, k: int, retry_after: float | None) -> float:
        """Delay before retry k+1: exponential, jittered, raised to Retry-After, capped."""
        with self._lock:
            u = self._rng.random()
        delay = min(self.backoff_max, self.backoff_base * 2.0**k) * (1.0 + self.jitter * (2.0 * u - 1.0))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(max(delay, 0.0), self.backoff_max)

    def _attempt(self, body: bytes, n: int, until: float | None) -> np.ndarray:
        """One HTTP POST; returns scores or raises _AttemptError saying whether to retry."""
        connect_t, read_t = self.connect_timeout, self.read_timeout
        if until is not None:
            left = until - self._clock()
            if left <= 0:
                raise _AttemptError(f"deadline of {self.deadline} s exceeded", False)
            connect_t, read_t = min(connect_t, left), min(read_t, left)
        with self._lock:
            self.n_requests += 1
        status, data, retry_after = self._post(body, connect_t, read_t)
        if status == 200:
            try:
                return parse_scores(data, n, self._key)
            except ScoreSchemaError as exc:
                raise _AttemptError(f"malformed response: {exc}", retryable=False) from None
        retryable = status == 429 or status >= 500
        raise _AttemptError(f"HTTP {status}: {_error_text(data)}", retryable, retry_after)

    def _post(self, body: bytes, connect_t: float, read_t: float) -> tuple[int, bytes, float | None]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=connect_t)
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise _AttemptError(f"connect timed out after {connect_t:g} s", True) from None
            except OSError as exc:
                raise _AttemptError(f"cannot connect: {_os_text(exc)}", True) from None
            conn.sock.settimeout(read_t)
            try:
                conn.request(
                    "POST",
                    self._path,
                    body=body,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                )
                resp = conn.getresponse()
                data = resp.read(MAX_RESPONSE_BYTES + 1)
            except TimeoutError:
                raise _AttemptError(f"read timed out after {read_t:g} s", True) from None
            except (OSError, http.client.HTTPException) as exc:
                raise _AttemptError(f"connection failed: {_os_text(exc)}", True) from None
            if len(data) > MAX_RESPONSE_BYTES:
                raise _AttemptError(f"response larger than {MAX_RESPONSE_BYTES} bytes", False)
            return resp.status, data, _retry_after(resp.getheader("Retry-After"))
        finally:
            conn.close()

    def stats(self) -> dict:
        """Counters and breaker state, for a step's log record."""
        with self._lock:
            counts = {k: getattr(self, k) for k in ("n_requests", "n_retries", "n_failures", "n_rejected")}
        return {"endpoint": self.endpoint, "state": self.state, "last_error": self.last_error, **counts}

    def __repr__(self) -> str:
        return f"RemoteRM(name={self.name!r}, endpoint={self.endpoint!r}, state={self.state!r})"


def _check_args(a: dict) -> None:
    """Validate constructor arguments, reporting every problem at once."""
    bad = []
    parts = urllib.parse.urlsplit(a["url"])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        bad.append(f"url {a['url']!r} must look like http://host:port")
    if a["api"] not in _ROUTES:
        bad.append(f"api {a['api']!r} must be one of {sorted(_ROUTES)}")
    for key in ("connect_timeout", "read_timeout", "breaker_cooldown", "backoff_max"):
        if not a[key] > 0:
            bad.append(f"{key} must be > 0, got {a[key]}")
    if a["backoff_base"] < 0:
        bad.append(f"backoff_base must be >= 0, got {a['backoff_base']}")
    if not 0.0 <= a["jitter"] <= 1.0:
        bad.append(f"jitter must be in [0, 1], got {a['jitter']}")
    if a["max_retries"] < 0:
        bad.append(f"max_retries must be >= 0, got {a['max_retries']}")
    if a["breaker_failures"] < 1:
        bad.append(f"breaker_failures must be >= 1, got {a['breaker_failures']}")
    if a["deadline"] is not None and not a["deadline"] > 0:
        bad.append(f"deadline must be > 0 or None, got {a['deadline']}")
    if a["batch_size"] is not None and a["batch_size"] < 1:
        bad.append(f"batch_size must be >= 1 or None, got {a['batch_size']}")
    if bad:
        raise ValueError(f"RemoteRM({a['name']!r}): " + "; ".join(bad))


def _error_text(data: bytes) -> str:
    """The server's {"error": ...} message, or the start of the body."""
    try:
        obj = json.loads(data)
        if isinstance(obj, dict) and "error" in obj:
            return str(obj["error"])[:300]
    except ValueError:
        pass
    return repr(data[:200]) if data else "(empty body)"


def _os_text(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the HTTP-date form is ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
