"""The HTTP side of the routes: reading bodies, content types, API keys, status codes, headers.

Each `Endpoints` method takes a starlette Request and returns a Response; what it computes comes
from the shared `Service` handler. Errors are `ServingError`s, rendered by `error_response` as
`{"error": {"code", "message", "details"}}` with their HTTP status.

A shadow copy mirrored by the stable-port proxy carries `X-Shadow-Of: <the live request's id>`;
when that value is well-formed (32 lowercase hex digits, as the service makes them) the copy is
answered and captured under the live request's id, so the challenger's record joins the live
one on `_request_id`. Any other value is ignored and the request gets a fresh id.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from fastapi import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import metrics
from .errors import ServingError
from .handler import Service
from .model import predictions_json

log = logging.getLogger(__name__)

LIVE_PATH = "/health/live"
OPEN_PATHS = frozenset({"/ping", "/ready", LIVE_PATH})
JSON = "application/json"
SHADOW_OF = "x-shadow-of"
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def error_response(exc: ServingError, headers: dict[str, str] | None = None) -> Response:
    """The JSON error body of `exc` with its HTTP status (and optional extra headers)."""
    return Response(orjson.dumps(exc.to_dict()), exc.status, headers=headers, media_type=JSON)


class ApiKeys:
    """Primary and secondary key from a file, re-read when it changes (rotation, no restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._checked = 0.0
        self._keys: tuple[bytes, ...] = ()
        self._reload()
        if not self._keys:
            raise ValueError(f"API key file {path} has no key on its first line.")

    def _reload(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            lines = self.path.read_text(encoding="utf-8").splitlines()[:2]
            keys = tuple(line.strip().encode() for line in lines if line.strip())
            if keys:
                self._keys, self._mtime = keys, mtime

    def check(self, token: bytes) -> bool:
        """Whether `token` equals a current key; the file is re-read at most once a second."""
        now = time.monotonic()
        if now - self._checked > 1.0:
            self._checked = now
            try:
                self._reload()
            except OSError:
                log.warning("API key file %s is unreadable; keeping the previous keys", self.path)
        ok = False
        for key in self._keys:  # compare with every key so timing does not tell which matched
            ok |= hmac.compare_digest(token, key)
        return ok


class ApiKeyMiddleware:
    """Require `Authorization: Bearer <key>` or `api-key: <key>` outside the health paths."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.keys = keys
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
            elif name == b"api-key":
                token = value.strip()
        if token and self.keys.check(token):
            return await self.app(scope, receive, send)
        self.on_reject(scope["path"])
        exc = ServingError(
            401,
            "unauthorized",
            "A valid API key is required: send 'Authorization: Bearer <key>' or 'api-key: <key>'.",
        )
        response = error_response(exc, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it is known to exceed `limit` bytes."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ServingError:
    return ServingError(
        413,
        "body_too_large",
        f"The body is larger than {limit} bytes. Send fewer rows per request, or raise "
        "MLOPS_SERVING_MAX_BODY_BYTES.",
        limit=limit,
    )


def media_type(header: str | None) -> str:
    """The MIME type of a supported Content-Type header, else a 415 error."""
    mime, *params = (part.strip() for part in (header or "").split(";"))
    mime = mime.lower()
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            mime = ""
    if mime in (JSON, "text/csv"):
        return mime
    raise ServingError(
        415,
        "unsupported_media_type",
        "Send Content-Type 'application/json' or 'text/csv' (UTF-8).",
        expected=[JSON, "text/csv"],
    )


class Endpoints:
    """The route bodies, one method per route, over one shared `Service`.

    The methods carry no docstrings: FastAPI would publish them as OpenAPI descriptions.
    """

    def __init__(self, service: Service) -> None:
        self.service = service

    async def ping(self) -> PlainTextResponse:
        # MLflow's ScoringServerClient.wait_server_ready and SageMaker poll /ping, then score
        self.service.check_ready()
        return PlainTextResponse("ok")

    async def ready(self) -> Response:
        self.service.check_ready()
        return Response(orjson.dumps({"status": "ready"}), media_type=JSON)

    async def live(self) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def version(self) -> Response:
        return Response(orjson.dumps(self.service.version_info()), media_type=JSON)

    async def metrics_endpoint(self) -> Response:
        content, content_type = metrics.render()
        return Response(content, headers={"Content-Type": content_type})

    async def invocations(self, request: Request) -> Response:
        # every answer, error or not, carries X-Request-ID and is counted and (when sampled)
        # captured under that id; no docstring here, FastAPI would publish it in the OpenAPI
        service = self.service
        start = time.perf_counter()
        live_id = request.headers.get(SHADOW_OF)
        if live_id is not None and _REQUEST_ID.fullmatch(live_id):
            request_id = live_id  # a shadow copy: captured under the live request's id
        else:
            request_id = uuid.uuid4().hex
        headers = {"X-Request-ID": request_id}
        parsed = raw = error = None
        try:
            runtime = service.scoring_runtime()
            mime = media_type(request.headers.get("content-type"))
            body = await service.read(read_body(request, service.settings.max_body_bytes))
            parsed, raw = await service.predict(runtime, body, mime)
            response = Response(predictions_json(raw), headers=headers, media_type=JSON)
        except ServingError as exc:
            error = exc
        except Exception as exc:
            log.error("unexpected %s while scoring", type(exc).__name__, exc_info=exc)
            error = ServingError(500, "internal_error", "The server failed; see the server log.")
        if error is not None:
            response = error_response(error, headers)
        elapsed = time.perf_counter() - start
        service.observe(request_id, elapsed, response.status_code, error, parsed, raw)
        return response

    async def feedback(self, request: Request) -> Response:
        service = self.service
        runtime = service.feedback_runtime()
        if media_type(request.headers.get("content-type")) != JSON:
            raise ServingError(415, "unsupported_media_type", "Send feedback as application/json.")
        body = await read_body(request, service.settings.max_body_bytes)
        accepted = service.record_feedback(runtime, body)
        return Response(orjson.dumps({"accepted": accepted}), 202, media_type=JSON)
