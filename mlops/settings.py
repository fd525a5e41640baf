"""All configuration in one place: environment variables with the MLOPS_ prefix.

`get_settings()` reads them once per process. A caller that takes configuration from elsewhere
(the CLI's `--tracking-uri` and `--debug`) lays it over the environment with `override_settings`
instead of writing `os.environ`, so nothing leaks into the process's environment or its children.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: how a redeploy judges a challenger on live traffic after the offline gate
LiveGate = Literal["none", "shadow", "canary"]


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
    image_extras: str = Field(
        default="",
        description=(
            "Comma-separated extras of this project that every image installs besides "
            "'serving', e.g. 's3' for a service that captures to s3://."
        ),
    )
    orchestrate: Literal["auto", "always", "never"] = Field(
        default="auto",
        description=(
            "Run CLI steps as Prefect flow runs: 'auto' when a Prefect API is configured "
            "(PREFECT_API_URL), 'always' (starts a temporary server if none), or 'never'."
        ),
    )
    prefect_port: int = Field(
        default=4200, ge=1, le=65535, description="Port of the Prefect server `mlops up` starts."
    )
    mlflow_port: int = Field(
        default=5000, ge=1, le=65535, description="Port of the MLflow server `mlops up` starts."
    )
    actor: str | None = Field(
        default=None,
        description="Who the deployment ledger records as acting (CI, service accounts); "
        "default: the OS user.",
    )
    # the redeploy loop: retraining, the gate against the champion, the bake period
    trainer: str | None = Field(
        default=None,
        description="Retraining entry point, module:function; it receives the training data "
        "(features + label column) and returns a model with predict.",
    )
    redeploy_metric: str = Field(
        default="accuracy",
        description="Gate metric from sklearn.metrics (accuracy, f1, roc_auc, rmse, mae, ...).",
    )
    redeploy_min_improvement: float = Field(
        default=0.0,
        ge=0,
        description="How much better, in the metric's units, a challenger must be.",
    )
    redeploy_label_column: str = Field(
        default="label", min_length=1, description="The label's column in reference data."
    )
    redeploy_min_labelled_rows: int = Field(
        default=200,
        ge=1,
        description="Labelled captured rows needed to gate on them (else a reference split).",
    )
    redeploy_holdout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of the labelled rows the gate holds out."
    )
    redeploy_seed: int = Field(default=0, description="Seed of the holdout split.")
    redeploy_live_gate: LiveGate = Field(
        default="none",
        description="After the offline gate, judge the challenger on live traffic first: none "
        "(switch and bake), shadow (mirrored copies) or canary (stepped split).",
    )
    bake_seconds: float = Field(
        default=120.0, ge=0, description="Bake period after a switch, seconds (0 skips it)."
    )
    bake_interval: float = Field(default=5.0, gt=0, description="Seconds between bake scrapes.")
    bake_warmup_seconds: float = Field(
        default=5.0,
        ge=0,
        description="First seconds of a bake whose latencies stay out of p95 (errors count).",
    )
    bake_max_error_rate_increase: float = Field(
        default=0.01, ge=0, description="Allowed error-rate rise over the champion's (absolute)."
    )
    bake_max_p95_ratio: float = Field(
        default=1.5, ge=1, description="Allowed p95 latency ratio new / champion."
    )
    bake_latency_checks: int = Field(
        default=2,
        ge=0,
        description="Consecutive bake scrapes whose own p95 must all exceed the limits before "
        "latency counts as regressed (a burst inside one interval does not); 0 judges the p95 "
        "of every request since the warm-up.",
    )
    bake_min_requests: int = Field(
        default=100, ge=1, description="Requests a bake needs before its rates are judged."
    )

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def image_extra_names(self) -> list[str]:
        return [name.strip() for name in self.image_extras.split(",") if name.strip()]

    @property
    def artifact_root(self) -> str:
        return (self.resolved_home / "artifacts").as_uri()

    @property
    def resolved_ledger_uri(self) -> str:
        return self.ledger_uri or f"sqlite:///{self.resolved_home / 'ledger.db'}"


# values laid over the environment while an `override_settings` block runs (field -> value)
_overrides: dict[str, Any] = {}


@contextmanager
def override_settings(**values: Any) -> Iterator[None]:
    """Within the block, `get_settings()` returns VALUES (by field name) over the environment.

    The override is process-wide while the block runs, so threads a command starts (Prefect's,
    thread pools) see it too; on exit the previous settings come back. Values are validated
    lazily, by the first `get_settings()` call, as environment values are.

    Raises:
        TypeError: a name is not a field of `Settings`.
    """
    unknown = set(values) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"override_settings() got unknown settings: {sorted(unknown)}")
    previous = dict(_overrides)
    _overrides.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(previous)
        get_settings.cache_clear()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (under any active override).

    Raises:
        InvalidInputError: a value does not validate; names the variable (or overridden setting).
    """
    from mlops_pipeline.errors import InvalidInputError
    from pydantic import ValidationError

    try:
        return Settings(**_overrides)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0])
        variable = field if field in _overrides else "MLOPS_" + field.upper()
        source = "Setting" if field in _overrides else "Environment variable"
        raise InvalidInputError(
            f"{source} {variable}={problem.get('input')!r} is invalid: {problem['msg']}.",
            hint=f"Fix or unset {variable}.",
            field=variable,
        ) from exc
