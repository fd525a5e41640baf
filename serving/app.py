"""The FastAPI app: MLflow-compatible /invocations plus health, version, metrics and feedback.

Three layers, as in Seldon MLServer's rest/app.py, rest/endpoints.py and handlers/dataplane.py:
this module declares the routes, error handlers, OpenAPI document and middleware; `endpoints`
handles HTTP (bodies, content types, API keys, status codes); `handler.Service` holds the model
and does the work shared by every route (validation, predict, capture, metrics).
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response

from . import __version__ as serving_version
from .endpoints import JSON, LIVE_PATH, ApiKeyMiddleware, ApiKeys, Endpoints, error_response
from .errors import ServingError
from .handler import Service
from .schema import request_schema
from .settings import ServingSettings

log = logging.getLogger(__name__)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The ASGI app (`uvicorn --factory mlops_pipeline.serving.app:create_app`), built from env."""
    settings = settings or ServingSettings()
    service = Service(settings)
    endpoints = Endpoints(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=service.load, name="model-loader", daemon=True).start()
        yield
        if service.batcher is not None:
            service.batcher.close()
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

    app.add_api_route(
        "/ping",
        endpoints.ping,
        methods=["GET"],
        response_class=PlainTextResponse,
        summary="Readiness as `mlflow models serve` answers it: 200 once the model can score",
    )
    app.add_api_route(
        "/ready",
        endpoints.ready,
        methods=["GET"],
        summary="Readiness: 200 once the model is loaded",
    )
    app.add_api_route(
        LIVE_PATH,
        endpoints.live,
        methods=["GET"],
        response_class=PlainTextResponse,
        summary="Liveness: 200 whenever the process serves HTTP, also while the model loads",
    )
    app.add_api_route(
        "/version",
        endpoints.version,
        methods=["GET"],
        summary="Model name, version, run id and image",
    )
    app.add_api_route(
        "/metrics",
        endpoints.metrics_endpoint,
        methods=["GET"],
        summary="Prometheus metrics",
    )
    app.add_api_route(
        "/invocations",
        endpoints.invocations,
        methods=["POST"],
        summary="Score rows (MLflow scoring protocol)",
        responses={
            200: {"description": "Predictions", "content": {JSON: {"schema": _PREDICTIONS}}},
            **{s: {"description": d, "content": {JSON: {"schema": _ERROR}}} for s, d in _ERRORS},
        },
    )
    app.add_api_route(
        "/feedback",
        endpoints.feedback,
        methods=["POST"],
        status_code=202,
        summary="Ground-truth labels for earlier requests, stored beside the capture",
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": _FEEDBACK}}}},
    )

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
        content = {JSON: {"schema": json_schema}, "text/csv": {"schema": {"type": "string"}}}
        code = service.scorer.code if service.scorer is not None else None
        if code is not None and (declared := code.input_schema()) is not None:
            content = {JSON: {"schema": _components(declared, components)}}
        post = schema["paths"]["/invocations"]["post"]
        post["requestBody"] = {"required": True, "content": content}
        if code is not None and (output := code.output_schema()) is not None:
            post["responses"]["200"]["content"][JSON]["schema"] = {
                **_PREDICTIONS,
                "properties": {"predictions": _components(output, components)},
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


def _components(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON Schema with its `$defs` moved into the OpenAPI components."""
    schema = dict(schema)
    components.update({k: _rebase(v) for k, v in schema.pop("$defs", {}).items()})
    return _rebase(schema)


def _rebase(node: Any) -> Any:
    """`#/$defs/X` references rewritten to `#/components/schemas/X`."""
    if isinstance(node, dict):
        return {
            k: v.replace("#/$defs/", "#/components/schemas/")
            if k == "$ref" and isinstance(v, str)
            else _rebase(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node


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
    (500, "The scoring code or the server failed (the log has the trace)"),
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
