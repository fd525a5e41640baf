"""The receiver: `POST /hooks/github` and `POST /hooks/mlflow` start mapped Prefect flow runs.

Each request goes through the same steps, and stops at the first that fails:

| step | failure |
|---|---|
| the endpoint has a secret | 503 `webhook_secret_missing`: it refuses every request |
| the body is at most MLOPS_WEBHOOK_MAX_BODY_BYTES | 413 `payload_too_large` |
| the signature matches the raw body | 401 `unauthorized` |
| (MLflow) the timestamp is within the tolerance | 409 `stale` |
| the body is JSON and names its event | 400 `invalid_input` |
| the routes' templates render | 422 `unmappable_event` |
| the delivery id is claimed for the first time | 409 `replayed`, with the first run's ids |
| the runs start within MLOPS_WEBHOOK_START_TIMEOUT | 503 `run_not_started` (claim released) |

At most MLOPS_WEBHOOK_MAX_CONCURRENT_STARTS deliveries start runs at once; the others wait for
a turn within the start timeout. A GitHub `ping` gets 200; an event no route maps gets 202
`ignored`; a mapped one gets 202 `accepted` with its flow run ids. Runs are started by the
injected `start_run` (Prefect's `run_deployment(..., timeout=0)` in `mlops webhook serve`), so
this module stays Prefect-free.
Secrets, signatures and bodies are never logged or echoed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlops_pipeline.errors import (
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    MLOpsError,
)
from mlops_pipeline.webhooks import replay
from mlops_pipeline.webhooks.mapping import (
    RunRequest,
    Source,
    WebhookMapping,
    load_mapping,
    plan_runs,
)
from mlops_pipeline.webhooks.settings import WebhookSettings
from mlops_pipeline.webhooks.signatures import (
    GITHUB_DELIVERY,
    GITHUB_EVENT,
    GITHUB_SIGNATURE,
    MLFLOW_DELIVERY,
    MLFLOW_SIGNATURE,
    MLFLOW_TIMESTAMP,
    verify_github,
    verify_mlflow,
)
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

logger = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0  # seconds between prunings of the replay store

#: starts one flow run; returns {"id": flow run id, "name": ..., "deployment": ...}
StartRun = Callable[[RunRequest], Awaitable[dict[str, Any]]]

SECRET_VARIABLES = {
    "github": "MLOPS_GITHUB_WEBHOOK_SECRET",
    "mlflow": "MLOPS_MLFLOW_WEBHOOK_SECRET",
}


class SecretMissingError(BackendUnavailableError):
    code = "webhook_secret_missing"


class PayloadTooLargeError(InvalidInputError):
    http_status = 413
    code = "payload_too_large"


class ReplayedDeliveryError(ConflictError):
    code = "replayed"


class RunNotStartedError(BackendUnavailableError):
    code = "run_not_started"


def _deployments_of(model: str) -> list[dict[str, Any]]:
    from mlops_pipeline.ledger import list_deployments

    return [d.model_dump(mode="json") for d in list_deployments() if d.model_name == model]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = PayloadTooLargeError(
        f"The body is larger than {limit} bytes.",
        hint="Raise MLOPS_WEBHOOK_MAX_BODY_BYTES if such deliveries are expected.",
    )
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidInputError(
            "The body is not JSON.", hint="Send the webhook with content type application/json."
        ) from None


def create_app(
    settings: WebhookSettings,
    start_run: StartRun,
    *,
    mapping: WebhookMapping | None = None,
    secrets: dict[str, SecretStr | None] | None = None,
    lifespan: Any = None,
) -> FastAPI:
    """The receiver app.

    Args:
        settings: limits, tolerance, start timeout, and the secrets unless SECRETS is given.
        start_run: starts one `RunRequest`'s flow run (async); its errors answer 503.
        mapping: the routes (default: the file MLOPS_WEBHOOK_MAPPING_FILE, else the default).
        secrets: {"github": ..., "mlflow": ...} keys resolved elsewhere (Prefect Secret blocks).
        lifespan: passed to FastAPI (opens the client `start_run` uses).

    Raises:
        InvalidInputError: the mapping file is missing or invalid.
    """
    routes = mapping if mapping is not None else load_mapping(settings.mapping_file)
    keys = secrets or {"github": settings.github_secret, "mlflow": settings.mlflow_secret}
    # load shedding: past Prefect's rate, a delivery waits here and gets a quick 503 (the sender
    # retries) instead of adding one more run creation that makes every other one slower
    starting = asyncio.Semaphore(settings.max_concurrent_starts)
    app = FastAPI(
        title="mlops-pipeline webhooks",
        description="GitHub and MLflow registry webhooks that start Prefect flow runs.",
        lifespan=lifespan,
    )

    @app.exception_handler(MLOpsError)
    async def _error(request: Request, exc: MLOpsError) -> JSONResponse:
        logger.warning(
            "%s %s -> %d %s: %s", request.method, request.url.path, exc.http_status, exc.code, exc
        )
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status)

    def secret(source: Source) -> str:
        key = keys.get(source)
        if key is None or not key.get_secret_value():
            variable = SECRET_VARIABLES[source]
            raise SecretMissingError(
                f"{variable} is not set: /hooks/{source} refuses every request until it is.",
                hint=f"Set {variable}, or name a Prefect Secret block in "
                f"MLOPS_WEBHOOK_{source.upper()}_SECRET_BLOCK, and restart the receiver.",
            )
        return key.get_secret_value()

    next_prune = 0.0  # monotonic time of the next pruning of the replay store

    def plan_and_claim(source: Source, event: str, delivery: str, payload: Any):
        nonlocal next_prune
        if time.monotonic() >= next_prune:  # at most hourly, on the delivery path: no timer
            next_prune = time.monotonic() + PRUNE_INTERVAL
            retention = dt.timedelta(days=settings.replay_retention_days)
            if pruned := replay.prune(dt.datetime.now(dt.UTC) - retention):
                logger.info("Pruned %d webhook delivery records older than %s", pruned, retention)
        runs = plan_runs(routes, source, event, payload, delivery, _deployments_of)
        return runs, replay.claim(source, delivery, event, "claimed" if runs else "ignored")

    async def handle(source: Source, event: str, delivery: str, payload: Any) -> JSONResponse:
        runs, earlier = await run_in_threadpool(plan_and_claim, source, event, delivery, payload)
        if earlier is not None:
            raise ReplayedDeliveryError(
                f"Delivery {delivery} was received before, at "
                f"{earlier.received_at:%Y-%m-%d %H:%M:%S}Z: no second run.",
                delivery_id=delivery,
                flow_runs=earlier.flow_runs,
            )
        answer: dict[str, Any] = {"source": source, "event": event, "delivery_id": delivery}
        if not runs:
            logger.info("%s %s delivery %s: ignored (no route)", source, event, delivery)
            return JSONResponse({"status": "ignored", **answer}, status_code=202)

        async def start_all() -> list[dict[str, Any]]:
            async with starting:
                return list(await asyncio.gather(*(start_run(run) for run in runs)))

        try:
            started = await asyncio.wait_for(start_all(), settings.start_timeout)
        except Exception as exc:
            await run_in_threadpool(replay.release, source, delivery)
            reason = (
                f"no answer within {settings.start_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}"
            )
            raise RunNotStartedError(
                f"The flow run for {source} {event} could not be started ({reason}).",
                hint="The delivery was not recorded: the sender's retry starts it.",
                delivery_id=delivery,
            ) from exc
        await run_in_threadpool(replay.finish, source, delivery, "accepted", list(started))
        logger.info(
            "%s %s delivery %s: started %s",
            source,
            event,
            delivery,
            ", ".join(f"{r['deployment']} ({r['id']})" for r in started),
        )
        return JSONResponse(
            {"status": "accepted", **answer, "flow_run_id": started[0]["id"], "flow_runs": started},
            status_code=202,
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        configured = {s: bool(k and k.get_secret_value()) for s, k in keys.items()}
        return {"status": "ok", "secrets_configured": configured}

    @app.post("/hooks/github", status_code=202)
    async def github(request: Request) -> JSONResponse:
        key = secret("github")
        body = await _read_body(request, settings.max_body_bytes)
        verify_github(key, body, request.headers.get(GITHUB_SIGNATURE))
        event = request.headers.get(GITHUB_EVENT)
        delivery = request.headers.get(GITHUB_DELIVERY)
        if not event or not delivery:
            missing = GITHUB_EVENT if not event else GITHUB_DELIVERY
            raise InvalidInputError(f"The request has no {missing} header.", header=missing)
        if event == "ping":
            logger.info("github ping delivery %s", delivery)
            return JSONResponse({"status": "pong", "delivery_id": delivery}, status_code=200)
        return await handle("github", event, delivery, _json(body))

    @app.post("/hooks/mlflow", status_code=202)
    async def mlflow(request: Request) -> JSONResponse:
        key = secret("mlflow")
        body = await _read_body(request, settings.max_body_bytes)
        headers = request.headers
        delivery = headers.get(MLFLOW_DELIVERY)
        verify_mlflow(
            key,
            body,
            delivery,
            headers.get(MLFLOW_TIMESTAMP),
            headers.get(MLFLOW_SIGNATURE),
            settings.timestamp_tolerance,
        )
        payload = _json(body)
        if not isinstance(payload, dict) or not payload.get("entity") or not payload.get("action"):
            raise InvalidInputError("The MLflow payload has no entity and action.")
        return await handle("mlflow", f"{payload['entity']}.{payload['action']}", delivery, payload)

    return app
