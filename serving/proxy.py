"""A small HTTP reverse proxy that holds a deployment's stable port during zero-downtime updates.

Every request is forwarded to the current upstream (a scoring service) over pooled keep-alive
connections. An admin call switches the upstream atomically: new requests go to the new upstream
at once, and the call returns only after the requests still in flight on the old one have
completed (drain), so the caller can then stop the old service without failing a request.

Beside that primary upstream, two optional routes let a challenger prove itself on live traffic:

* canary: each request goes to the canary upstream with probability percent/100. With a sticky
  header configured and present, the choice is a stable hash of its value into 10,000 buckets
  (blake2b, not Python's salted hash()): one client stays on one version while the percent is
  unchanged, and raising the percent only moves clients onto the canary, never off it.
* shadow: percent of live POST /invocations requests are copied to the shadow upstream after the
  live answer has been sent, on background tasks bounded by MLOPS_SERVING_PROXY_SHADOW_MAX_PENDING
  (when full, the copy is dropped and counted). The shadow's answer is discarded: its slowness or
  failure never reaches the client. The copy carries `X-Shadow-Of: <the live answer's
  X-Request-ID>`, and the scoring service captures it under that id, so the two records join.

Every forwarded answer names the version that served it in `X-Model-Version` when that route's
version is known (the scoring service does not send that header itself; one it sends is kept).

Run it:  python -m mlops_pipeline.serving.proxy [--host H] [--port P] [--upstream URL]

Environment (`ProxySettings` in serving/settings.py; command-line options win):
  MLOPS_SERVING_PROXY_HOST        bind address (default 127.0.0.1; 0.0.0.0 in containers)
  MLOPS_SERVING_PROXY_PORT        stable port (default 8080)
  MLOPS_SERVING_PROXY_UPSTREAM    initial upstream base URL, e.g. http://127.0.0.1:41234
  MLOPS_SERVING_PROXY_ADMIN_PORT  serve the admin API (all of /-/proxy/ but ping) on this port
                                  only, and answer it 404 on the stable port (default: unset,
                                  both on the stable port)
  MLOPS_SERVING_PROXY_TOKEN       admin bearer token (or MLOPS_SERVING_PROXY_TOKEN_FILE: a file
                                  holding it, re-read when it changes; its folder must exist);
                                  without one the admin API answers 403
  MLOPS_SERVING_PROXY_VERSION     the initial upstream's version label
  MLOPS_SERVING_PROXY_ROUTES      initial canary/shadow routes as JSON (the PUT /-/proxy/routes
                                  body's canary, shadow and sticky_header), read once at start;
                                  invalid routes are logged and the proxy serves without them
  MLOPS_SERVING_PROXY_STATE_FILE  optional file where the upstream, its version and the canary
                                  and shadow routes are persisted on every change and read back
                                  at start, so a restarted proxy keeps them
  MLOPS_SERVING_PROXY_TIMEOUT     seconds to wait for an upstream response (default 120)
  MLOPS_SERVING_PROXY_SHADOW_MAX_PENDING, _SHADOW_MAX_PENDING_BYTES, _SHADOW_TIMEOUT,
  _STATS_SAMPLES: see ProxySettings

Health, as a client of the stable port sees it:
  GET /health/live        200 "ok", answered by the proxy itself and never forwarded: the
                          liveness of the process that owns the port. An upstream that is
                          loading, restarting or being switched must not get the proxy killed.
  GET /ping, GET /ready   forwarded: the active scoring service answers whether it can score.
  The liveness of a scoring service is asked of the service itself, on its own port.

Only scoring calls (POST /invocations) are split between primary and canary and counted in the
stats; every other request (probes, /version, POST /feedback) goes to the primary uncounted, so
nothing else dilutes a canary's figures. A feedback label stored by the primary still joins a
request the canary answered: the monitor joins labels on the request id across versions.

Metrics: GET /metrics on the stable port is answered by the proxy: the primary scoring
service's own exposition (omitted while it does not answer), then the proxy's series labelled by
route and the model_version that served each request (`Proxy.exposition`), so one scrape sees
the champion and the canary side by side.

Admin API (header `Authorization: Bearer <token>`, or `X-MLOps-Proxy-Token: <token>` where a
gateway in between consumes Authorization, as the Kubernetes API server's pod proxy does; paths
under /-/proxy/ are never forwarded; an invalid body is a 400 whose one-line message names the
field and the value):
  GET /-/proxy/ping       200 "ok" (no token; the same as /health/live)
  GET /-/proxy/upstream   {"upstream": url, "in_flight": {url: n}}
  PUT /-/proxy/upstream   body {"upstream": url, "version": "3", "drain_timeout": 30,
                          "check_ready": true} ("version" optional: the label of the new primary)
                          -> 200 {"previous", "upstream", "version", "drained", "in_flight_left",
                          "drain_seconds"}; 409 when check_ready is on and url/ready is not 200.
                          Switching to the canary's upstream also removes the canary route (and
                          takes its version when none is given): that is how a canary is
                          promoted to 100 %.
  GET /-/proxy/routes     {"primary": {"upstream", "version"}, "canary": {"upstream", "percent",
                          "version"} | null, "shadow": {...} | null, "sticky_header": str | null}
  PUT /-/proxy/routes     body with any of {"canary": {"upstream": url, "percent": 10,
                          "version": "2"} | null, "shadow": {"upstream": url, "percent": 100,
                          "version": "3"} | null, "sticky_header": "X-Client-ID" | null,
                          "check_ready": true, "drain_timeout": 30}: a key that is present
                          replaces that route (null removes it), an absent one is left as it is;
                          the canary's percent is required, the shadow's defaults to 100.
                          -> 200 the routes plus {"drained", "in_flight_left", "drain_seconds"}
                          (the requests in flight on an upstream no route uses any more are
                          drained first); 409 when a new upstream's /ready is not 200.
  GET /-/proxy/stats      ?window=60 (seconds, default 60) -> {"window_seconds", "stats": [{
                          "route", "version", "upstream", "requests", "errors", "error_rate",
                          "client_errors", "p50_ms", "p95_ms", "p95_low_ms", "p95_high_ms",
                          "complete", "dropped",
                          "total_requests", "total_errors", "total_client_errors",
                          "total_dropped"}]}: per route (primary, canary,
                          shadow) and version, the requests that finished within the window
                          (errors: 5xx answers, connection failures and timeouts; client_errors:
                          4xx answers, e.g. the 422 of a model that raises; latency from
                          the body read to the last byte sent, or to the shadow's answer). Each
                          route and version keeps its last MLOPS_SERVING_PROXY_STATS_SAMPLES
                          requests; "complete" is false when the window reaches further back
                          than those. "dropped" counts shadow copies dropped on a full queue.
                          p95_low_ms / p95_high_ms: one-sided 95 % confidence bounds of the
                          p95 (`quantile_bounds`; null when too few requests for one).

This module ships in model images: it imports only the standard library, pydantic-settings,
httptools and (when installed) uvloop, never prefect or the mlops core. The HTTP plumbing is
serving/relay.py: httptools parsing and asyncio transports on both sides, no ASGI server and no
client library, because their per-request Python was most of the proxy's added latency
(BENCHMARKS.md, "Proxy: canary and shadow routes"). On SIGTERM it stops accepting, lets the
requests in progress finish (up to 30 s), and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from .latency import LATENCY_BUCKETS
from .relay import (
    ClientConnection,
    Exchange,
    Request,
    UpstreamError,
    UpstreamPool,
    chunk,
    fetch,
    request_bytes,
    simple_response,
    status_line,
)
from .settings import PROXY_ENV_PREFIX, ProxySettings, env_name

logger = logging.getLogger("serving.proxy")

ADMIN_PREFIX = "/-/proxy/"
LIVENESS_PATH = "/health/live"
METRICS_PATH = "/metrics"
SCORING_PATH = "/invocations"
VERSION_HEADER = b"x-model-version"
REQUEST_ID_HEADER = b"x-request-id"
TOKEN_HEADER = b"x-mlops-proxy-token"  # the admin token where Authorization cannot carry it
SHADOW_HEADER = b"x-shadow-of"
PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"
BUCKETS = 10_000  # sticky routing resolution: a percent step of 0.01
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
# A client's own X-Shadow-Of is dropped: only the proxy marks a copy as a shadow.
_REQUEST_DROP = HOP_BY_HOP | {SHADOW_HEADER}
_RESPONSE_DROP = HOP_BY_HOP - {b"content-length"}
_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
_VERSION = re.compile(r"^[\x21-\x7e]{1,128}$")  # visible ASCII: safe in a response header
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")  # an HTTP header name
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
_ROUTE_KEYS = ("upstream", "percent", "version")
_ROUTES_KEYS = ("canary", "shadow", "sticky_header", "check_ready", "drain_timeout")
MAX_STATS_KEYS = 16  # (route, version) pairs kept; the oldest one no route uses goes first


_JSON = b"application/json"
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_ADMIN_ELSEWHERE = _error_body(
    "not_found", "The admin API is served on the proxy's admin port, not this one."
)


class InvalidInput(ValueError):
    """An admin request body that cannot be used; the message names the field and the value."""


@dataclass(frozen=True, slots=True)
class Route:
    """A canary or shadow route: an upstream base URL, its share of traffic and its version."""

    upstream: str
    percent: float
    version: str | None = None


def sticky_bucket(value: bytes) -> int:
    """The stable bucket (0..9999) of a sticky header value: the same in every process."""
    digest = hashlib.blake2b(value, digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def parse_route(field: str, value: Any, default_percent: float | None) -> Route | None:
    """A `Route` from an admin body's `field`; None for null.

    Raises:
        InvalidInput: not an object, an unknown key, or a bad upstream, percent or version.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{field}: {_show(value)} is not an object like "
            '{"upstream": "http://host:port", "percent": 10, "version": "2"}, nor null.'
        )
    unknown = sorted(set(value) - set(_ROUTE_KEYS))
    if unknown:
        raise InvalidInput(f"{field}.{unknown[0]}: unknown field; use {', '.join(_ROUTE_KEYS)}.")
    upstream = value.get("upstream")
    if not isinstance(upstream, str) or not _URL.match(upstream):
        raise InvalidInput(
            f"{field}.upstream: {_show(upstream)} is not an http(s)://host:port URL."
        )
    percent = value.get("percent", default_percent)
    if (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not math.isfinite(percent)
        or not 0 <= percent <= 100
    ):
        raise InvalidInput(f"{field}.percent: {_show(percent)} is not a number from 0 to 100.")
    return Route(upstream.rstrip("/"), float(percent), parse_version(f"{field}.version", value))


