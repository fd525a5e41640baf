"""What a monitor compares against: the deployment's served version and its reference bundle.

`resolve_target` finds what a deployment serves and where it captures (the ledger, or explicit
overrides), `load_reference` downloads the reference rows, profile and GX suite stored with the
version at registration, and `predict_reference` scores the reference rows with the version so
prediction drift has a baseline. Column names follow the shared contract
(`mlops_pipeline.serving.contract`): model inputs, `prediction` / `prediction.<output>`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlops_pipeline.errors import BackendError, InvalidInputError, NotFoundError
from mlops_pipeline.monitoring.captures import monitor_dir
from mlops_pipeline.monitoring.profile import profile_kinds
from mlops_pipeline.registry.registration import PROFILE_TAG, REFERENCE_TAG, SUITE_TAG
from mlops_pipeline.registry.signatures import model_input_columns
from mlops_pipeline.serving.contract import (
    ModelURI,
    is_prediction_column,
    parse_model_uri,
    prediction_column,
)
from mlops_pipeline.tracking import connect

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorTarget:
    """The deployment being monitored: where it captures to and which version it serves."""

    deployment: str
    capture_uri: str
    model_name: str
    model_version: str

    @property
    def model_uri(self) -> str:
        return str(ModelURI(self.model_name, version=self.model_version))


@dataclass
class ReferenceBundle:
    """What registration stored with a model version: reference rows, profile, GX suite."""

    frame: pd.DataFrame
    profile: dict[str, Any]
    suite: dict[str, Any]


def _name_and_version(model_uri: str) -> tuple[str, str]:
    """The registered name and version number that `model_uri` designates now."""
    try:
        uri = parse_model_uri(model_uri)
    except ValueError as exc:
        raise InvalidInputError(
            f"model_uri {exc}",
            hint="The monitor reads the version's reference data from the registry.",
            field="model_uri",
        ) from exc
    if uri.version and uri.version != "latest":
        return uri.name, uri.version
    client = connect()
    try:
        if uri.alias:
            found = client.get_model_version_by_alias(uri.name, uri.alias)
            return found.name, str(found.version)
        versions = client.search_model_versions(f"name = '{uri.name}'")
    except MlflowException as exc:
        raise NotFoundError(f"{model_uri} does not resolve to a model version.") from exc
    if not versions:
        raise NotFoundError(f"{model_uri} does not resolve to a model version.")
    return uri.name, str(max(int(v.version) for v in versions))


def resolve_target(
    deployment: str, capture_uri: str | None = None, model_uri: str | None = None
) -> MonitorTarget:
    """Find what `deployment` serves and captures: from the ledger, or from the overrides
    `capture_uri` (any fsspec URL) and `model_uri` (models:/NAME/VERSION, /latest or @ALIAS).

    Raises:
        InvalidInputError: `model_uri` is not a models:/ URI, or nothing is captured.
        NotFoundError: no such deployment in the ledger, or `model_uri` resolves to nothing.
    """
    if model_uri:
        name, version = _name_and_version(model_uri)
    else:
        from mlops_pipeline.ledger import get_deployment

        record = get_deployment(deployment)
        name, version = record.model_name, str(record.model_version)
        capture_uri = capture_uri or record.capture_uri
    if not capture_uri:
        raise InvalidInputError(
            f"Deployment '{deployment}' does not capture its traffic, so there is nothing to "
            "monitor.",
            hint="Redeploy it with a capture URI (deploy --capture-uri DIR).",
            deployment=deployment,
        )
    return MonitorTarget(deployment, capture_uri, name, version)


def _download_json(artifact_uri: str, destination: str) -> dict[str, Any]:
    import mlflow

    return json.loads(
        Path(
            mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=destination)
        ).read_text()
    )


def load_reference(model_name: str, model_version: str) -> ReferenceBundle:
    """Download the reference rows, profile and GX suite stored with a model version.

    Raises:
        NotFoundError: the version does not exist or was registered without reference data.
        BackendError: the artifacts cannot be downloaded or read.
    """
    import mlflow

    client = connect()
    try:
        tags = client.get_model_version(model_name, model_version).tags
    except MlflowException as exc:
        raise NotFoundError(f"Model version {model_name}/{model_version} does not exist.") from exc
    missing = [t for t in (REFERENCE_TAG, PROFILE_TAG, SUITE_TAG) if not tags.get(t)]
    if missing:
        raise NotFoundError(
            f"Model version {model_name}/{model_version} has no reference data (tags {missing}).",
            hint="Register the model with --reference-data so it can be monitored.",
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            reference_path = mlflow.artifacts.download_artifacts(
                artifact_uri=tags[REFERENCE_TAG], dst_path=tmp
            )
            frame = pd.read_parquet(reference_path)
            profile = _download_json(tags[PROFILE_TAG], tmp)
            suite = _download_json(tags[SUITE_TAG], tmp)
        except (MlflowException, OSError, ValueError) as exc:
            raise BackendError(
                f"Could not read the reference artifacts of {model_name}/{model_version}: {exc}"
            ) from exc
    return ReferenceBundle(frame, profile, suite)


def prediction_frame(output: Any, index: pd.Index) -> pd.DataFrame:
    """Model output (array, frame or dict of outputs) as capture-style columns, one row per
    `index` entry: `prediction` for one output, `prediction.<name>` for several."""
    if isinstance(output, pd.DataFrame):
        if output.shape[1] == 1:
            return pd.DataFrame({prediction_column(): output.iloc[:, 0].to_numpy()}, index=index)
        return pd.DataFrame(
            {prediction_column(c): output[c].to_numpy() for c in output.columns}, index=index
        )
    if isinstance(output, dict):
        return pd.DataFrame({prediction_column(k): np.asarray(v) for k, v in output.items()}, index)
    array = np.asarray(output)
    if array.ndim == 2 and array.shape[1] > 1:
        return pd.DataFrame(
            {prediction_column(i): array[:, i] for i in range(array.shape[1])}, index
        )
    return pd.DataFrame({prediction_column(): array.reshape(len(index))}, index=index)


def predict_reference(
    target: MonitorTarget, reference: pd.DataFrame, features: list[str]
) -> pd.DataFrame | None:
    """The served version's predictions on its reference rows (cached per version under
    MLOPS_HOME), for prediction drift; None (logged) when the model cannot be loaded here.
    An ensemble deployment's are its combined predictions, as the service captures them."""
    from mlops_pipeline.deployment import ModelRef, load_predictor
    from mlops_pipeline.ledger import find_deployment

    deployment = find_deployment(target.deployment)
    config = deployment.deploy_config if deployment is not None else None
    members = config.ensemble.model_dump_json() if config and config.ensemble else ""
    variant = f"-{hashlib.sha256(members.encode()).hexdigest()[:8]}" if members else ""
    cache = (
        monitor_dir("_reference_predictions")
        / target.model_name
        / f"{target.model_version}{variant}.parquet"
    )
    if cache.exists():
        return pd.read_parquet(cache)
    connect()
    try:
        model = load_predictor(ModelRef(target.model_name, target.model_version), config)
        predictions = prediction_frame(model.predict(reference[features]), reference.index)
    except Exception as exc:  # any model/flavour failure only costs us prediction drift
        logger.warning(
            "no prediction drift: %s could not score its reference data: %s", target.model_uri, exc
        )
        return None
    cache.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(cache, index=False)
    return predictions


