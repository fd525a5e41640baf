"""A small HTTP reverse proxy that holds a deployment's stable port during zero-downtime updates.

Every request is forwarded to the current upstream (a scoring service) over pooled keep-alive
connections. An admin call switches the upstream atomically: new requests go to the new upstream
at once, and the call returns only after the requests still in flight on the old one have
completed (drain), so the caller can then stop the old service without failing a request.

Run it:  python -m mlops_pipeline.serving.proxy [--host H] [--port P] [--upstream URL]

Environment (`ProxySettings` in serving/settings.py; command-line options win):
  MLOPS_SERVING_PROXY_HOST        bind address (default 127.0.0.1; 0.0.0.0 in containers)
  MLOPS_SERVING_PROXY_PORT        stable port (default 8080)
  MLOPS_SERVING_PROXY_UPSTREAM    initial upstream base URL, e.g. http://127.0.0.1:41234
  MLOPS_SERVING_PROXY_TOKEN       admin bearer token (or MLOPS_SERVING_PROXY_TOKEN_FILE: a file
                                  holding it); without one the admin API answers 403
  MLOPS_SERVING_PROXY_STATE_FILE  optional file where the current upstream is persisted on every
                                  switch and read back at start, so a restarted proxy keeps the
                                  switched version
  MLOPS_SERVING_PROXY_TIMEOUT     seconds to wait for an upstream response (default 120)

Health, as a client of the stable port sees it:
  GET /health/live        200 "ok", answered by the proxy itself and never forwarded: the
                          liveness of the process that owns the port. An upstream that is
                          loading, restarting or being switched must not get the proxy killed.
  GET /ping, GET /ready   forwarded: the active scoring service answers whether it can score.
  The liveness of a scoring service is asked of the service itself, on its own port.

Admin API (header `Authorization: Bearer <token>`; paths under /-/proxy/ are never forwarded):
  GET /-/proxy/ping       200 "ok" (no token; the same as /health/live)
  GET /-/proxy/upstream   {"upstream": url, "in_flight": {url: n}}
  PUT /-/proxy/upstream   body {"upstream": url, "drain_timeout": 30, "check_ready": true}
                          -> 200 {"previous", "upstream", "drained", "in_flight_left",
                          "drain_seconds"}; 409 when check_ready is on and url/ready is not 200.

This module ships in model images: it imports only the standard library, pydantic-settings,
httpx and uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import ValidationError

from .settings import PROXY_ENV_PREFIX, ProxySettings, env_name

logger = logging.getLogger("serving.proxy")

ADMIN_PREFIX = "/-/proxy/"
LIVENESS_PATH = "/health/live"
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
_RESPONSE_DROP = HOP_BY_HOP - {b"content-length"}


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class Proxy:
    """ASGI app: forward to the current upstream; admin routes switch and drain."""

    def __init__(
        self,
        upstream: str | None,
        token: str | None,
        *,
        timeout: float = 120.0,
        state_file: Path | None = None,
    ) -> None:
        self.state_file = state_file
        if state_file is not None and state_file.is_file():
            upstream = json.loads(state_file.read_text())["upstream"]
        self.upstream = upstream.rstrip("/") if upstream else None
        self.token = token
        self.timeout = timeout
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.client: httpx.AsyncClient | None = None
        self._switch_lock = asyncio.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["path"] == LIVENESS_PATH:
                await _read_body(receive)
                await _respond(send, 200, b"ok", content_type=b"text/plain")
            elif scope["path"].startswith(ADMIN_PREFIX):
                await self._admin(scope, receive, send)
            else:
                await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Keep-alive expiry below uvicorn's 5 s server timeout, so the pool never
                # reuses a connection the upstream is about to close.
                self.client = httpx.AsyncClient(
                    timeout=httpx.Timeout(self.timeout, connect=5.0),
                    limits=httpx.Limits(max_connections=None, keepalive_expiry=4.0),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: dict, receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        upstream = self.upstream
        if upstream is None:
            await _respond(send, 503, _error_body("no_upstream", "No model version is active."))
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        if scope.get("client"):
            headers.append((b"x-forwarded-for", scope["client"][0].encode()))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        self.in_flight[upstream] += 1
        try:
            response = None
            for attempt in range(2):
                request = self.client.build_request(
                    scope["method"],
                    upstream + target.decode("latin-1"),
                    headers=headers,
                    content=body,
                )
                try:
                    response = await self.client.send(request, stream=True)
                    break
                except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                    # Connect errors sent nothing; a RemoteProtocolError here means the upstream
                    # closed a pooled connection before answering. Retry once, on the upstream
                    # that is current now (it may have just been switched).
                    if attempt:
                        logger.warning("upstream %s failed: %s", upstream, exc)
                        break
                    self.in_flight[upstream] -= 1
                    upstream = self.upstream or upstream
                    self.in_flight[upstream] += 1
                except httpx.TimeoutException:
                    await _respond(
                        send, 504, _error_body("upstream_timeout", "The model did not answer.")
                    )
                    return
            if response is None:
                await _respond(
                    send, 502, _error_body("bad_gateway", "The model service is unavailable.")
                )
                return
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [
                            (k, v)
                            for k, v in response.headers.raw
                            if k.lower() not in _RESPONSE_DROP
                        ],
                    }
                )
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await response.aclose()
        finally:
            self.in_flight[upstream] -= 1
            if self.in_flight[upstream] <= 0:
                del self.in_flight[upstream]

    async def _admin(self, scope: dict, receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        body = await _read_body(receive)
        if path == ADMIN_PREFIX + "ping":
            await _respond(send, 200, b"ok", content_type=b"text/plain")
            return
        if not self.token:
            await _respond(send, 403, _error_body("forbidden", "The admin API is disabled."))
            return
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
            await _respond(send, 401, _error_body("unauthorized", "Wrong or missing token."))
            return
        if path != ADMIN_PREFIX + "upstream":
            await _respond(send, 404, _error_body("not_found", "Unknown admin path."))
        elif method == "GET":
            await _respond_json(
                send, 200, {"upstream": self.upstream, "in_flight": dict(self.in_flight)}
            )
        elif method == "PUT":
            try:
                request = json.loads(body)
                new = str(request["upstream"]).rstrip("/")
                drain_timeout = float(request.get("drain_timeout", 30.0))
                check_ready = bool(request.get("check_ready", True))
            except (ValueError, KeyError, TypeError):
                await _respond(
                    send,
                    400,
                    _error_body("invalid_input", 'Send {"upstream": "http://host:port"}.'),
                )
                return
            status, result = await self.switch(new, drain_timeout, check_ready)
            await _respond_json(send, status, result)
        else:
            await _respond(send, 405, _error_body("method_not_allowed", "Use GET or PUT."))

    async def switch(
        self, new: str, drain_timeout: float, check_ready: bool
    ) -> tuple[int, dict[str, Any]]:
        """Point new requests at `new`, then wait for the old upstream's requests to finish."""
        async with self._switch_lock:
            if check_ready:
                try:
                    ready = await self.client.get(new + "/ready", timeout=5.0)
                    ok = ready.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    message = f"Upstream {new} is not ready; traffic stays on {self.upstream}."
                    return 409, {"error": {"code": "not_ready", "message": message}}
            previous, self.upstream = self.upstream, new
            if self.state_file is not None:
                tmp = self.state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"upstream": new}))
                tmp.replace(self.state_file)
            started = time.monotonic()
            deadline = started + drain_timeout
            while previous and previous != new and self.in_flight[previous] > 0:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.005)
            left = self.in_flight[previous] if previous and previous != new else 0
            logger.info("switched upstream %s -> %s (%d left in flight)", previous, new, left)
            return 200, {
                "previous": previous,
                "upstream": new,
                "drained": left == 0,
                "in_flight_left": left,
                "drain_seconds": round(time.monotonic() - started, 4),
            }


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(
    send: Any, status: int, body: bytes, content_type: bytes = b"application/json"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    await _respond(send, status, json.dumps(payload).encode())


def main(argv: list[str] | None = None) -> None:
    """Parse options (defaults from `ProxySettings`) and serve until SIGTERM.

    Exits with a one-line error naming the variable when a setting is invalid or the token file
    cannot be read.
    """
    try:
        settings = ProxySettings()
        token = settings.admin_token()
    except ValidationError as exc:
        problems = "; ".join(
            f"{env_name('_'.join(map(str, e['loc'])), PROXY_ENV_PREFIX)}: {e['msg']}"
            for e in exc.errors()
        )
        sys.exit(f"error: invalid proxy settings: {problems}")
    except OSError as exc:
        sys.exit(f"error: {env_name('token_file', PROXY_ENV_PREFIX)} cannot be read: {exc}")
    parser = argparse.ArgumentParser(
        prog="python -m mlops_pipeline.serving.proxy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--upstream", default=settings.upstream)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # httpx logs every forwarded request at INFO; that is the hot path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = Proxy(args.upstream, token, timeout=settings.timeout, state_file=settings.state_file)
    # uvicorn drains, then re-raises SIGTERM to the handler it found: make that a clean exit 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
