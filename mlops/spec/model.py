"""The deployment spec: one YAML file that says what a deployment serves, where and how.

Every model is `extra="forbid"`, so a misspelt field is an error, not a silently ignored line.
Fields that map onto the deployment's recorded settings (`DeployConfig`) are listed in
`mlops_pipeline.spec.plan`; `monitoring` and `redeploy` are kept with the applied spec in the
ledger database (`mlops_pipeline.spec.store`): the monitor flow takes its drift settings and
the redeploy flow its policy from there; the monitoring schedule is recorded (the served
monitor deployment's cron is still MLOPS_MONITORED_DEPLOYMENT's, see flows/deployments.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from mlops_pipeline.deployment import Combiner
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.settings import LiveGate
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# the deployment name rule of targets.operations.DEPLOYMENT_NAME (a DNS label)
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MODEL_URI_PATTERN = r"^models:/[^/@]+(/[^/@]+|@[A-Za-z0-9_-]+)$"
# Kubernetes resource quantities (as targets.kubernetes_settings.QUANTITY): 500m, 2, 512Mi
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# five cron fields; targets.batch.validate_cron checks each field's range when the spec resolves
CRON_PATTERN = r"^\S+(\s+\S+){4}$"
KUBERNETES = "kubernetes"
#: DeployConfig.options keys the spec sets from `replicas`, `max_replicas` and `resources`
MAPPED_OPTIONS = (
    "min_replicas",
    "max_replicas",
    "cpu_request",
    "cpu_limit",
    "memory_request",
    "memory_limit",
)

_FORBID = ConfigDict(extra="forbid")
# YAML writes `service_port: 8080` and `limit: 1` as numbers; the models keep them as text
# (coerce_numbers_to_str), and the schema says numbers are welcome so editors do not complain
OptionValue = Annotated[str, WithJsonSchema({"type": ["string", "number", "boolean"]})]
QuantityText = Annotated[
    str | None,
    Field(pattern=QUANTITY_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": QUANTITY_PATTERN},
                {"type": "number", "minimum": 0},
                {"type": "null"},
            ]
        }
    ),
]


class SecretRef(BaseModel):
    """Where an API key lives: an environment variable or a Prefect Secret block, by name.

    The spec never holds the key itself; `mlops deploy --spec` reads it when it applies.
    """

    model_config = _FORBID

    env: str | None = Field(
        default=None, pattern=ENV_NAME_PATTERN, description="Environment variable holding the key."
    )
    block: str | None = Field(
        default=None, min_length=1, description="Prefect Secret block holding the key."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.block is None):
            raise ValueError("give exactly one of env (a variable name) or block (a Secret block)")
        return self


class AuthSpec(BaseModel):
    """The API keys clients must send (`Authorization: Bearer KEY`): a primary key and, while
    rotating, a secondary one."""

    model_config = _FORBID

    primary: SecretRef = Field(description="The key clients send.")
    secondary: SecretRef | None = Field(
        default=None, description="A second accepted key, for rotation without downtime."
    )


class MemberSpec(BaseModel):
    """One model of an ensemble."""

    model_config = _FORBID

    uri: str = Field(pattern=MODEL_URI_PATTERN, description="models:/NAME/VERSION or @ALIAS.")
    weight: float = Field(default=1.0, gt=0, description="Weight in the weighted_mean combiner.")


class TargetSpec(BaseModel):
    """Where the deployment runs."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    uri: str = Field(
        default="local:",
        min_length=1,
        description="local:, docker:, kubernetes:/NAMESPACE[?context=CTX], iotedge:/HUB/DEVICE.",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Stable port; a free one is picked when unset."
    )
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="Target-specific settings (the target's README section), e.g. "
        "service_type: NodePort.",
    )

    @field_validator("options", mode="before")
    @classmethod
    def _booleans_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `flag: true` means the option text "true"
            return {k: str(v).lower() if isinstance(v, bool) else v for k, v in value.items()}
        return value


