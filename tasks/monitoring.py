"""Monitor plumbing: what a deployment serves, its reference bundle, and where verdicts go
(MLflow monitoring run, Prefect artifacts, the `mlops.drift.detected` event with a cool-down)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlops_pipeline.errors import BackendError, InvalidInputError, NotFoundError
from mlops_pipeline.log import get_logger
from mlops_pipeline.tasks.capture import monitor_dir
from mlops_pipeline.tasks.orchestration import step
from mlops_pipeline.tasks.profile import profile_kinds
from mlops_pipeline.tasks.registry import PROFILE_TAG, REFERENCE_TAG, SUITE_TAG
from mlops_pipeline.tracking import connect, ensure_experiment
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

MONITOR_EXPERIMENT = "mlops-monitoring"
DRIFT_EVENT = "mlops.drift.detected"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class MonitorTarget:
    """The deployment being monitored: where it captures to and which version it serves."""

    deployment: str
    capture_uri: str
    model_name: str
    model_version: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.model_version}"


@dataclass
class ReferenceBundle:
    """What registration stored with a model version: reference rows, profile, GX suite."""

    frame: pd.DataFrame
    profile: dict[str, Any]
    suite: dict[str, Any]


def _parse_model_uri(model_uri: str) -> tuple[str, str]:
    match = _MODELS_URI.match(model_uri)
    if not match:
        raise InvalidInputError(
            f"model_uri '{model_uri}' is not models:/NAME/VERSION or models:/NAME@ALIAS.",
            hint="The monitor reads the version's reference data from the registry.",
            field="model_uri",
        )
    if match.group("version"):
        return match.group("name"), match.group("version")
    try:
        mv = connect().get_model_version_by_alias(match.group("name"), match.group("alias"))
    except MlflowException as exc:
        raise NotFoundError(f"{model_uri} does not resolve to a model version.") from exc
    return mv.name, str(mv.version)


@step(cache_policy=NO_CACHE)
def resolve_target(
    deployment: str, capture_uri: str | None = None, model_uri: str | None = None
) -> MonitorTarget:
    """Find what `deployment` serves and captures, from the ledger or explicit overrides."""
    if model_uri:
        name, version = _parse_model_uri(model_uri)
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


@step(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def load_reference(model_name: str, model_version: str) -> ReferenceBundle:
    """Download the reference data, profile and GX suite stored with a model version."""
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
    """Model output as capture-style columns: `prediction` or `prediction.<name>`."""
    if isinstance(output, pd.DataFrame):
        if output.shape[1] == 1:
            return pd.DataFrame({"prediction": output.iloc[:, 0].to_numpy()}, index=index)
        return pd.DataFrame(
            {f"prediction.{c}": output[c].to_numpy() for c in output.columns}, index=index
        )
    if isinstance(output, dict):
        return pd.DataFrame({f"prediction.{k}": np.asarray(v) for k, v in output.items()}, index)
    array = np.asarray(output)
    if array.ndim == 2 and array.shape[1] > 1:
        return pd.DataFrame({f"prediction.{i}": array[:, i] for i in range(array.shape[1])}, index)
    return pd.DataFrame({"prediction": array.reshape(len(index))}, index=index)


@step(cache_policy=NO_CACHE)
def predict_reference(
    target: MonitorTarget, reference: pd.DataFrame, features: list[str]
) -> pd.DataFrame | None:
    """The served version's predictions on its reference rows (cached per version), for
    prediction drift; None (logged) when the model cannot be loaded here."""
    cache = (
        monitor_dir("_reference_predictions")
        / target.model_name
        / f"{target.model_version}.parquet"
    )
    if cache.exists():
        return pd.read_parquet(cache)
    import mlflow

    connect()
    try:
        model = mlflow.pyfunc.load_model(target.model_uri)
        predictions = prediction_frame(model.predict(reference[features]), reference.index)
    except Exception as exc:  # any model/flavour failure only costs us prediction drift
        get_logger(__name__).warning(
            "no prediction drift: %s could not score its reference data: %s", target.model_uri, exc
        )
        return None
    cache.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(cache, index=False)
    return predictions


def _metric_key(prefix: str, name: str) -> str:
    return prefix + "." + re.sub(r"[^0-9A-Za-z_./ -]", "_", name)


@step(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_monitoring_run(
    target: MonitorTarget,
    verdict: dict[str, Any],
    validation: dict[str, Any],
    stats: dict[str, Any],
    report_dir: Path,
) -> str:
    """Log the window's metrics and reports to an MLflow run tagged with the model version."""
    import mlflow

    client = connect()
    try:
        model_id = getattr(
            client.get_model_version(target.model_name, target.model_version), "model_id", None
        )
        experiment_id = ensure_experiment(MONITOR_EXPERIMENT)
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"monitor-{target.deployment}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}",
        ) as run:
            mlflow.set_tags(
                {
                    "mlops.deployment": target.deployment,
                    "mlops.model_name": target.model_name,
                    "mlops.model_version": target.model_version,
                    "mlops.model_uri": target.model_uri,
                    "mlops.drift": str(verdict["drift"]).lower(),
                    "mlops.drifted": ",".join(verdict["drifted"])[:5000],
                }
            )
            metrics = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
            metrics["validation.failure_rate"] = float(validation.get("failure_rate", 0.0))
            metrics["drift.detected"] = float(verdict["drift"])
            metrics["drift.features_drifted"] = float(len(verdict["drifted"]))
            for feature in verdict["features"]:
                for key in ("psi", "distance", "wasserstein_sd", "null_rate_current", "p_value"):
                    if feature.get(key) is not None:
                        metrics[_metric_key(key, feature["name"])] = float(feature[key])
            mlflow.log_metrics(metrics, model_id=model_id)
            mlflow.log_artifacts(str(report_dir), artifact_path="monitor")
    except MlflowException as exc:
        raise BackendError(f"Could not log the monitoring run: {exc.message}") from exc
    return run.info.run_id


