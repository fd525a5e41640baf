"""Creating the receiver's webhook on an MLflow server (`mlops webhook register-mlflow`).

MLflow delivers webhooks only from `mlflow server` (the registry calls made through it), so the
webhook is created through the server's REST API, which stores its secret encrypted with the
server's MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY. Registering again under the same name updates that
webhook (URL, events, secret) instead of adding a second one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_pipeline.errors import BackendError, InvalidInputError

if TYPE_CHECKING:  # mlflow loads only to register: `mlops up` reads this module on every command
    from mlflow import MlflowClient

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
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

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


#: the key file `mlops up` generates once when MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY is unset
KEY_FILE = "mlflow-webhook-encryption.key"
#: seconds the stack's MLflow server caches its webhook list (MLflow's default is 60)
STACK_CACHE_TTL = "5"


def mlflow_server_env() -> dict[str, str]:
    """Environment of an `mlflow server` that delivers webhooks to a receiver on this machine.

    Plain-http and loopback targets are refused by MLflow unless MLFLOW_WEBHOOK_ALLOWED_SCHEMES
    includes http and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS is true (which turns MLflow's SSRF
    protection off: the stack binds 127.0.0.1 only). MLFLOW_WEBHOOK_CACHE_TTL is how long a new
    or changed webhook may go unseen. A value already in the environment is kept.
    """
    import os

    wanted = {
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": STACK_CACHE_TTL,
    }
    return {name: os.environ.get(name, value) for name, value in wanted.items()}


def encryption_key(home: Path) -> str:
    """MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY: from the environment, else a Fernet key generated
    once into HOME/mlflow-webhook-encryption.key (mode 0600) and read back on every later start.

    MLflow encrypts stored webhook secrets with it; without a fixed key each server process
    draws its own, so the secrets of registered webhooks do not survive a restart.

    Raises:
        OSError: HOME cannot be written or the key file read.
    """
    import base64
    import os

    if key := os.environ.get("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"):
        return key
    path = home / KEY_FILE
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:  # a Fernet key: 32 random bytes, url-safe base64
        out.write(base64.urlsafe_b64encode(os.urandom(32)).decode())
    return path.read_text().strip()
