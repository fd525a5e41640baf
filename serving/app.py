"""The FastAPI app: MLflow-compatible /invocations plus health, version, metrics and feedback."""

from __future__ import annotations

import gc
import hmac
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__ as serving_version
from . import metrics
from .capture import CaptureWriter, Feedback, Record
from .errors import ServingError, bad_input
from .model import Runtime, labels_from_uri, load_runtime, predictions_json
from .model import prediction_columns as capture_predictions
from .schema import json_type, request_schema
from .settings import ServingSettings

log = logging.getLogger(__name__)

LIVE_PATH = "/health/live"
OPEN_PATHS = frozenset({"/ping", "/ready", LIVE_PATH})
JSON = "application/json"
MAX_FEEDBACK_ITEMS = 10_000


def error_response(exc: ServingError, headers: dict[str, str] | None = None) -> Response:
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


class Service:
    """State shared by the routes: settings, the loaded model, metrics children, capture."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.load_error: str | None = None
        self.capture: CaptureWriter | None = None
        self.name, self.version = labels_from_uri(settings)
        self._bind_metrics()

    def _bind_metrics(self) -> None:
        labels = (self.name, self.version)
        self.m_latency = metrics.LATENCY.labels(*labels)
        self.m_rows = metrics.ROWS.labels(*labels)
        self.m_requests: dict[int, Any] = {}

    def load(self) -> None:
        """Load the model (in a background thread, so /health/live answers meanwhile)."""
        try:
            runtime = load_runtime(self.settings)
        except Exception as exc:
            log.exception("could not load the model %s", self.settings.model_uri)
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        # the model and libraries are ~1M long-lived objects; freezing them keeps full garbage
        # collections (triggered by per-request allocations) from stalling requests
        gc.collect()
        gc.freeze()
        self.name, self.version = runtime.name, runtime.version
        self._bind_metrics()
        if self.settings.capture_uri:
            capture = CaptureWriter(
                self.settings.capture_uri,
                runtime.name,
                runtime.version,
                feature_types=runtime.feature_types,
                prediction_types=runtime.prediction_types,
                label_type=runtime.label_type,
                flush_seconds=self.settings.capture_flush_seconds,
                batch_rows=self.settings.capture_batch_rows,
                queue_rows=self.settings.capture_queue_rows,
                spool_dir=self.settings.capture_spool_dir,
                spool_max_bytes=self.settings.capture_spool_max_bytes,
            )
            capture.start()
            self.capture = capture
        self.runtime = runtime
        log.info("model %s version %s is ready", runtime.name, runtime.version)

    def count(self, status: int, code: str | None = None) -> None:
        child = self.m_requests.get(status)
        if child is None:
            child = self.m_requests[status] = metrics.REQUESTS.labels(
                self.name, self.version, str(status)
            )
        child.inc()
        if code is not None:
            metrics.ERRORS.labels(self.name, self.version, str(status), code).inc()

    def sampled(self) -> bool:
        rate = self.settings.sample_rate
        return self.capture is not None and (rate >= 1.0 or random.random() < rate)

    def reject_unauthorized(self, path: str) -> None:
        if path == "/invocations":
            self.count(401, "unauthorized")
            if self.sampled():
                self.capture.submit(
                    Record(uuid.uuid4().hex, time.time(), 401, "unauthorized", 0.0, 0, None, None)
                )


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


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The ASGI app (`uvicorn --factory mlops_pipeline.serving.app:create_app`), built from env."""
    settings = settings or ServingSettings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=service.load, name="model-loader", daemon=True).start()
        yield
        if service.capture is not None:
            await run_in_threadpool(service.capture.close, settings.shutdown_timeout)

    app = FastAPI(
        title="mlops scoring service",
        version=serving_version,
        description="MLflow-compatible scoring with input checks, metrics and data capture.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError) -> Response:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ServingError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        return error_response(
            ServingError(500, "internal_error", "The server failed; see the server log.")
        )

    def check_ready() -> None:
        if service.runtime is None and service.load_error:
            raise ServingError(503, "model_load_failed", service.load_error)
        if service.runtime is None:
            raise ServingError(503, "not_ready", "The model is still loading.")

    @app.get(
        "/ping",
        response_class=PlainTextResponse,
        summary="Readiness as `mlflow models serve` answers it: 200 once the model can score",
    )
    async def ping() -> PlainTextResponse:
        # MLflow's ScoringServerClient.wait_server_ready and SageMaker poll /ping, then score
        check_ready()
        return PlainTextResponse("ok")

    @app.get("/ready", summary="Readiness: 200 once the model is loaded")
    async def ready() -> Response:
        check_ready()
        return Response(orjson.dumps({"status": "ready"}), media_type=JSON)

    @app.get(
        LIVE_PATH,
        response_class=PlainTextResponse,
        summary="Liveness: 200 whenever the process serves HTTP, also while the model loads",
    )
    async def live() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/version", summary="Model name, version, run id and image")
    async def version() -> Response:
        import mlflow.version

        rt = service.runtime
        body = {
            "model_name": service.name,
            "model_version": service.version,
            "model_uri": rt.model_uri if rt else settings.model_uri,
            "run_id": rt.run_id if rt else None,
            "image": settings.image,
            "mlflow_version": mlflow.version.VERSION,
            "serving_version": serving_version,
            "columns": [
                {"name": c.name, "type": c.type, "required": c.required} for c in (rt.columns or [])
            ]
            if rt
            else [],
        }
        return Response(orjson.dumps(body), media_type=JSON)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics_endpoint() -> Response:
        content, content_type = metrics.render()
        return Response(content, headers={"Content-Type": content_type})

    @app.post(
        "/invocations",
        summary="Score rows (MLflow scoring protocol)",
        responses={
            200: {"description": "Predictions", "content": {JSON: {"schema": _PREDICTIONS}}},
            **{s: {"description": d, "content": {JSON: {"schema": _ERROR}}} for s, d in _ERRORS},
        },
    )
    async def invocations(request: Request) -> Response:
        start = time.perf_counter()
        request_id = uuid.uuid4().hex
        headers = {"X-Request-ID": request_id}
        runtime = service.runtime
        parsed = raw = error = None
        try:
            if runtime is None:
                raise ServingError(503, "not_ready", "The model is still loading; retry shortly.")
            mime = media_type(request.headers.get("content-type"))
            body = await read_body(request, settings.max_body_bytes)
            parsed = runtime.parse(body, mime)
            if runtime.inline:
                raw = runtime.predict(parsed)
            else:
                raw = await run_in_threadpool(runtime.predict, parsed)
            response = Response(predictions_json(raw), headers=headers, media_type=JSON)
        except ServingError as exc:
            error = exc
        except Exception as exc:
            log.error("unexpected %s while scoring", type(exc).__name__, exc_info=exc)
            error = ServingError(500, "internal_error", "The server failed; see the server log.")
        if error is not None:
            response = error_response(error, headers)
        elapsed = time.perf_counter() - start
        status = response.status_code
        service.m_latency.observe(elapsed)
        if status == 200:
            service.count(200)
            service.m_rows.inc(parsed.n_rows)
        else:
            service.count(status, error.code)
        if service.sampled():
            ok = status == 200
            service.capture.submit(
                Record(
                    request_id,
                    time.time(),
                    status,
                    None if ok else error.code,
                    elapsed * 1000.0,
                    parsed.n_rows if ok else 0,
                    parsed.features if ok else None,
                    capture_predictions(raw, parsed.n_rows) if ok else None,
                )
            )
        return response

    @app.post(
        "/feedback",
        status_code=202,
        summary="Ground-truth labels for earlier requests, stored beside the capture",
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": _FEEDBACK}}}},
    )
    async def feedback(request: Request) -> Response:
        runtime = service.runtime
        if runtime is None:
            raise ServingError(503, "not_ready", "The model is still loading; retry shortly.")
        if service.capture is None:
            raise ServingError(
                409,
                "capture_disabled",
                "Feedback is stored beside the capture; start the service with a capture URI.",
            )
        if media_type(request.headers.get("content-type")) != JSON:
            raise ServingError(415, "unsupported_media_type", "Send feedback as application/json.")
        body = await read_body(request, settings.max_body_bytes)
        items = parse_feedback(body, runtime.label_type)
        now = time.time()
        for item in items:
            service.capture.submit(
                Feedback(item["request_id"], item.get("row"), item["label"], now)
            )
        return Response(orjson.dumps({"accepted": len(items)}), 202, media_type=JSON)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = _ERROR
        rt = service.runtime
        json_schema: dict[str, Any] = {"type": "object"}
        if rt is not None and rt.columns is not None:
            components.update(request_schema(rt.columns, rt.reject_extra))
            json_schema = {
                "oneOf": [
                    {"$ref": f"#/components/schemas/{n}"}
                    for n in ("DataframeSplit", "DataframeRecords", "Instances", "Inputs")
                ]
            }
        schema["paths"]["/invocations"]["post"]["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": json_schema}, "text/csv": {"schema": {"type": "string"}}},
        }
        if rt is not None:  # only a loaded model's schema is final
            app.openapi_schema = schema
        return schema

    app.openapi = openapi
    if settings.api_key_file is not None:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=ApiKeys(settings.api_key_file),
            on_reject=service.reject_unauthorized,
        )
    return app