def prefect_api_configured() -> bool:
    """Artifacts and events need a Prefect API; without one (plain CLI runs) they are skipped."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def _artifact_key(prefix: str, deployment: str) -> str:
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', deployment.lower())}".strip("-")


def verdict_markdown(
    target: MonitorTarget, verdict: dict[str, Any], validation: dict[str, Any], report_path: str
) -> str:
    """A short markdown summary of a monitoring window."""
    lines = [
        f"# Monitor {target.deployment} ({target.model_uri})",
        f"**Drift: {'yes' if verdict['drift'] else 'no'}**"
        + (f" in {', '.join(verdict['drifted'])}" if verdict["drift"] else ""),
        *(
            [f"**Incompatible** (not readable as their reference kind): {', '.join(bad)}"]
            if (bad := verdict.get("incompatible"))
            else []
        ),
        f"Validation: {validation.get('failed', 0)}/{validation.get('evaluated', 0)} "
        f"expectations failed, {len(validation.get('quarantined', []))} file(s) quarantined.",
        f"Report: `{report_path}`",
    ]
    return "\n\n".join(lines)


@step(cache_policy=NO_CACHE)
def publish_artifacts(
    target: MonitorTarget, verdict: dict[str, Any], validation: dict[str, Any], report_path: str
) -> None:
    """Publish the per-feature table and the verdict as Prefect artifacts."""
    rows = [
        {
            "column": f["name"],
            "role": f["role"],
            "status": f["status"],
            "method": f["method"],
            "psi": f["psi"],
            "distance": f["distance"],
            "wasserstein_sd": f.get("wasserstein_sd"),
            "null_rate": f"{f['null_rate_reference']:.1%} -> {f['null_rate_current']:.1%}"
            if f.get("null_rate_current") is not None
            else None,
            "p_value": f["p_value"],
            "n_current": f["n_current"],
        }
        for f in sorted(verdict["features"], key=lambda f: -f["severity"])
    ]
    if not prefect_api_configured():
        get_logger(__name__).info("no Prefect API configured: artifacts not published")
        return
    markdown = verdict_markdown(target, verdict, validation, report_path)
    create_table_artifact(
        table=rows, key=_artifact_key("drift", target.deployment), description=markdown
    )
    create_markdown_artifact(markdown=markdown, key=_artifact_key("monitor", target.deployment))


def _state_path(deployment: str) -> Path:
    return monitor_dir(deployment) / "drift_state.json"


def _save_state(deployment: str, state: dict[str, Any]) -> None:
    path = _state_path(deployment)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".drift-state-", suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(state, out)
    os.replace(tmp, path)


def next_episode(
    state: dict[str, Any],
    verdict: dict[str, Any],
    version: str,
    now: dt.datetime,
    cooldown_hours: float,
) -> tuple[str, dict[str, Any] | None]:
    """Decide what a window means for the drift episode in `state`: ("emit", episode to store
    once emitted), ("cool-down", None), ("close", None) or ("none", None).

    An episode opens at the first drifted window and closes at the first window with enough
    data and no drift, or when the deployment serves another version. Within an episode the
    event repeats only after `cooldown_hours`, so one episode triggers one redeploy.
    """
    episode = state.get("episode")
    if episode and episode.get("version") != version:
        episode = None
    if not verdict["drift"]:
        enough_data = verdict["summary"]["tested"] > 0
        return ("close", None) if episode and enough_data else ("none", None)
    if episode:
        last = dt.datetime.fromisoformat(episode["last_event_at"])
        if now - last < dt.timedelta(hours=cooldown_hours):
            return "cool-down", None
    started = (episode or {}).get("started_at", now.isoformat())
    return "emit", {"version": version, "started_at": started, "last_event_at": now.isoformat()}


@step(cache_policy=NO_CACHE)
def signal_drift(
    target: MonitorTarget,
    verdict: dict[str, Any],
    report_path: str,
    cooldown_hours: float = 24.0,
) -> dict[str, Any]:
    """Emit `mlops.drift.detected` for the deployment once per drift episode (see
    `next_episode`); the episode state lives in MLOPS_HOME/monitor/<deployment>."""
    now = dt.datetime.now(dt.UTC)
    path = _state_path(target.deployment)
    state = json.loads(path.read_text()) if path.exists() else {}
    action, episode = next_episode(state, verdict, target.model_version, now, cooldown_hours)
    if action == "close":
        _save_state(target.deployment, {"episode": None, "closed_at": now.isoformat()})
    if action in ("close", "none"):
        return {"emitted": False, "reason": "no drift"}
    if action == "cool-down":
        return {"emitted": False, "reason": "cool-down", "event_id": state["episode"]["event_id"]}
    if not prefect_api_configured():
        return {"emitted": False, "reason": "no Prefect API configured (set PREFECT_API_URL)"}
    ranked = {f["name"]: f for f in verdict["features"] if f["drifted"]}
    event = emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"mlops.deployment.{target.deployment}",
            "prefect.resource.name": target.deployment,
        },
        related=[
            {
                "prefect.resource.id": f"mlops.model.{target.model_name}",
                "prefect.resource.role": "model",
            }
        ],
        payload={
            "deployment": target.deployment,
            "model_name": target.model_name,
            "version": target.model_version,
            "drifted_features": verdict["drifted"],
            "scores": {
                name: {
                    "method": f["method"],
                    "psi": f["psi"],
                    "distance": f["distance"],
                    "wasserstein_sd": f.get("wasserstein_sd"),
                    "p_value": f["p_value"],
                    "null_rate": f.get("null_rate"),
                }
                for name, f in ranked.items()
            },
            "report_path": report_path,
        },
    )
    event_id = str(event.id) if event is not None else None
    _save_state(target.deployment, {"episode": episode | {"event_id": event_id}})
    get_logger(__name__).warning(
        "drift in %s: %s; emitted %s (event %s)",
        target.deployment,
        verdict["drifted"],
        DRIFT_EVENT,
        event_id,
    )
    return {"emitted": True, "event_id": event_id}


def kinds_for(
    profile: dict[str, Any], reference: pd.DataFrame, columns: list[str]
) -> dict[str, str]:
    """Column name -> kind (numeric/categorical/boolean/datetime): as the profile recorded
    it, else inferred from the reference values."""
    return {name: kind.kind for name, kind in profile_kinds(profile, reference[columns]).items()}


@step(cache_policy=NO_CACHE)
def feature_columns(target: MonitorTarget, reference: pd.DataFrame) -> list[str]:
    """The model's input columns: its signature's, else the reference columns that are not
    labels, predictions or capture metadata."""
    from mlflow.models import get_model_info

    connect()
    try:
        signature = get_model_info(target.model_uri).signature
    except Exception as exc:  # a model without readable metadata falls back to the reference
        get_logger(__name__).warning(
            "could not read the signature of %s: %s", target.model_uri, exc
        )
        signature = None
    if (
        signature is not None
        and signature.inputs is not None
        and signature.inputs.has_input_names()
    ):
        names = [n for n in signature.inputs.input_names() if n in reference.columns]
        if names:
            return names
    return [
        c
        for c in reference.columns
        if not (c.startswith("_") or c in ("label", "target") or c.startswith("prediction"))
    ]


@step(cache_policy=NO_CACHE)
def reference_for_drift(
    reference: pd.DataFrame,
    features: list[str],
    predictions: pd.DataFrame | None,
    captured_columns: list[str],
) -> tuple[pd.DataFrame, list[str]]:
    """Reference features plus the prediction columns both sides have, and those columns."""
    captured = [c for c in captured_columns if c == "prediction" or c.startswith("prediction.")]
    if predictions is None:
        return reference[features], []
    shared = [c for c in captured if c in predictions.columns]
    frame = pd.concat(
        [reference[features].reset_index(drop=True), predictions[shared].reset_index(drop=True)],
        axis=1,
    )
    return frame, shared


def monitor_summary(
    verdict: dict[str, Any],
    validation: dict[str, Any],
    stats: dict[str, Any],
    report_path: str,
    run_id: str,
    signal: dict[str, Any],
) -> dict[str, Any]:
    """The JSON result of one monitored window (what `mlops monitor --json` prints)."""
    keys = (
        "name",
        "role",
        "kind",
        "status",
        "drifted",
        "drifted_by",
        "method",
        "score",
        "p_value",
        "wasserstein_sd",
        "null_rate_reference",
        "null_rate_current",
        "n_invalid",
        "reason",
    )
    return {
        "status": verdict.get("status", "drift" if verdict["drift"] else "ok"),
        "drift": verdict["drift"],
        "drifted": verdict["drifted"],
        "incompatible": verdict.get("incompatible", []),
        "features": [{k: f.get(k) for k in keys} for f in verdict["features"]],
        "validation": {
            k: validation.get(k)
            for k in ("success", "failure_rate", "failures", "quarantined", "data_docs")
        },
        "stats": stats,
        "report": report_path,
        "mlflow_run_id": run_id,
        "event": signal,
    }