def parse_version(field: str, body: dict[str, Any]) -> str | None:
    """The optional "version" of a body: 1-128 visible ASCII characters, or None."""
    version = body.get("version")
    if version is None:
        return None
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidInput(
            f"{field}: {_show(version)} is not a version label (1-128 visible ASCII characters)."
        )
    return version


def parse_sticky_header(value: Any) -> str | None:
    """A sticky header name (an HTTP token, not a hop-by-hop header), or None."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not _TOKEN.match(value)
        or value.lower().encode() in _REQUEST_DROP
    ):
        raise InvalidInput(
            f"sticky_header: {_show(value)} is not a header name a client can send "
            "(like X-Client-ID), nor null."
        )
    return value


def quantile_bounds(
    ordered: list[float], q: float, alpha: float = 0.05
) -> tuple[float | None, float | None]:
    """Distribution-free one-sided (1 - alpha) confidence bounds for the q-quantile of the
    population `ordered` (ascending, n values) was drawn from.

    The number of draws below the true quantile is Binomial(n, q), so the order statistic of
    rank l is a lower bound with confidence 1 - alpha when P(Binomial(n, q) <= l - 1) <= alpha,
    and rank u an upper bound when P(Binomial(n, q) <= u - 1) >= 1 - alpha (Conover,
    "Practical Nonparametric Statistics", 3rd ed., section 3.2). Returns (lower, upper); a side
    is None when n is too small for it (q 0.95, alpha 0.05: no upper bound below 59 values, no
    lower bound for 1).
    """
    n = len(ordered)
    if n == 0:
        return None, None
    # the binomial's mass outside 12 standard deviations of n*q is below 1e-30: skip it
    spread = 12 * math.sqrt(n * q * (1 - q)) + 1
    first, last = max(0, math.floor(n * q - spread)), min(n, math.ceil(n * q + spread))
    log_q, log_p, log_n = math.log(q), math.log1p(-q), math.lgamma(n + 1)
    cdf, total = [], 0.0  # cdf[i] = P(Binomial(n, q) <= first + i)
    for k in range(first, last + 1):
        total += math.exp(
            log_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_q + (n - k) * log_p
        )
        cdf.append(total)
    low_rank = first + bisect.bisect_right(cdf, alpha)  # ranks 1..low_rank qualify
    high_rank = first + bisect.bisect_left(cdf, 1 - alpha) + 1
    lower = ordered[low_rank - 1] if low_rank >= 1 else None
    upper = ordered[high_rank - 1] if high_rank <= n else None
    return lower, upper


class RouteStats:
    """Counts and the recent requests of one route and version, bounded in memory."""

    __slots__ = (
        "requests",
        "errors",
        "client_errors",
        "dropped",
        "samples",
        "drops",
        "last",
        "buckets",
        "seconds",
    )

    def __init__(self, samples: int) -> None:
        self.requests = 0
        self.errors = 0
        self.client_errors = 0
        self.dropped = 0
        # since start, for /metrics: requests per LATENCY_BUCKETS bound (not cumulative; the
        # last slot is above every bound) and their summed seconds
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0
        self.last = time.monotonic()
        # (finished at, seconds, error, client error) of the last `samples` requests; drop
        # times likewise
        self.samples: collections.deque[tuple[float, float, bool, bool]] = collections.deque(
            maxlen=samples
        )
        self.drops: collections.deque[float] = collections.deque(maxlen=samples)

    def add(self, finished: float, seconds: float, error: bool, client_error: bool) -> None:
        self.requests += 1
        self.errors += error
        self.client_errors += client_error
        self.last = finished
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds
        self.samples.append((finished, seconds, error, client_error))

    def drop(self, now: float) -> None:
        self.dropped += 1
        self.last = now
        self.drops.append(now)

    def summary(self, window: float, now: float) -> dict[str, Any]:
        since = now - window
        recent = [s for s in self.samples if s[0] >= since]
        latencies = sorted(s[1] for s in recent)
        errors = sum(1 for s in recent if s[2])
        client_errors = sum(1 for s in recent if s[3])

        def pct(q: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)

        full = len(self.samples) == self.samples.maxlen
        low, high = quantile_bounds(latencies, 0.95)
        return {
            "requests": len(recent),
            "errors": errors,
            "error_rate": round(errors / len(recent), 6) if recent else None,
            "client_errors": client_errors,
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            # 95 % confidence bounds of the p95: a canary judged on a few dozen requests
            "p95_low_ms": None if low is None else round(low * 1000, 3),
            "p95_high_ms": None if high is None else round(high * 1000, 3),
            "complete": not (full and self.samples[0][0] >= since),
            "dropped": sum(1 for t in self.drops if t >= since),
            "total_requests": self.requests,
            "total_errors": self.errors,
            "total_client_errors": self.client_errors,
            "total_dropped": self.dropped,
        }


class TokenFile:
    """The admin token held in a file, re-read when the file changes.

    A Kubernetes Secret volume swaps in a rotated Secret without restarting the pod, so the
    token is looked up on every admin call (one stat; the file is read only when its inode,
    mtime or size changed). A missing or empty file means no token: the admin API answers 403
    until it appears.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._token: str | None = None

    def get(self) -> str | None:
        """The token now, or None."""
        try:
            found = os.stat(self.path)
            seen = (found.st_ino, found.st_mtime_ns, found.st_size)
            if seen != self._seen:
                self._token = self.path.read_text().strip() or None
                self._seen = seen
        except OSError as exc:
            if self._seen is not None or self._token is not None:
                logger.warning("admin token file %s unreadable (%s): admin API off", self.path, exc)
            self._seen = self._token = None
        return self._token