def _label_kind(label_type: pa.DataType | None) -> tuple[tuple[type, ...], str] | None:
    """JSON types a label must have to be stored in the type of the model's output."""
    if label_type is None:
        return None
    if pa.types.is_integer(label_type):
        return (int,), "integer"
    if pa.types.is_floating(label_type):
        return (int, float), "number"
    if pa.types.is_boolean(label_type):
        return (bool,), "boolean"
    if pa.types.is_string(label_type):
        return (str,), "string"
    return None


def parse_feedback(body: bytes, label_type: pa.DataType | None) -> list[dict[str, Any]]:
    """Check a feedback body: one {request_id, label, row?} object or {"feedback": [...]};
    labels must fit the model's output type so every feedback file has the same schema."""
    kind = _label_kind(label_type)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_input("malformed_json", "The feedback body is not valid JSON.") from None
    items = doc.get("feedback") if type(doc) is dict and "feedback" in doc else [doc]
    if type(items) is not list or not items:
        raise bad_input("invalid_format", "'feedback' must be a non-empty list.", field="feedback")
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise ServingError(
            413, "too_many_rows", f"At most {MAX_FEEDBACK_ITEMS} labels per request."
        )
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise bad_input("invalid_format", f"Feedback item {i} must be an object.", row=i)
        unknown = set(item) - {"request_id", "row", "label"}
        if unknown:
            field = sorted(map(str, unknown))[0]
            raise bad_input(
                "unexpected_field", f"Feedback item {i} has unknown field '{field}'.", field=field
            )
        rid = item.get("request_id")
        if type(rid) is not str or not 0 < len(rid) <= 128:
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'request_id' must be the X-Request-ID string of a response.",
                field="request_id",
                row=i,
            )
        if "label" not in item or type(item["label"]) not in (int, float, str, bool):
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'label' must be a number, string or boolean, "
                f"got {json_type(item.get('label'))}.",
                field="label",
                row=i,
            )
        if kind is not None and type(item["label"]) not in kind[0]:
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'label' must be a {kind[1]} like the model's predictions, "
                f"got {json_type(item['label'])}.",
                field="label",
                row=i,
                expected=kind[1],
            )
        row = item.get("row")
        if row is not None and (type(row) is not int or row < 0):
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'row' must be a non-negative integer or absent.",
                field="row",
                row=i,
            )
    return items


_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
    },
}
_PREDICTIONS = {
    "type": "object",
    "required": ["predictions"],
    "properties": {"predictions": {"type": "array", "items": {}}},
}
_ERRORS = (
    (400, "Input does not match the signature"),
    (401, "Missing or wrong API key"),
    (413, "Body or row count over the limit"),
    (415, "Unsupported content type"),
    (422, "The model could not score the input"),
    (503, "Model not loaded yet"),
)
_FEEDBACK = {
    "oneOf": [
        {
            "type": "object",
            "required": ["request_id", "label"],
            "properties": {
                "request_id": {"type": "string"},
                "row": {"type": "integer", "minimum": 0},
                "label": {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
            },
        },
        {
            "type": "object",
            "required": ["feedback"],
            "properties": {"feedback": {"type": "array", "items": {"type": "object"}}},
        },
    ]
}
