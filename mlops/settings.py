"""All configuration in one place: environment variables with the MLOPS_ prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """mlops-pipeline settings; every field reads MLOPS_<FIELD> from the environment."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    home: Path = Field(
        default=Path(".mlops"),
        description="Directory for the embedded defaults (MLflow db, artifacts, ledger, captures).",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI; default sqlite:///$MLOPS_HOME/mlflow.db.",
    )
    registry_uri: str | None = Field(
        default=None, description="MLflow registry URI when it differs from the tracking URI."
    )
    ledger_uri: str | None = Field(
        default=None,
        description="SQLAlchemy URI of the deployment ledger; default sqlite in MLOPS_HOME.",
    )
    debug: bool = Field(default=False, description="Show tracebacks on errors.")
    base_image: str = Field(default="python:3.11-slim", description="Base image for build-image.")
    wheelhouse: Path | None = Field(
        default=None,
        description="Directory of wheels that image builds install from (no network in builds).",
    )
    orchestrate: Literal["auto", "always", "never"] = Field(
        default="auto",
        description=(
            "Run CLI steps as Prefect flow runs: 'auto' when a Prefect API is configured "
            "(PREFECT_API_URL), 'always' (starts a temporary server if none), or 'never'."
        ),
    )
    actor: str | None = Field(
        default=None,
        description="Who the deployment ledger records as acting (CI, service accounts); "
        "default: the OS user.",
    )

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.resolved_home / "artifacts").as_uri()

    @property
    def resolved_ledger_uri(self) -> str:
        return self.ledger_uri or f"sqlite:///{self.resolved_home / 'ledger.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    from mlops_pipeline.errors import InvalidInputError
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problem = exc.errors()[0]
        variable = "MLOPS_" + str(problem["loc"][0]).upper()
        raise InvalidInputError(
            f"Environment variable {variable}={problem.get('input')!r} is invalid: "
            f"{problem['msg']}.",
            hint=f"Fix or unset {variable}.",
            field=variable,
        ) from exc
