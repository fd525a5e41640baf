"""Connect to the configured MLflow tracking server and registry."""

from __future__ import annotations

import fcntl
from functools import cache
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlops_pipeline.settings import get_settings


def connect() -> MlflowClient:
    """Point mlflow at the configured tracking/registry URIs and return a client for them."""
    settings = get_settings()
    tracking_uri = settings.resolved_tracking_uri
    registry_uri = settings.registry_uri or tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    if tracking_uri.startswith("sqlite:///"):
        _initialise_sqlite_once(tracking_uri, registry_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


@cache
def _initialise_sqlite_once(tracking_uri: str, registry_uri: str) -> None:
    """Create or migrate the sqlite schema while holding a file lock.

    MLflow migrates the schema when a process first opens the database; two processes doing
    that at once on a new file both fail ("table _alembic_tmp_... already exists").
    """
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
