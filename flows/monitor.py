"""Flow: collect-and-validate one deployment's captured traffic since the last run."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
from prefect import flow

from mlops.log import get_logger
from tasks.capture import commit_watermark, list_new_captures, monitor_dir, read_captures
from tasks.drift import DriftConfig, detect_drift, json_safe
from tasks.monitoring import (
    feature_columns,
    kinds_for,
    load_reference,
    log_monitoring_run,
    predict_reference,
    publish_artifacts,
    resolve_target,
    signal_drift,
)
from tasks.report import write_drift_report
from tasks.validation import restrict_suite, validate_window


@flow(name="monitor-deployment", log_prints=False)
def monitor_deployment(
    deployment: str,
    window: str | None = None,
    capture_uri: str | None = None,
    model_uri: str | None = None,
    drift_config: dict[str, Any] | None = None,
    cooldown_hours: float = 24.0,
) -> dict[str, Any]:
    """Validate and drift-test the rows DEPLOYMENT captured since the watermark (or since
    `window`: '24h', '7d', an ISO time); signal drift; advance the watermark last."""
    logger = get_logger(__name__)
    config = DriftConfig.from_dict(drift_config or {})
    target = resolve_target(deployment, capture_uri, model_uri)
    files = list_new_captures(
        deployment, target.capture_uri, target.model_name, target.model_version, window
    )
    result: dict[str, Any] = {
        "deployment": deployment,
        "model_uri": target.model_uri,
        "window": window or "since last run",
        "files": len(files),
    }
    if not files:
        logger.info("no new capture files for %s", deployment)
        return result | {"status": "no_new_data", "drift": False}
    reference = load_reference(target.model_name, target.model_version)
    features = feature_columns(target, reference.frame)
    kinds = kinds_for(reference.profile, reference.frame, features)
    batch = read_captures(target.capture_uri, target.model_name, target.model_version, files, kinds)
    current = batch.frame
    if current.empty:
        current = pd.DataFrame({c: pd.Series(dtype=object) for c in [*features, "_status"]})
    scored = current[current["_status"].astype("float64") < 400]
    stats = {
        "rows": len(current),
        "rows_scored": len(scored),
        "rows_rejected": len(current) - len(scored),
        "rows_labelled": int(current["label"].notna().sum()) if "label" in current else 0,
        "duplicates_dropped": batch.duplicates,
        "files_read": len(batch.files),
        "files_quarantined": len(batch.quarantined),
    }
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    report_dir = monitor_dir(deployment) / "reports" / stamp
    report_dir.mkdir(parents=True, exist_ok=True)
    if scored.empty:
        validation: dict[str, Any] = {
            "success": False,
            "evaluated": 0,
            "failed": 0,
            "failure_rate": 1.0 if batch.quarantined else 0.0,
            "failures": [],
            "data_docs": None,
        }
    else:
        validation = validate_window(
            scored[features], restrict_suite(reference.suite, features), report_dir / "data-docs"
        )
    validation["quarantined"] = batch.quarantined
    reference_frame = reference.frame[features]
    predictions = [c for c in scored.columns if c == "prediction" or c.startswith("prediction.")]
    reference_predictions = predict_reference(target, reference.frame, features)
    if reference_predictions is not None:
        predictions = [c for c in predictions if c in reference_predictions.columns]
        reference_frame = pd.concat(
            [
                reference_frame.reset_index(drop=True),
                reference_predictions[predictions].reset_index(drop=True),
            ],
            axis=1,
        )
    else:
        predictions = []
    verdict = detect_drift(
        reference_frame,
        scored,
        columns=[*features, *predictions],
        prediction_columns=predictions,
        config=config,
    )
    (report_dir / "drift.json").write_text(json.dumps(verdict, indent=1, default=str))
    (report_dir / "validation.json").write_text(json.dumps(json_safe(validation), default=str))
    report_path = write_drift_report(
        verdict,
        report_dir / "report.html",
        f"Monitor {deployment}: {target.model_uri}",
        validation,
        {"window": result["window"], **stats},
    )
    run_id = log_monitoring_run(target, verdict, validation, stats, report_dir)
    publish_artifacts(target, verdict, validation, report_path)
    signal = signal_drift(target, verdict, report_path, cooldown_hours)
    # only now are the window's results saved: a crash before this line re-runs the window
    if window is None:
        commit_watermark(deployment, files)
    if signal["emitted"]:
        logger.warning(
            "drift in %s: %s (event %s)", deployment, verdict["drifted"], signal["event_id"]
        )
    return result | {
        "status": "drift" if verdict["drift"] else "ok",
        "drift": verdict["drift"],
        "drifted": verdict["drifted"],
        "features": [
            {k: f[k] for k in ("name", "role", "status", "drifted", "method", "score", "p_value")}
            for f in verdict["features"]
        ],
        "validation": {
            "success": validation["success"],
            "failure_rate": validation["failure_rate"],
            "failures": validation["failures"],
            "quarantined": batch.quarantined,
            "data_docs": validation.get("data_docs"),
        },
        "stats": stats,
        "report": report_path,
        "mlflow_run_id": run_id,
        "event": signal,
    }
