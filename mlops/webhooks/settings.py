"""Settings of the webhook receiver process (`mlops webhook serve`): MLOPS_WEBHOOK_<FIELD>.

The two secrets keep the names the senders' documentation uses for them:
MLOPS_GITHUB_WEBHOOK_SECRET and MLOPS_MLFLOW_WEBHOOK_SECRET (or a Prefect Secret block named by
MLOPS_WEBHOOK_GITHUB_SECRET_BLOCK / MLOPS_WEBHOOK_MLFLOW_SECRET_BLOCK). They are `SecretStr`,
so neither repr nor logging ever shows them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8787


class WebhookSettings(BaseSettings):
    """The receiver's settings; every field reads MLOPS_WEBHOOK_<FIELD> unless it says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="MLOPS_WEBHOOK_", extra="ignore", populate_by_name=True
    )

    host: str = Field(default="127.0.0.1", description="Interface the receiver listens on.")
    port: int = Field(
        default=DEFAULT_PORT, ge=1, le=65535, description="Port the receiver listens on."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1,
        description="Largest request body accepted, bytes (413 above; GitHub caps at 25 MB).",
    )
    timestamp_tolerance: float = Field(
        default=300.0, gt=0, description="Seconds an MLflow delivery's timestamp may be off."
    )
    replay_retention_days: float = Field(
        default=30.0,
        ge=3,
        description="Days a delivery id is kept to refuse replays; older records are pruned. At "
        "least 3: GitHub redelivers deliveries of the past 3 days with their original id.",
    )
    start_timeout: float = Field(
        default=0.8,
        gt=0,
        description="Seconds starting the flow runs of one delivery may take before the "
        "receiver answers 503 (the sender retries with the same delivery id).",
    )
    max_concurrent_starts: int = Field(
        default=4,
        ge=1,
        description="Flow runs being started on Prefect at once; deliveries beyond wait (within "
        "the start timeout). Prefect's server creates runs at a bounded rate (a sqlite one "
        "serialises them): more in flight only makes each slower.",
    )
    mapping_file: Path | None = Field(
        default=None,
        description="YAML or JSON file mapping events to Prefect deployments "
        "(default: alias `champion` moved -> update the deployments serving that model).",
    )
    github_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MLOPS_GITHUB_WEBHOOK_SECRET", "github_secret"),
        description="HMAC key of GitHub deliveries (env MLOPS_GITHUB_WEBHOOK_SECRET).",
    )
    mlflow_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MLOPS_MLFLOW_WEBHOOK_SECRET", "mlflow_secret"),
        description="HMAC key of MLflow deliveries (env MLOPS_MLFLOW_WEBHOOK_SECRET).",
    )
    github_secret_block: str | None = Field(
        default=None,
        description="Prefect Secret block holding the GitHub key, when the env var is unset.",
    )
    mlflow_secret_block: str | None = Field(
        default=None,
        description="Prefect Secret block holding the MLflow key, when the env var is unset.",
    )


def load_webhook_settings(**overrides: object) -> WebhookSettings:
    """The receiver's settings from the environment, OVERRIDES (field names) laid over them.

    Raises:
        InvalidInputError: a value does not validate; names the variable.
    """
    from mlops_pipeline.errors import InvalidInputError
    from pydantic import ValidationError

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return WebhookSettings(**given)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0])
        variable = field if field in given else _variable(field)
        shown = "<hidden>" if field in SECRET_FIELDS else repr(problem.get("input"))
        raise InvalidInputError(
            f"{variable}={shown} is invalid: {problem['msg']}.",
            hint=f"Fix or unset {variable}.",
            field=variable,
        ) from exc


SECRET_FIELDS = {
    "github_secret",
    "mlflow_secret",
    "MLOPS_GITHUB_WEBHOOK_SECRET",
    "MLOPS_MLFLOW_WEBHOOK_SECRET",
}


def _variable(field: str) -> str:
    if field.startswith("MLOPS_"):
        return field
    return "MLOPS_WEBHOOK_" + field.upper()
