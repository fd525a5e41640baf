"""Settings of the two serving processes, each with its own environment prefix.

* The scoring service (`python -m mlops_pipeline.serving`) reads `MLOPS_SERVING_<FIELD>`.
* The stable-port proxy (`python -m mlops_pipeline.serving.proxy`) reads
  `MLOPS_SERVING_PROXY_<FIELD>`.

Neither shares a name with the pipeline's own `MLOPS_<FIELD>` settings (mlops/settings.py), so a
process that starts a service can pass its whole environment on: nothing of the pipeline's
configuration is read by the service, and the service's variables are set by the caller alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MLOPS_SERVING_"
PROXY_ENV_PREFIX = "MLOPS_SERVING_PROXY_"


def env_name(field: str, prefix: str = ENV_PREFIX) -> str:
    """The variable that sets `field`: `capture_uri` -> `MLOPS_SERVING_CAPTURE_URI`."""
    return f"{prefix}{field.upper()}"


class MemberSettings(BaseModel):
    """One ensemble member as the service loads it (the pipeline's EnsembleMember, resolved)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_uri: str = Field(description="What to load: models:/name/version or a model dir.")
    model_name: str | None = Field(default=None, description="Label in /version and capture.")
    model_version: str | None = Field(default=None, description="Label in /version and capture.")
    weight: float = Field(default=1.0, gt=0, description="Weight in weighted_mean and votes.")


class EnsembleSettings(BaseModel):
    """Members after the primary model (`model_uri`), and how their predictions merge."""

    model_config = ConfigDict(extra="forbid")

    primary_weight: float = Field(default=1.0, gt=0, description="Weight of `model_uri`.")
    members: list[MemberSettings] = Field(min_length=1, max_length=9)
    combiner: Literal["mean", "weighted_mean", "majority_vote", "custom"] = "mean"


class ServingSettings(BaseSettings):
    """Configuration of one scoring-service process (and its uvicorn workers)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=()
    )

    model_uri: str = Field(
        description="models:/name/3, models:/name@alias, runs:/..., or a local MLflow model dir."
    )
    host: str = Field(default="127.0.0.1", description="Bind address (images use 0.0.0.0).")
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes.")
    ready_dir: Path | None = Field(
        default=None,
        description="Where each worker marks that it has loaded the model (set by the server "
        "for workers > 1), so /ready waits for all of them.",
    )
    model_name: str | None = Field(default=None, description="Metric/capture label override.")
    model_version: str | None = Field(default=None, description="Metric/capture label override.")
    image: str | None = Field(default=None, description="Image reference reported by /version.")
    api_key_file: Path | None = Field(
        default=None, description="File with the primary key on line 1, optional secondary on 2."
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="413 above this.")
    max_rows: int = Field(default=100_000, ge=1, description="Most rows one request may score.")
    extra_columns: Literal["reject", "ignore"] = Field(
        default="reject", description="What to do with input columns the signature lacks."
    )
    capture_uri: str | None = Field(
        default=None, description="Local dir or fsspec URI for captured data; unset = off."
    )
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of requests kept.")
    capture_flush_seconds: float = Field(default=5.0, gt=0, description="Writer batch interval.")
    capture_batch_rows: int = Field(
        default=20_000, ge=1, description="Write a batch early once this many rows are queued."
    )
    capture_queue_rows: int = Field(
        default=200_000, ge=1, description="Rows held in memory before new ones are dropped."
    )
    capture_spool_dir: Path | None = Field(
        default=None, description="Local spill directory; default <tmp>/mlops-capture-spool."
    )
    capture_spool_max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=0, description="Spill limit; beyond it rows are dropped."
    )
    shutdown_timeout: float = Field(
        default=20.0, gt=0, description="Seconds SIGTERM waits for requests and capture upload."
    )
    batching: bool = Field(
        default=True,
        description="Combine concurrent requests into one predict when the model allows it.",
    )
    batch_max_rows: int = Field(
        default=1000, ge=1, description="Most rows in one combined predict call."
    )
    batch_max_wait_ms: float = Field(
        default=2.0,
        ge=0.0,
        le=1000.0,
        description="Longest a batch waits for requests still being read, in milliseconds.",
    )
    batch_verify: int = Field(
        default=16,
        ge=0,
        description="Combined batches also scored request by request and compared; any "
        "difference turns batching off for the model.",
    )
    scoring_code: Path | None = Field(
        default=None,
        description="Python module defining init() and run(data) around the model (score.py).",
    )
    ensemble: EnsembleSettings | None = Field(
        default=None, description="JSON: further models scored with `model_uri`, and a combiner."
    )
    keep_alive_seconds: int = Field(default=75, ge=1, description="HTTP keep-alive timeout.")
    warning_filters: Literal["compact", "inherit"] = Field(
        default="compact",
        description="compact: once the model is loaded, three filters (hide deprecations, show "
        "the rest) replace the ones imports installed, which scikit-learn replays around every "
        "tree of a forest; inherit: keep them. PYTHONWARNINGS and -W always win.",
    )
    log_level: str = Field(default="info")


class ProxySettings(BaseSettings):
    """Configuration of one stable-port proxy process; command-line options win over these."""

    model_config = SettingsConfigDict(env_prefix=PROXY_ENV_PREFIX, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Bind address (0.0.0.0 in containers).")
    port: int = Field(default=8080, ge=0, le=65535, description="The stable port.")
    upstream: str | None = Field(
        default=None, description="Initial upstream base URL, e.g. http://127.0.0.1:41234."
    )
    admin_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="When set, the admin API (/-/proxy/* but ping) is served on this port only "
        "and the stable port answers it 404: the stable port may be what a Service or a load "
        "balancer exposes, the admin port need not be.",
    )
    token: SecretStr | None = Field(
        default=None, description="Admin bearer token; without one the admin API answers 403."
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the admin token (when `token` is unset), re-read when it "
        "changes, so a rotated Kubernetes Secret takes effect without a restart; while the file "
        "is missing or empty the admin API answers 403. Its folder must exist at start.",
    )
    state_file: Path | None = Field(
        default=None,
        description="Where the current upstream is persisted on every switch and read back at "
        "start, so a restarted proxy keeps the switched version.",
    )
    version: str | None = Field(
        default=None,
        description="The initial upstream's version label (stats, X-Model-Version).",
    )
    routes: str | None = Field(
        default=None,
        description="Initial canary and shadow routes as JSON, in the shape PUT /-/proxy/routes "
        'takes ({"canary": {...} | null, "shadow": {...} | null, "sticky_header": ...}), read '
        "once at start; a state file wins over it. A Kubernetes pod gets it from its "
        "deployment's routes ConfigMap, so a pod started during a canary splits as the others.",
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for an upstream.")
    shadow_max_pending: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Shadow copies in flight at once; a copy beyond that is dropped and counted.",
    )
    shadow_max_pending_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Request bytes held by the shadow copies in flight; a copy that would pass "
        "it is dropped and counted, so large batch bodies cannot run the proxy out of memory.",
    )
    shadow_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a shadow copy may take before it is abandoned."
    )
    stats_samples: int = Field(
        default=10_000,
        ge=100,
        le=1_000_000,
        description="Recent requests kept per route and version for GET /-/proxy/stats.",
    )
