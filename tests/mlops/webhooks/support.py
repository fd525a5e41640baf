"""A real receiver process (`mlops webhook serve`) against a real Prefect server, and senders."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from mlops_pipeline.serving.contract import free_port
from mlops_pipeline.webhooks.signatures import github_signature, mlflow_headers

from tests.servers import running

MLOPS = Path(sys.executable).with_name("mlops").as_posix()

# the deployments the test mapping routes to (served_deployments' names)
DEPLOYMENTS = ("pipeline", "register", "redeploy")

MAPPING = {
    "github": {
        "push": [
            {
                "deployment": "mlops-pipeline/pipeline",
                "when": "payload.ref == 'refs/heads/main'",
                "parameters": {
                    "source": "/srv/models/{{ payload.repository.name }}/{{ payload.after }}",
                    "name": "{{ payload.repository.name }}",
                    "tags": {"git_commit": "{{ payload.after }}"},
                },
            }
        ],
        "release": [
            {
                "deployment": "register-model/register",
                "parameters": {
                    "source": "/srv/{{ payload.repository.name }}/{{ payload.release.tag_name }}",
                    "name": "{{ payload.repository.name }}",
                    "alias": "challenger",
                },
            }
        ],
    },
    "mlflow": {
        "model_version.created": [
            {
                "deployment": "redeploy/redeploy",
                "parameters": {
                    "name": "{{ payload.data.name }}",
                    "challenger": "models:/{{ payload.data.name }}/{{ payload.data.version }}",
                    "reason": "registered v{{ payload.data.version }}",
                },
            }
        ]
    },
}


def apply_deployments(api: str, home: Path, names: tuple[str, ...] = DEPLOYMENTS) -> None:
    """Create the served deployments NAMES on the Prefect server API (no runner: runs wait);
    `home` is the MLOPS_HOME whose ledger holds the spec schedules (none: the test's own)."""
    from unittest import mock

    from mlops_pipeline.flows.deployments import ServeSettings, served_deployments
    from mlops_pipeline.settings import get_settings
    from prefect.settings import PREFECT_API_URL, temporary_settings

    get_settings.cache_clear()
    try:
        with (
            mock.patch.dict(os.environ, {"MLOPS_HOME": str(home)}),
            temporary_settings({PREFECT_API_URL: api}),
        ):
            for deployment in served_deployments(ServeSettings(monitored_deployment=None)):
                if deployment.name in names:
                    deployment.apply()
    finally:
        get_settings.cache_clear()


@contextmanager
def receiver(home: Path, api: str, log: Path, **env: str) -> Iterator[str]:
    """`mlops webhook serve` on a free 127.0.0.1 port until the block ends; yields its URL."""
    port = free_port()
    full_env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "MLOPS_HOME": str(home),
        "MLOPS_WEBHOOK_PORT": str(port),
        **env,
    }
    for name in ("MLOPS_LEDGER_URI", "MLOPS_TRACKING_URI"):
        full_env.pop(name, None)
    url = f"http://127.0.0.1:{port}"
    with running([MLOPS, "webhook", "serve"], full_env, log, f"{url}/health", timeout=90):
        yield url


def github_post(
    url: str,
    secret: str | None,
    event: str,
    payload: Any,
    delivery: str | None = None,
    signature: str | None = None,
) -> httpx.Response:
    """POST PAYLOAD as GitHub does; signed with SECRET unless SIGNATURE is given (or None)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
    }
    if signature is None and secret is not None:
        signature = github_signature(secret, body)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(f"{url}/hooks/github", content=body, headers=headers, timeout=10)


def mlflow_body(event: str, data: dict[str, Any]) -> bytes:
    entity, action = event.split(".")
    return json.dumps(
        {"entity": entity, "action": action, "timestamp": "2026-11-30T00:00:00Z", "data": data}
    ).encode()


def mlflow_post(
    url: str,
    secret: str,
    body: bytes,
    delivery: str | None = None,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST BODY as MLflow does: signed delivery id, timestamp and body."""
    signed = mlflow_headers(secret, delivery or str(uuid.uuid4()), body, timestamp)
    sent = {"Content-Type": "application/json", **signed, **(headers or {})}
    sent = {k: v for k, v in sent.items() if v is not None}
    return httpx.post(f"{url}/hooks/mlflow", content=body, headers=sent, timeout=10)


def flow_runs(api: str, tag: str) -> list[dict[str, Any]]:
    """The flow runs tagged TAG on the Prefect server (e.g. delivery:<id>)."""
    response = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"tags": {"all_": [tag]}}, "limit": 200},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()
