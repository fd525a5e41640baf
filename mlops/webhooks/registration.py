"""Creating the receiver's webhook on an MLflow server (`mlops webhook register-mlflow`).

MLflow delivers webhooks only from `mlflow server` (the registry calls made through it), so the
webhook is created through the server's REST API, which stores its secret encrypted with the
server's MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY. Registering again under the same name updates that
webhook (URL, events, secret) instead of adding a second one.
"""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlops_pipeline.errors import BackendError, InvalidInputError

DEFAULT_EVENTS = ("model_version.created", "model_version_alias.created")
DEFAULT_NAME = "mlops-pipeline"


def register_mlflow_webhook(
    tracking_uri: str,
    url: str,
    secret: str,
    name: str = DEFAULT_NAME,
    events: tuple[str, ...] | list[str] = DEFAULT_EVENTS,
    test: bool = False,
) -> dict[str, Any]:
    """Create or update webhook NAME on the MLflow server TRACKING_URI, delivering EVENTS to URL.

    Args:
        tracking_uri: http(s) URL of an `mlflow server`.
        url: the receiver's endpoint, e.g. http://127.0.0.1:8787/hooks/mlflow.
        secret: the HMAC key (MLOPS_MLFLOW_WEBHOOK_SECRET); never returned.
        test: also have the server send a test delivery and report the receiver's answer.

    Returns:
        {"id", "name", "url", "events", "created": bool, "test": {...} | None}.

    Raises:
        InvalidInputError: TRACKING_URI is not a server, or MLflow refuses URL or EVENTS (e.g.
            http or a loopback address without MLFLOW_WEBHOOK_ALLOWED_SCHEMES /
            MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS on the server).
        BackendError: the server failed.
    """
    if tracking_uri.split(":", 1)[0] not in {"http", "https"}:
        raise InvalidInputError(
            f"MLflow delivers webhooks only from `mlflow server`, and {tracking_uri} is not one.",
            hint="Pass --tracking-uri http://HOST:PORT of the server (or run `mlops up`).",
            field="tracking_uri",
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        existing = next((w for w in _all(client) if w.name == name), None)
        if existing is None:
            hook = client.create_webhook(name=name, url=url, events=list(events), secret=secret)
        else:
            hook = client.update_webhook(
                existing.webhook_id, url=url, events=list(events), secret=secret, status="ACTIVE"
            )
        result: dict[str, Any] = {
            "id": hook.webhook_id,
            "name": hook.name,
            "url": hook.url,
            "events": [str(e) for e in hook.events],
            "created": existing is None,
            "test": None,
        }
        if test:
            outcome = client.test_webhook(hook.webhook_id)
            result["test"] = {
                "success": outcome.success,
                "status": outcome.response_status,
                "error": outcome.error_message,
            }
    except MlflowException as exc:
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise InvalidInputError(
                f"MLflow refused the webhook: {exc.message}",
                hint="For http or loopback URLs the MLflow server needs "
                "MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and "
                "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true.",
                field="url",
            ) from exc
        raise BackendError(f"MLflow could not register the webhook: {exc.message}") from exc
    return result


def _all(client: MlflowClient) -> list[Any]:
    hooks, token = [], None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        hooks.extend(page)
        token = page.token
        if not token:
            return hooks
