"""Where a window's verdict goes besides its report: an MLflow run, and the text, table and
event payload that the monitor's Prefect artifacts and `mlops.drift.detected` event carry.

Everything here is Prefect-free; `mlops_pipeline.tasks.monitoring` publishes the artifacts and
emits the event, inside a Prefect run only.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlops_pipeline.errors import BackendError
from mlops_pipeline.monitoring.reference import MonitorTarget
from mlops_pipeline.monitoring.results import DriftVerdict, ValidationResult, WindowStats
from mlops_pipeline.tracking import connect, ensure_experiment

MONITOR_EXPERIMENT = "mlops-monitoring"
DRIFT_EVENT = "mlops.drift.detected"


def _metric_key(prefix: str, name: str) -> str:
    return prefix + "." + re.sub(r"[^0-9A-Za-z_./ -]", "_", name)


def log_monitoring_run(
    target: MonitorTarget,
    verdict: DriftVerdict,
    validation: ValidationResult,
    stats: WindowStats,
    report_dir: Path,
) -> str:
    """Log the window's metrics and the files in `report_dir` to an MLflow run of the
    `mlops-monitoring` experiment, tagged with the deployment and model version; returns the
    run id. Raises BackendError when MLflow refuses."""
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
                    "mlops.drift": str(verdict.drift).lower(),
                    "mlops.drifted": ",".join(verdict.drifted)[:5000],
                }
            )
            metrics = {k: float(v) for k, v in stats.model_dump().items()}
            metrics["validation.failure_rate"] = float(validation.failure_rate)
            metrics["drift.detected"] = float(verdict.drift)
            metrics["drift.features_drifted"] = float(len(verdict.drifted))
            for feature in verdict.features:
                for key in ("psi", "distance", "wasserstein_sd", "null_rate_current", "p_value"):
                    value = getattr(feature, key)
                    if value is not None:
                        metrics[_metric_key(key, feature.name)] = float(value)
            mlflow.log_metrics(metrics, model_id=model_id)
            mlflow.log_artifacts(str(report_dir), artifact_path="monitor")
    except MlflowException as exc:
        raise BackendError(f"Could not log the monitoring run: {exc.message}") from exc
    return run.info.run_id


def artifact_key(prefix: str, deployment: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for one deployment."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', deployment.lower())}".strip("-")


def verdict_markdown(
    target: MonitorTarget, verdict: DriftVerdict, validation: ValidationResult, report_path: str
) -> str:
    """A short markdown summary of a monitoring window."""
    lines = [
        f"# Monitor {target.deployment} ({target.model_uri})",
        f"**Drift: {'yes' if verdict.drift else 'no'}**"
        + (f" in {', '.join(verdict.drifted)}" if verdict.drift else ""),
        *(
            [
                "**Incompatible** (not readable as their reference kind): "
                + ", ".join(verdict.incompatible)
            ]
            if verdict.incompatible
            else []
        ),
        f"Validation: {validation.failed}/{validation.evaluated} "
        f"expectations failed, {len(validation.quarantined)} file(s) quarantined.",
        f"Report: `{report_path}`",
    ]
    return "\n\n".join(lines)


def feature_table(verdict: DriftVerdict) -> list[dict[str, Any]]:
    """One row per column, most severe first: the drift table artifact."""
    return [
        {
            "column": f.name,
            "role": f.role,
            "status": f.status,
            "method": f.method,
            "psi": f.psi,
            "distance": f.distance,
            "wasserstein_sd": f.wasserstein_sd,
            "null_rate": f"{f.null_rate_reference:.1%} -> {f.null_rate_current:.1%}"
            if f.null_rate_current is not None and f.null_rate_reference is not None
            else None,
            "p_value": f.p_value,
            "n_current": f.n_current,
        }
        for f in sorted(verdict.features, key=lambda f: -f.severity)
    ]


def drift_event(
    target: MonitorTarget, verdict: DriftVerdict, report_path: str, episode_id: str
) -> dict[str, Any]:
    """Keyword arguments of `prefect.events.emit_event` for `mlops.drift.detected`: resource
    is the deployment, related the model, payload the drifted columns and their scores and the
    drift episode's id (the redeploy's idempotency key)."""
    return {
        "event": DRIFT_EVENT,
        "resource": {
            "prefect.resource.id": f"mlops.deployment.{target.deployment}",
            "prefect.resource.name": target.deployment,
        },
        "related": [
            {
                "prefect.resource.id": f"mlops.model.{target.model_name}",
                "prefect.resource.role": "model",
            }
        ],
        "payload": {
            "deployment": target.deployment,
            "model_name": target.model_name,
            "version": target.model_version,
            "drifted_features": verdict.drifted,
            "scores": {
                f.name: {
                    "method": f.method,
                    "psi": f.psi,
                    "distance": f.distance,
                    "wasserstein_sd": f.wasserstein_sd,
                    "p_value": f.p_value,
                    "null_rate": f.null_rate.model_dump(mode="json") if f.null_rate else None,
                }
                for f in verdict.features
                if f.drifted
            },
            "report_path": report_path,
            "episode_id": episode_id,
        },
    }
