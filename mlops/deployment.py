"""Deployment records shared by targets, the ledger, tasks and the CLI.

They live in the core (not in targets/) because the ledger stores them and imports go one way:
targets -> mlops core. targets.base re-exports them for target implementers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DeploymentStatus(StrEnum):
    """Lifecycle of a deployment as the ledger and `mlops status` report it."""

    CREATING = "creating"
    READY = "ready"
    UPDATING = "updating"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, already resolved from `models:/name@alias` or `/version`."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


Combiner = Literal["mean", "weighted_mean", "majority_vote", "custom"]


class EnsembleMember(BaseModel):
    """One model of an ensemble: a registry URI and its weight in `weighted_mean`."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(
        description="models:/name/version or models:/name@alias; resolved to a version at deploy."
    )
    weight: float = Field(default=1.0, gt=0, description="Weight in the weighted_mean combiner.")


class EnsembleConfig(BaseModel):
    """Several models served as one: every member scores the request, the combiner merges them.

    `custom` needs scoring code that defines `combine(predictions)`.
    """

    model_config = ConfigDict(extra="forbid")

    members: list[EnsembleMember] = Field(min_length=2, max_length=10)
    combiner: Combiner = Field(default="mean", description="How member predictions merge.")

    def serving_json(self, member_uris: list[str] | None = None) -> str:
        """MLOPS_SERVING_ENSEMBLE (serving.settings.EnsembleSettings, JSON): the members after
        the primary, which the service loads from its model URI. Members must be resolved
        (models:/name/version); `member_uris` replaces their URIs, e.g. with the directories
        an image holds them in."""
        rest = self.members[1:]
        uris = member_uris or [m.model_uri for m in rest]
        members = []
        for member, uri in zip(rest, uris, strict=True):
            name, _, version = member.model_uri.removeprefix("models:/").partition("/")
            labels = {"model_name": name, "model_version": version}
            members.append({"model_uri": uri, **labels, "weight": member.weight})
        weight = self.members[0].weight
        return json.dumps({"primary_weight": weight, "members": members, "combiner": self.combiner})


class DeployConfig(BaseModel):
    """Settings of one deployment; stored in the ledger so update and rollback reuse them."""

    model_config = ConfigDict(extra="forbid")

    port: int | None = Field(
        default=None, ge=1, le=65535, description="Stable port; a free one is picked when unset."
    )
    capture_uri: str | None = Field(
        default=None, description="Where the scoring service writes captures (dir or fsspec URI)."
    )
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="Capture sample rate.")
    api_key_file: str | None = Field(
        default=None, description="File with the API key(s) the scoring service accepts."
    )
    workers: int = Field(default=1, ge=1, description="Scoring service worker processes.")
    ready_timeout: float = Field(
        default=180.0, gt=0, description="Seconds a new version gets to answer /ready."
    )
    drain_timeout: float = Field(
        default=30.0, ge=0, description="Seconds in-flight requests get on the old version."
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="Target-specific settings (see each target's docs)."
    )
    scoring_code: str | None = Field(
        default=None, description="Absolute path of a Python module defining init() and run(data)."
    )
    ensemble: EnsembleConfig | None = Field(
        default=None,
        description="Members (resolved to models:/name/version once deployed) and combiner.",
    )


def with_primary(config: DeployConfig, model: ModelRef) -> DeployConfig:
    """`config` with its ensemble's first member switched to `model` (an update, rollback or
    promotion changes the primary; the other members stay)."""
    ensemble = config.ensemble
    if ensemble is None or ensemble.members[0].model_uri == model.uri:
        return config
    first = ensemble.members[0].model_copy(update={"model_uri": model.uri})
    members = [first, *ensemble.members[1:]]
    return config.model_copy(update={"ensemble": ensemble.model_copy(update={"members": members})})


class EnsemblePredictor:
    """An ensemble scored offline as the service scores it: every member's `predict` on the
    same frame, merged by the combiner (serving.ensemble.combine)."""

    def __init__(self, members: list[Any], weights: list[float], combiner: str) -> None:
        self.members = members
        self.weights = weights
        self.combiner = combiner

    def predict(self, frame: Any) -> Any:
        from mlops_pipeline.serving.ensemble import combine

        predictions = {str(i): m.predict(frame) for i, m in enumerate(self.members)}
        return combine(predictions, self.combiner, self.weights)


def load_predictor(model: ModelRef, config: DeployConfig | None = None) -> Any:
    """`model` loaded with MLflow pyfunc, or, when `config` has an ensemble (other than the
    `custom` combiner, which needs the scoring code), the ensemble with `model` as its primary:
    what drift references and the redeploy gate score with.

    Raises whatever MLflow raises loading a version.
    """
    import mlflow.pyfunc

    ensemble = config.ensemble if config is not None else None
    if ensemble is None or ensemble.combiner == "custom":
        return mlflow.pyfunc.load_model(model.uri)
    members = with_primary(config, model).ensemble.members
    return EnsemblePredictor(
        [mlflow.pyfunc.load_model(m.model_uri) for m in members],
        [m.weight for m in members],
        ensemble.combiner,
    )


def served_models(model: ModelRef, config: DeployConfig) -> list[ModelRef]:
    """Every model version a deployment serves: `model`, plus its resolved ensemble members."""
    found = [model]
    for member in config.ensemble.members if config.ensemble else []:
        name, _, version = member.model_uri.removeprefix("models:/").partition("/")
        ref = ModelRef(name, version)
        if ref not in found:
            found.append(ref)
    return found


class Deployment(BaseModel):
    """One named deployment: what it serves, where, and how to reach it."""

    name: str
    target_uri: str
    model_name: str
    model_version: str
    model_uri: str
    image: str | None = None
    endpoint_url: str | None = None
    status: DeploymentStatus = DeploymentStatus.READY
    capture_uri: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    config: dict[str, Any] = Field(default_factory=dict)

    @property
    def model(self) -> ModelRef:
        return ModelRef(self.model_name, self.model_version)

    @property
    def deploy_config(self) -> DeployConfig:
        return DeployConfig.model_validate(self.config)

    @property
    def models(self) -> list[ModelRef]:
        """The primary model and, for an ensemble, every other member version."""
        return served_models(self.model, self.deploy_config)