def kinds_for(
    profile: dict[str, Any], reference: pd.DataFrame, columns: list[str]
) -> dict[str, str]:
    """Column name -> kind (numeric/categorical/boolean/datetime): as the profile recorded
    it, else inferred from the reference values."""
    return {name: kind.kind for name, kind in profile_kinds(profile, reference[columns]).items()}


def feature_columns(target: MonitorTarget, reference: pd.DataFrame) -> list[str]:
    """The model's input columns: its signature's, else the reference columns that are not
    labels, predictions or capture metadata."""
    from mlflow.models import get_model_info

    connect()
    try:
        signature = get_model_info(target.model_uri).signature
    except Exception as exc:  # a model without readable metadata falls back to the reference
        logger.warning("could not read the signature of %s: %s", target.model_uri, exc)
        signature = None
    if (
        signature is not None
        and signature.inputs is not None
        and signature.inputs.has_input_names()
    ):
        names = [n for n in signature.inputs.input_names() if n in reference.columns]
        if names:
            return names
    return model_input_columns(reference)


def reference_for_drift(
    reference: pd.DataFrame,
    features: list[str],
    predictions: pd.DataFrame | None,
    captured_columns: list[str],
) -> tuple[pd.DataFrame, list[str]]:
    """Reference features plus the prediction columns both sides have, and those columns."""
    captured = [c for c in captured_columns if is_prediction_column(c)]
    if predictions is None:
        return reference[features], []
    shared = [c for c in captured if c in predictions.columns]
    frame = pd.concat(
        [reference[features].reset_index(drop=True), predictions[shared].reset_index(drop=True)],
        axis=1,
    )
    return frame, shared
