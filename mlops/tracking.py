"""Connect to the configured MLflow tracking server and registry."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from mlops.settings import get_settings


def connect() -> MlflowClient:
    """Point mlflow at the configured tracking/registry URIs and return a client for them."""
    settings = get_settings()
    tracking_uri = settings.resolved_tracking_uri
    if tracking_uri.startswith("sqlite:///"):
        settings.resolved_home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    registry_uri = settings.registry_uri or tracking_uri
    mlflow.set_registry_uri(registry_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created with artifacts under MLOPS_HOME when it is new."""
    from mlflow.exceptions import MlflowException

    settings = get_settings()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = (
        f"{settings.artifact_root}/{name}"
        if settings.resolved_tracking_uri.startswith("sqlite:")
        else None
    )
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        # another process created it between our lookup and create
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