class Quantity(BaseModel):
    """A Kubernetes resource request and limit."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    request: QuantityText = Field(default=None, description="e.g. 250m.")
    limit: QuantityText = Field(default=None, description="e.g. 1.")


class ResourcesSpec(BaseModel):
    """CPU and memory of each pod (kubernetes: targets)."""

    model_config = _FORBID

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. request 250m, limit 1.")
    memory: Quantity | None = Field(
        default=None, description="Memory, e.g. request 512Mi, limit 1Gi."
    )


class CaptureSpec(BaseModel):
    """Where the scoring service writes request/prediction captures, and how many."""

    model_config = _FORBID

    uri: str = Field(
        min_length=1, description="Directory (relative to the spec file) or fsspec URI."
    )
    sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of requests captured.")


class MonitoringSpec(BaseModel):
    """How the monitor watches this deployment."""

    model_config = _FORBID

    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        description="Cron (MINUTE HOUR DAY MONTH WEEKDAY, UTC) of the monitor runs, e.g. "
        "'0 * * * *'.",
    )
    drift: DriftConfig = Field(
        default_factory=DriftConfig, description="Drift test settings (`mlops drift --config`)."
    )


class RedeploySpec(BaseModel):
    """How a redeploy judges a challenger; unset fields keep the MLOPS_REDEPLOY_* and
    MLOPS_BAKE_* settings."""

    model_config = _FORBID

    metric: str | None = Field(
        default=None, min_length=1, description="Gate metric, e.g. accuracy, f1_macro, rmse."
    )
    min_improvement: float | None = Field(
        default=None, ge=0, description="How much the challenger must beat the champion by."
    )
    bake_seconds: float | None = Field(
        default=None, ge=0, description="Bake period after the switch (0 skips it)."
    )
    live_gate: LiveGate | None = Field(
        default=None,
        description="After the offline gate, judge the challenger on live traffic first: none "
        "(switch and bake), shadow (mirrored copies) or canary (stepped split).",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        from mlops_pipeline.errors import InvalidInputError
        from mlops_pipeline.redeploy.metrics import get_metric

        if value is not None:
            try:
                get_metric(value)
            except InvalidInputError as exc:
                raise ValueError(exc.message) from exc
        return value


class DeploymentSpec(BaseModel):
    """A deployment as one reviewable file: `mlops deploy --spec deploy.yaml`."""

    model_config = ConfigDict(
        extra="forbid",
        title="mlops deployment spec",
        json_schema_extra={"$id": "https://mlops-pipeline.local/schemas/deploy-spec.json"},
    )

    name: str = Field(pattern=NAME_PATTERN, description="Deployment name (lowercase, digits, -).")
    model: str | None = Field(
        default=None,
        pattern=MODEL_URI_PATTERN,
        description="The model served: models:/NAME/VERSION or models:/NAME@ALIAS "
        "(or give `models` for an ensemble).",
    )
    models: list[MemberSpec] | None = Field(
        default=None,
        min_length=2,
        max_length=10,
        description="An ensemble: 2 to 10 models whose predictions `combiner` merges.",
    )
    combiner: Combiner | None = Field(
        default=None, description="How ensemble predictions merge (default mean)."
    )
    scoring_code: str | None = Field(
        default=None,
        min_length=1,
        description="Python module (relative to the spec file) defining init() and run(data); "
        "with combiner custom, also combine(predictions).",
    )
    target: TargetSpec = Field(default_factory=TargetSpec, description="Where it runs.")
    replicas: int = Field(
        default=1,
        ge=1,
        description="kubernetes: pods (the autoscaler's minimum); other targets: scoring worker "
        "processes behind the endpoint.",
    )
    max_replicas: int | None = Field(
        default=None, ge=1, description="kubernetes: the autoscaler's maximum pods."
    )
    resources: ResourcesSpec | None = Field(
        default=None, description="kubernetes: CPU and memory requests and limits of each pod."
    )
    capture: CaptureSpec | None = Field(default=None, description="Request/prediction capture.")
    auth: AuthSpec | None = Field(
        default=None, description="Names of the API key secrets (never the keys)."
    )
    monitoring: MonitoringSpec | None = Field(default=None, description="Monitor settings.")
    redeploy: RedeploySpec | None = Field(default=None, description="Redeploy gate and bake.")

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        if (self.model is None) == (self.models is None):
            raise ValueError(_located("model", "give exactly one of model (one URI) or models"))
        if self.combiner is not None and self.models is None:
            raise ValueError(_located("combiner", "a combiner needs models (an ensemble)"))
        if self.combiner == "custom" and self.scoring_code is None:
            raise ValueError(
                _located("combiner", "combiner custom needs scoring_code defining combine()")
            )
        kubernetes = self.target_scheme == KUBERNETES
        for field in ("max_replicas", "resources"):
            if getattr(self, field) is not None and not kubernetes:
                raise ValueError(_located(field, "applies to kubernetes: targets only; remove it"))
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(
                _located("max_replicas", f"{self.max_replicas} is below replicas {self.replicas}")
            )
        taken = sorted(set(self.target.options) & set(MAPPED_OPTIONS))
        if taken and kubernetes:
            raise ValueError(
                _located(
                    f"target.options.{taken[0]}",
                    "is set by replicas/max_replicas/resources; set it there instead",
                )
            )
        return self

    @property
    def target_scheme(self) -> str:
        return self.target.uri.strip().partition(":")[0].lower() or "local"

    def model_uris(self) -> list[str]:
        """The model URIs as written: one, or the ensemble's members in order."""
        return [self.model] if self.model else [m.uri for m in self.models or []]

    def to_yaml_dict(self) -> dict[str, Any]:
        """The spec as written back to a file: unset fields left out."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


# A model validator's error has no field of its own in pydantic's `loc`; the message starts
# with `@field.path: ` so the loader can point at that field's line (see spec.load).
_LOCATED = re.compile(r"^@(?P<field>[\w.]+): (?P<message>.*)$", re.S)


def _located(field: str, message: str) -> str:
    return f"@{field}: {message}"


def split_located(message: str) -> tuple[str | None, str]:
    """(`field.path`, message) of a model validator's error; (None, message) for others."""
    found = _LOCATED.match(message)
    return (found["field"], found["message"]) if found else (None, message)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec (draft 2020-12), for editors and `mlops spec schema`."""
    schema = DeploymentSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