def admin_token(settings: ProxySettings) -> str | TokenFile | None:
    """The admin token from `settings`: the token itself, else its file; None turns the admin
    API off.

    Raises:
        FileNotFoundError: the token file's folder does not exist (a typo, not a Secret still
        to come: a Secret volume's folder exists even while the Secret does not).
    """
    if settings.token is not None and settings.token.get_secret_value():
        return settings.token.get_secret_value()
    if settings.token_file is None:
        return None
    if not settings.token_file.parent.is_dir():
        raise FileNotFoundError(f"no folder {settings.token_file.parent}")
    tokens = TokenFile(settings.token_file)
    if tokens.get() is None:
        logger.warning("admin token file %s is missing or empty: admin API off", tokens.path)
    return tokens


class Proxy:
    """ASGI app: forward to the primary or canary upstream, mirror to the shadow; admin routes
    switch, change the routes, drain, and report per-version counts."""

    def __init__(
        self,
        upstream: str | None,
        token: str | TokenFile | None,
        *,
        timeout: float = 120.0,
        state_file: Path | None = None,
        shadow_max_pending: int = 64,
        shadow_max_pending_bytes: int = 32 * 1024 * 1024,
        shadow_timeout: float = 10.0,
        stats_samples: int = 10_000,
        version: str | None = None,
        routes: dict[str, Any] | None = None,
        admin_port: int | None = None,
    ) -> None:
        self.state_file = state_file
        self.admin_port = admin_port
        self.version: str | None = None
        self.canary: Route | None = None
        self.shadow: Route | None = None
        self.sticky_header: str | None = None
        self._sticky: bytes | None = None
        if state_file is not None and state_file.is_file():
            state = json.loads(state_file.read_text())
            upstream = state.get("upstream") or upstream
            self._load_routes(state, str(state_file))
        elif version is not None or routes:
            self._load_routes(
                {**(routes or {}), "version": version}, env_name("routes", PROXY_ENV_PREFIX)
            )
        self.upstream = upstream.rstrip("/") if upstream else None
        self.token = token
        self.timeout = timeout
        self.shadow_max_pending = shadow_max_pending
        self.shadow_max_pending_bytes = shadow_max_pending_bytes
        self._shadow_bytes = 0
        self.shadow_timeout = shadow_timeout
        self.stats_samples = stats_samples
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.loop: asyncio.AbstractEventLoop
        self.pool: UpstreamPool
        self.shadow_pool: UpstreamPool
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._stats: dict[tuple[str, str | None], RouteStats] = {}
        self._stats_upstream: dict[tuple[str, str | None], str] = {}
        self._switch_lock = asyncio.Lock()

    def _load_routes(self, state: dict[str, Any], source: str) -> None:
        """Version and routes from `source` (the state file, or the start-up settings); a state
        file from before routes existed has none."""
        # the version label is parsed on its own, so bad routes never cost the primary its label
        try:
            self.version = parse_version("version", state)
        except InvalidInput as exc:
            logger.warning("%s: %s; starting without a version label", source, exc)
        try:
            canary = parse_route(CANARY, state.get(CANARY), None)
            shadow = parse_route(SHADOW, state.get(SHADOW), 100.0)
            sticky = parse_sticky_header(state.get("sticky_header"))
        except InvalidInput as exc:
            logger.warning("%s: %s; starting without routes", source, exc)
            return
        self.canary, self.shadow = canary, shadow
        self._set_sticky(sticky)

    def _set_sticky(self, header: str | None) -> None:
        self.sticky_header = header
        self._sticky = header.lower().encode() if header else None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream pools (on the running loop)."""
        self.loop = asyncio.get_running_loop()
        # Keep-alive expiry below uvicorn's 5 s server timeout, so the pool never reuses a
        # connection the upstream is about to close.
        self.pool = UpstreamPool(connect_timeout=5.0, idle_seconds=4.0)
        # Shadow copies have their own pool: a slow shadow never holds connections the live
        # traffic needs (its connections are bounded by the copies allowed in flight).
        self.shadow_pool = UpstreamPool(connect_timeout=2.0, idle_seconds=4.0)

    async def stop(self) -> None:
        """Cancel the shadow copies still in flight and close the upstream connections."""
        for task in list(self._shadow_tasks):
            task.cancel()
        if self._shadow_tasks:
            await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        self.pool.close()
        self.shadow_pool.close()

    # -- data plane ---------------------------------------------------------------------------

    async def handle(self, request: Request, conn: ClientConnection) -> None:
        """Answer one client request: liveness and admin here, everything else forwarded. With
        an admin port, the admin API (but ping) is answered 404 here."""
        if request.path == LIVENESS_PATH:
            conn.write(simple_response(200, b"ok", b"text/plain", close=not request.keep_alive))
        elif request.path == METRICS_PATH and request.method == b"GET":
            body = await self.metrics()
            conn.write(simple_response(200, body, METRICS_TYPE, close=not request.keep_alive))
        elif request.path.startswith(ADMIN_PREFIX):
            if self.admin_port and request.path != ADMIN_PREFIX + "ping":
                status, body, content_type = 404, _ADMIN_ELSEWHERE, _JSON
            else:
                status, body, content_type = await self._admin(request)
            conn.write(simple_response(status, body, content_type, close=not request.keep_alive))
        else:
            await self._forward(request, conn)

    async def handle_admin(self, request: Request, conn: ClientConnection) -> None:
        """Answer one request on the admin port: liveness and the admin API, nothing forwarded."""
        if request.path == LIVENESS_PATH:
            status, body, content_type = 200, b"ok", b"text/plain"
        elif request.path.startswith(ADMIN_PREFIX):
            status, body, content_type = await self._admin(request)
        else:
            status, body = 404, _error_body("not_found", "The admin port serves /-/proxy/ only.")
            content_type = _JSON
        conn.write(simple_response(status, body, content_type, close=not request.keep_alive))

    def _target(self, route: str) -> tuple[str | None, str | None]:
        """The upstream and version of `route` now; a canary removed meanwhile is the primary."""
        canary = self.canary
        if route == CANARY and canary is not None:
            return canary.upstream, canary.version
        return self.upstream, self.version

    def _choose(self, sticky_value: bytes | None) -> str:
        canary = self.canary
        if canary is None or canary.percent <= 0:
            return PRIMARY
        if sticky_value is not None:
            return CANARY if sticky_bucket(sticky_value) < canary.percent * 100 else PRIMARY
        return CANARY if random.random() * 100 < canary.percent else PRIMARY

    async def _forward(self, request: Request, conn: ClientConnection) -> None:
        close = not request.keep_alive
        if self.upstream is None:
            body = _error_body("no_upstream", "No model version is active.")
            conn.write(simple_response(503, body, close=close))
            return
        started = time.monotonic()
        sticky_name, sticky_value = self._sticky, None
        headers: list[tuple[bytes, bytes]] = []
        for name, value in request.headers:
            if name not in _REQUEST_DROP:
                headers.append((name, value))
                if name == sticky_name:
                    sticky_value = value
        if request.client:
            headers.append((b"x-forwarded-for", request.client.encode("latin-1")))
        # only scoring calls are split and counted: a probe, a GET of /version or a feedback
        # call goes to the primary and must not dilute the figures a canary is judged on
        # (feedback joins on the request id whichever version stores it)
        scoring = request.method == b"POST" and request.path == SCORING_PATH
        route = self._choose(sticky_value) if scoring else PRIMARY
        upstream, version = self._target(route)
        status = 502
        live_id: str | None = None
        deadline = self.loop.time() + self.timeout
        self.in_flight[upstream] += 1
        try:
            asked = None
            for attempt in range(2):
                try:
                    asked = await self._ask(upstream, request, headers, deadline)
                    break
                except TimeoutError:
                    status = 504
                    body = _error_body("upstream_timeout", "The model did not answer.")
                    conn.write(simple_response(504, body, close=close))
                    return
                except UpstreamError as exc:
                    # Nothing came back: refused, or a pooled connection the upstream closed
                    # before answering. Retry once, on the route's upstream as it is now (it
                    # may have just been switched or removed).
                    if attempt:
                        logger.warning("upstream %s failed: %s", upstream, exc)
                        break
                    self._done(upstream)
                    upstream, version = self._target(route)
                    self.in_flight[upstream] += 1
            if asked is None:
                body = _error_body("bad_gateway", "The model service is unavailable.")
                conn.write(simple_response(502, body, close=close))
                return
            status, live_id = await self._relay(*asked, version, request, conn)
        finally:
            self._done(upstream)
            if scoring:
                self._record(route, version, upstream, time.monotonic() - started, status)
        shadow = self.shadow
        if shadow is not None and scoring and random.random() * 100 < shadow.percent:
            self._mirror(shadow, request, headers, live_id)

    async def _ask(
        self,
        upstream: str,
        request: Request,
        headers: list[tuple[bytes, bytes]],
        deadline: float,
    ) -> tuple[Exchange, asyncio.TimerHandle]:
        """Send the request to `upstream`; returns once its status and headers are in, with the
        timer that ends the exchange at `deadline`.

        Raises:
            UpstreamError: no answer. TimeoutError: none by `deadline` (or no connection
            within the pool's connect timeout).
        """
        exchange = await self.pool.acquire(upstream)
        host = self.pool.host_header(upstream)
        data = request_bytes(request.method, request.target, host, headers, request.body)
        timer = self.loop.call_at(deadline, exchange.expire)
        exchange.send(data, head_only=request.method == b"HEAD")
        try:
            await exchange.head
        except BaseException:
            timer.cancel()
            self.pool.release(exchange)  # closed: its answer is not complete
            raise
        return exchange, timer

    async def _relay(
        self,
        exchange: Exchange,
        timer: asyncio.TimerHandle,
        version: str | None,
        request: Request,
        conn: ClientConnection,
    ) -> tuple[int, str | None]:
        """Send the upstream's answer on to the client as it arrives: one write when it is all
        in already (the usual small answer), else the head, then each body chunk. Returns the
        status to record and the answer's X-Request-ID."""
        status = exchange.status
        out = [status_line(status, exchange.reason)]
        labelled = version is None
        live_id: str | None = None
        framed = request.method == b"HEAD" or status in (204, 304)
        for k, v in exchange.headers:
            name = k.lower()
            if name in _RESPONSE_DROP:
                continue
            out.append(b"%s: %s\r\n" % (k, v))
            if name == VERSION_HEADER:  # the upstream names itself: keep its own
                labelled = True
            elif name == REQUEST_ID_HEADER:
                live_id = v.decode("latin-1")
            elif name == b"content-length":
                framed = True
        if not labelled:
            out.append(b"x-model-version: %s\r\n" % version.encode())
        # an answer without a length (chunked upstream) goes on chunked, or to an HTTP/1.0
        # client delimited by the close
        chunked = not framed and request.http11
        if chunked:
            out.append(b"transfer-encoding: chunked\r\n")
        if not request.keep_alive or not (framed or chunked):
            request.keep_alive = False
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        pending = exchange.body
        out.extend(map(chunk, pending) if chunked else pending)
        exchange.body = []
        try:
            if not exchange.done.done():
                conn.write(b"".join(out))
                out = []

                def sink(data: bytes) -> None:
                    conn.write(chunk(data) if chunked else data)
                    conn.hold(exchange.transport)

                exchange.sink = sink
            await exchange.done
        except (UpstreamError, TimeoutError) as exc:
            logger.warning("upstream %s failed while answering: %s", exchange.upstream, exc)
            if out:  # nothing sent yet: still a clean answer
                body = _error_body("bad_gateway", "The model service is unavailable.")
                conn.write(simple_response(502, body, close=not request.keep_alive))
            else:
                conn.abort()
            return (504 if isinstance(exc, TimeoutError) else 502), live_id
        finally:
            timer.cancel()
            self.pool.release(exchange)
        if chunked:
            out.append(b"0\r\n\r\n")
        conn.write(b"".join(out))
        return status, live_id

    def _done(self, upstream: str) -> None:
        self.in_flight[upstream] -= 1
        if self.in_flight[upstream] <= 0:
            del self.in_flight[upstream]

    def _mirror(
        self,
        shadow: Route,
        request: Request,
        headers: list[tuple[bytes, bytes]],
        live_id: str | None,
    ) -> None:
        """Start one shadow copy in the background, or drop it when the queue is full (in
        copies or in the bytes their bodies hold)."""
        size = len(request.body)
        if (
            len(self._shadow_tasks) >= self.shadow_max_pending
            or self._shadow_bytes + size > self.shadow_max_pending_bytes
        ):
            self._stats_for(SHADOW, shadow.version, shadow.upstream).drop(time.monotonic())
            return
        if live_id is None or not _REQUEST_ID.match(live_id):
            live_id = uuid.uuid4().hex  # the live upstream named none: still a joinable id
        copy = [*headers, (SHADOW_HEADER, live_id.encode())]
        task = self.loop.create_task(self._send_shadow(shadow, request, copy))
        self._shadow_tasks.add(task)
        self._shadow_bytes += size
        task.add_done_callback(functools.partial(self._shadow_done, size))

    def _shadow_done(self, size: int, task: asyncio.Task[None]) -> None:
        self._shadow_tasks.discard(task)
        self._shadow_bytes -= size

    async def _send_shadow(
        self, shadow: Route, request: Request, headers: list[tuple[bytes, bytes]]
    ) -> None:
        started = time.monotonic()
        status = 502  # no answer counts as the proxy's own bad-gateway error
        self.in_flight[shadow.upstream] += 1
        try:
            host = self.shadow_pool.host_header(shadow.upstream)
            data = request_bytes(b"POST", request.target, host, headers, request.body)
            status, _, _ = await fetch(self.shadow_pool, shadow.upstream, data, self.shadow_timeout)
        except (UpstreamError, TimeoutError) as exc:
            logger.debug("shadow %s failed: %s", shadow.upstream, exc)
        except Exception:  # a shadow must never take the proxy down
            logger.exception("shadow copy to %s failed", shadow.upstream)
        finally:
            self._done(shadow.upstream)
            seconds = time.monotonic() - started
            self._record(SHADOW, shadow.version, shadow.upstream, seconds, status)

    def _stats_for(self, route: str, version: str | None, upstream: str) -> RouteStats:
        key = (route, version)
        stats = self._stats.get(key)
        if stats is None:
            if len(self._stats) >= MAX_STATS_KEYS:
                current = self._current_keys()
                idle = [k for k in self._stats if k not in current] or list(self._stats)
                oldest = min(idle, key=lambda k: self._stats[k].last)
                del self._stats[oldest]
                self._stats_upstream.pop(oldest, None)
            stats = self._stats[key] = RouteStats(self.stats_samples)
        self._stats_upstream[key] = upstream
        return stats

    def _current_keys(self) -> set[tuple[str, str | None]]:
        keys = {(PRIMARY, self.version)}
        if self.canary is not None:
            keys.add((CANARY, self.canary.version))
        if self.shadow is not None:
            keys.add((SHADOW, self.shadow.version))
        return keys

    def _record(
        self, route: str, version: str | None, upstream: str, seconds: float, status: int
    ) -> None:
        """One finished request: 5xx (and no answer, 502/504) is an error; 4xx a client
        error, which a model that raises on its input answers (422)."""
        stats = self._stats_for(route, version, upstream)
        stats.add(time.monotonic(), seconds, status >= 500, 400 <= status < 500)

    def _stats_keys(self) -> list[tuple[str, str | None]]:
        """The (route, version) pairs with figures: primary, canary, shadow, then by version."""
        order = {PRIMARY: 0, CANARY: 1, SHADOW: 2}
        return sorted(self._stats, key=lambda k: (order[k[0]], k[1] or ""))

    def stats(self, window: float) -> dict[str, Any]:
        """Per route and version: counts and latency over the last `window` seconds."""
        now = time.monotonic()
        keys = self._stats_keys()
        return {
            "window_seconds": window,
            "stats": [
                {
                    "route": route,
                    "version": version,
                    "upstream": self._stats_upstream.get((route, version)),
                    **self._stats[(route, version)].summary(window, now),
                }
                for route, version in keys
            ],
        }

    async def metrics(self) -> bytes:
        """GET /metrics on the stable port: the primary service's own exposition, then the
        proxy's series (`exposition`). Always complete for the proxy's part: a primary that is
        down or slow (5 s) only sets mlops_proxy_upstream_metrics_up to 0."""
        text = b""
        upstream = self.upstream
        if upstream is not None:
            try:
                host = self.pool.host_header(upstream)
                data = request_bytes(b"GET", METRICS_PATH.encode(), host, [], b"")
                status, _, body = await fetch(self.pool, upstream, data, 5.0, keep_body=True)
                if status == 200:
                    text = body if body.endswith(b"\n") or not body else body + b"\n"
            except (UpstreamError, TimeoutError) as exc:
                logger.debug("metrics of %s unavailable: %s", upstream, exc)
        return text + self.exposition(upstream_up=bool(text)).encode()

    def exposition(self, upstream_up: bool) -> str:
        """The proxy's Prometheus series (text format 0.0.4), labelled by route (primary,
        canary, shadow) and model_version (the version that served the request; "" unknown):

        * mlops_proxy_requests_total{route, model_version, outcome}: scoring requests (POST)
          answered, outcome ok, client_error (4xx) or error (5xx, no answer, timeout); for the
          shadow route, the copies sent;
        * mlops_proxy_request_latency_seconds{route, model_version}: histogram with the scoring
          service's bounds (serving/latency.py), body read to last byte sent;
        * mlops_proxy_route_percent{route, model_version}: the split now;
        * mlops_proxy_shadow_dropped_total{model_version}: copies dropped on a full queue;
        * mlops_proxy_upstream_metrics_up: 1 when the primary's own metrics are included.

        Counts are since the proxy started; a (route, version) pair evicted after
        MAX_STATS_KEYS others starts again at 0, which Prometheus reads as a counter reset.
        """
        lines: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            lines.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))

        keys = [(key, self._stats[key], _labels(*key)) for key in self._stats_keys()]
        family(
            "mlops_proxy_requests_total",
            "counter",
            "Scoring requests the proxy answered (shadow: copies sent), by route, version and "
            "outcome.",
        )
        for _, stats, labels in keys:
            ok = stats.requests - stats.errors - stats.client_errors
            for outcome, count in (
                ("ok", ok),
                ("client_error", stats.client_errors),
                ("error", stats.errors),
            ):
                lines.append(f'mlops_proxy_requests_total{{{labels},outcome="{outcome}"}} {count}')
        name = "mlops_proxy_request_latency_seconds"
        family(name, "histogram", "Time from the request body read to the last byte sent.")
        for _, stats, labels in keys:
            total = 0
            for bound, count in zip((*LATENCY_BUCKETS, math.inf), stats.buckets, strict=True):
                total += count
                le = "+Inf" if bound == math.inf else repr(bound)
                lines.append(f'{name}_bucket{{{labels},le="{le}"}} {total}')
            lines.append(f"{name}_sum{{{labels}}} {stats.seconds!r}")
            lines.append(f"{name}_count{{{labels}}} {total}")
        family("mlops_proxy_route_percent", "gauge", "Percent of scoring requests per route now.")
        canary, shadow = self.canary, self.shadow
        split = [(PRIMARY, self.version, 100.0 - (canary.percent if canary else 0.0))]
        if canary is not None:
            split.append((CANARY, canary.version, canary.percent))
        if shadow is not None:
            split.append((SHADOW, shadow.version, shadow.percent))
        for route, version, percent in split:
            lines.append(f"mlops_proxy_route_percent{{{_labels(route, version)}}} {percent!r}")
        family(
            "mlops_proxy_shadow_dropped_total",
            "counter",
            "Shadow copies dropped because the shadow queue was full.",
        )
        for (route, version), stats, _ in keys:
            if route == SHADOW:
                escaped = _label_value(version)
                lines.append(
                    f'mlops_proxy_shadow_dropped_total{{model_version="{escaped}"}} {stats.dropped}'
                )
        family(
            "mlops_proxy_upstream_metrics_up",
            "gauge",
            "1 when the primary scoring service's own metrics are included above.",
        )
        lines.append(f"mlops_proxy_upstream_metrics_up {int(upstream_up)}")
        return "\n".join(lines) + "\n"

    # -- admin API ----------------------------------------------------------------------------

    def routes(self) -> dict[str, Any]:
        """The routes as GET /-/proxy/routes shows them (and the state file stores them)."""
        return {
            PRIMARY: {"upstream": self.upstream, "version": self.version},
            CANARY: asdict(self.canary) if self.canary else None,
            SHADOW: asdict(self.shadow) if self.shadow else None,
            "sticky_header": self.sticky_header,
        }

    async def _admin(self, request: Request) -> tuple[int, bytes, bytes]:
        """An admin call: (status, body, content type)."""
        path, method, body = request.path, request.method.decode("latin-1"), request.body
        if path == ADMIN_PREFIX + "ping":
            return 200, b"ok", b"text/plain"
        token = self.token.get() if isinstance(self.token, TokenFile) else self.token
        if not token:
            return 403, _error_body("forbidden", "The admin API is disabled."), _JSON
        headers = dict(request.headers)
        bearer = hmac.compare_digest(headers.get(b"authorization", b""), f"Bearer {token}".encode())
        if not (bearer or hmac.compare_digest(headers.get(TOKEN_HEADER, b""), token.encode())):
            return 401, _error_body("unauthorized", "Wrong or missing token."), _JSON
        name = path[len(ADMIN_PREFIX) :]
        methods = {"upstream": ("GET", "PUT"), "routes": ("GET", "PUT"), "stats": ("GET",)}
        if name not in methods:
            return 404, _error_body("not_found", "Unknown admin path."), _JSON
        if method not in methods[name]:
            allowed = " or ".join(methods[name])
            return 405, _error_body("method_not_allowed", f"Use {allowed}."), _JSON
        try:
            if name == "stats":
                status, result = 200, self.stats(_window(request.query))
            elif method == "GET" and name == "upstream":
                status, result = 200, {"upstream": self.upstream, "in_flight": dict(self.in_flight)}
            elif method == "GET":
                status, result = 200, self.routes()
            elif name == "upstream":
                status, result = await self._put_upstream(body)
            else:
                status, result = await self._put_routes(body)
        except InvalidInput as exc:
            return 400, _error_body("invalid_input", str(exc)), _JSON
        return status, json.dumps(result).encode(), _JSON

    async def _put_upstream(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body)
            new = str(request["upstream"]).rstrip("/")
            drain_timeout = float(request.get("drain_timeout", 30.0))
            check_ready = bool(request.get("check_ready", True))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput('Send {"upstream": "http://host:port"}.') from exc
        version = parse_version("version", request)
        return await self.switch(new, drain_timeout, check_ready, version=version)

    async def _put_routes(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body or b"null")
        except ValueError as exc:
            raise InvalidInput(f"body: not JSON ({exc}).") from exc
        if not isinstance(request, dict):
            raise InvalidInput(
                f"body: {_show(request)} is not an object like "
                '{"canary": {"upstream": "http://host:port", "percent": 10}}.'
            )
        unknown = sorted(set(request) - set(_ROUTES_KEYS))
        if unknown:
            raise InvalidInput(f"{unknown[0]}: unknown field; use {', '.join(_ROUTES_KEYS)}.")
        changes: dict[str, Any] = {}
        if CANARY in request:
            changes[CANARY] = parse_route(CANARY, request[CANARY], None)
        if SHADOW in request:
            changes[SHADOW] = parse_route(SHADOW, request[SHADOW], 100.0)
        if "sticky_header" in request:
            changes["sticky_header"] = parse_sticky_header(request["sticky_header"])
        check_ready = request.get("check_ready", True)
        if not isinstance(check_ready, bool):
            raise InvalidInput(f"check_ready: {_show(check_ready)} is not true or false.")
        drain_timeout = request.get("drain_timeout", 30.0)
        if (
            isinstance(drain_timeout, bool)
            or not isinstance(drain_timeout, int | float)
            or not 0 <= drain_timeout <= 3600
        ):
            raise InvalidInput(
                f"drain_timeout: {_show(drain_timeout)} is not a number of seconds (0-3600)."
            )
        return await self.set_routes(changes, check_ready, float(drain_timeout))

    async def _ready(self, upstream: str) -> bool:
        try:
            host = self.pool.host_header(upstream)
            status, _, _ = await fetch(
                self.pool, upstream, request_bytes(b"GET", b"/ready", host, [], b""), 5.0
            )
        except (UpstreamError, TimeoutError):
            return False
        return status == 200

    async def set_routes(
        self, changes: dict[str, Any], check_ready: bool, drain_timeout: float
    ) -> tuple[int, dict[str, Any]]:
        """Replace the routes named in `changes`, then drain upstreams no route uses any more."""
        async with self._switch_lock:
            if check_ready:
                for field in (CANARY, SHADOW):
                    route = changes.get(field)
                    if route is not None and not await self._ready(route.upstream):
                        message = (
                            f"{field}.upstream: {route.upstream} is not ready (its /ready is "
                            "not 200); the routes are unchanged."
                        )
                        return 409, {"error": {"code": "not_ready", "message": message}}
            before = self._in_use()
            self.canary = changes.get(CANARY, self.canary)
            self.shadow = changes.get(SHADOW, self.shadow)
            if "sticky_header" in changes:
                self._set_sticky(changes["sticky_header"])
            self._save()
            logger.info("routes: %s", json.dumps(self.routes()))
            result = self.routes()
            result.update(await self._drain(before - self._in_use(), drain_timeout))
            return 200, result

    def _in_use(self) -> set[str]:
        used = {self.upstream} if self.upstream else set()
        used.update(r.upstream for r in (self.canary, self.shadow) if r is not None)
        return used

    async def _drain(self, upstreams: set[str], timeout: float) -> dict[str, Any]:
        """Wait (up to `timeout`) for the requests in flight on `upstreams` to finish."""
        started = time.monotonic()
        deadline = started + timeout
        while any(self.in_flight[u] > 0 for u in upstreams) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        left = sum(self.in_flight[u] for u in upstreams)
        for u in upstreams:
            if self.in_flight[u] <= 0:
                del self.in_flight[u]
        return {
            "drained": left == 0,
            "in_flight_left": left,
            "drain_seconds": round(time.monotonic() - started, 4),
        }

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        routes = self.routes()
        state = {"upstream": self.upstream, "version": self.version}
        state.update((k, routes[k]) for k in (CANARY, SHADOW, "sticky_header"))
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    async def switch(
        self, new: str, drain_timeout: float, check_ready: bool, *, version: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Point new requests at `new`, then wait for the old upstream's requests to finish.

        Switching to the canary's upstream removes the canary route (a promotion), and the new
        primary takes the canary's version unless `version` is given.
        """
        async with self._switch_lock:
            if check_ready and not await self._ready(new):
                message = f"Upstream {new} is not ready; traffic stays on {self.upstream}."
                return 409, {"error": {"code": "not_ready", "message": message}}
            before = self._in_use()
            if self.canary is not None and self.canary.upstream == new:
                version = version or self.canary.version
                self.canary = None
            previous, self.upstream, self.version = self.upstream, new, version
            self._save()
            drained = await self._drain(before - self._in_use(), drain_timeout)
            logger.info(
                "switched upstream %s -> %s version %s (%d left in flight)",
                previous,
                new,
                version,
                drained["in_flight_left"],
            )
            return 200, {"previous": previous, "upstream": new, "version": version, **drained}


def _label_value(value: str | None) -> str:
    """A label value escaped for the text format (versions are visible ASCII: no newline)."""
    return (value or "").replace("\\", "\\\\").replace('"', '\\"')


def _labels(route: str, version: str | None) -> str:
    return f'route="{route}",model_version="{_label_value(version)}"'


def _window(query: bytes) -> float:
    values = parse_qs(query.decode("latin-1")).get("window")
    if not values:
        return 60.0
    try:
        window = float(values[-1])
    except ValueError:
        window = math.nan
    if not 0 < window <= 86_400:
        raise InvalidInput(f"window: {_show(values[-1])} is not a number of seconds (0-86400].")
    return window


def _initial_routes(text: str | None) -> dict[str, Any] | None:
    """The ROUTES setting's canary, shadow and sticky header; None when unset or empty (a
    routes ConfigMap with no canary or shadow).

    Raises:
        InvalidInput: not a JSON object of those keys.
    """
    if not text or not text.strip():
        return None
    try:
        routes = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"not JSON ({exc}).") from exc
    keys = (CANARY, SHADOW, "sticky_header")
    if not isinstance(routes, dict) or set(routes) - set(keys):
        raise InvalidInput(f"{_show(routes)} is not an object of {', '.join(keys)}.")
    return routes


async def serve(app: Proxy, host: str, port: int, drain_seconds: float = 30.0) -> None:
    """Listen on host:port (and host:`app.admin_port` for the admin API, when set) until
    SIGTERM or SIGINT, then stop accepting, let the requests in progress finish (at most
    `drain_seconds`), close idle connections and the upstream pools.

    Raises:
        OSError: the address cannot be bound.
    """
    loop = asyncio.get_running_loop()
    await app.start()
    connections: set[ClientConnection] = set()
    stopping = asyncio.Event()
    servers = [
        await loop.create_server(
            lambda: ClientConnection(app.handle, connections, stopping.is_set),
            host,
            port,
            backlog=2048,
        )
    ]
    if app.admin_port:
        servers.append(
            await loop.create_server(
                lambda: ClientConnection(app.handle_admin, connections, stopping.is_set),
                host,
                app.admin_port,
            )
        )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    for server in servers:
        server.close()
    for conn in list(connections):
        if not conn.busy:
            conn.abort()
    deadline = time.monotonic() + drain_seconds
    while any(c.busy for c in connections) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await app.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse options (defaults from `ProxySettings`) and serve until SIGTERM.

    Exits with a one-line error naming the variable when a setting is invalid or the token
    file's folder does not exist.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = ProxySettings()
        token = admin_token(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{env_name('_'.join(map(str, e['loc'])), PROXY_ENV_PREFIX)}: {e['msg']}"
            for e in exc.errors()
        )
        sys.exit(f"error: invalid proxy settings: {problems}")
    except OSError as exc:
        sys.exit(f"error: {env_name('token_file', PROXY_ENV_PREFIX)}: {exc}; create the folder")
    parser = argparse.ArgumentParser(
        prog="python -m mlops_pipeline.serving.proxy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--upstream", default=settings.upstream)
    args = parser.parse_args(argv)
    # a hand-edited routes ConfigMap must not crash-loop every new pod: warn, serve without routes
    try:
        routes = _initial_routes(settings.routes)
    except InvalidInput as exc:
        logger.warning("%s: %s; starting without routes", env_name("routes", PROXY_ENV_PREFIX), exc)
        routes = None
    app = Proxy(
        args.upstream,
        token,
        timeout=settings.timeout,
        state_file=settings.state_file,
        shadow_max_pending=settings.shadow_max_pending,
        shadow_max_pending_bytes=settings.shadow_max_pending_bytes,
        shadow_timeout=settings.shadow_timeout,
        stats_samples=settings.stats_samples,
        version=settings.version,
        routes=routes,
        admin_port=settings.admin_port,
    )
    # uvloop (uvicorn[standard] brings it) when installed: less CPU per loop iteration
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(app, args.host, args.port))
    except OSError as exc:
        sys.exit(f"error: cannot listen on {args.host}:{args.port}: {exc}")


if __name__ == "__main__":
    main()
