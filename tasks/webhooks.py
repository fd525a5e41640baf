"""The Prefect side of the webhook receiver: starting deployment runs, secrets from blocks.

`mlops webhook serve` hands `PrefectRunStarter` to the Prefect-free receiver
(`mlops_pipeline.webhooks.app`) as its `start_run`. Each run is Prefect's
`run_deployment(..., timeout=0)` (its async form, over one client the app opens at start-up),
returning at once with the new flow run; the delivery id is its idempotency key, so a sender's
retry never starts the same run twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.tasks.secret_blocks import load_secret_block
from mlops_pipeline.webhooks.mapping import RunRequest
from mlops_pipeline.webhooks.settings import WebhookSettings
from prefect.client.orchestration import PrefectClient, get_client
from prefect.deployments.flow_runs import arun_deployment
from pydantic import SecretStr


class PrefectRunStarter:
    """`start_run` for the receiver: one flow run of a Prefect deployment per `RunRequest`."""

    def __init__(self) -> None:
        self._client: PrefectClient | None = None

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """The receiver's lifespan: one Prefect client (connection pool) for all requests."""
        async with get_client() as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    async def __call__(self, run: RunRequest) -> dict[str, Any]:
        flow_run = await arun_deployment(
            run.deployment,
            client=self._client,
            parameters=run.parameters,
            timeout=0,
            idempotency_key=run.idempotency_key,
            flow_run_name=run.flow_run_name,
            tags=run.tags,
            as_subflow=False,
        )
        return {"id": str(flow_run.id), "name": flow_run.name, "deployment": run.deployment}


def require_prefect_api() -> str:
    """The Prefect API URL runs are started on.

    Raises:
        InvalidInputError: none is configured (a temporary server would know no deployments).
    """
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise InvalidInputError(
            "No Prefect API is configured, so the receiver could start no deployment runs.",
            hint="Set PREFECT_API_URL to the server that serves the flows, or run `mlops up`.",
            field="PREFECT_API_URL",
        )
    return url


def resolve_secrets(settings: WebhookSettings) -> dict[str, SecretStr | None]:
    """Each endpoint's key: the environment variable, else its Prefect Secret block, else None."""
    keys: dict[str, SecretStr | None] = {}
    for source in ("github", "mlflow"):
        key = getattr(settings, f"{source}_secret")
        block = getattr(settings, f"{source}_secret_block")
        given = key is not None and bool(key.get_secret_value())
        keys[source] = key if given or not block else load_secret_block(block)
    return keys
