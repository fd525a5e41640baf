"""Flow: collect-and-validate one deployment's captured traffic since the last run."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from mlops_pipeline.monitoring.captures import monitor_dir
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.monitoring.reference import kinds_for
from mlops_pipeline.monitoring.results import MonitorResult
from mlops_pipeline.tasks.capture import (
    commit_watermark,
    list_new_captures,
    read_captures,
    summarise_window,
)
from mlops_pipeline.tasks.monitoring import (
    detect_drift,
    feature_columns,
    load_reference,
    log_monitoring_run,
    predict_reference,
    publish_artifacts,
    reference_for_drift,
    resolve_target,
    save_window_results,
    signal_drift,
    validate_captures,
)
from mlops_pipeline.tasks.orchestration import get_logger
from prefect import flow
from pydantic import Field


@flow(name="monitor-deployment", log_prints=False)
def monitor_deployment(
    deployment: Annotated[str, Field(min_length=1)],
    window: str | None = None,
    capture_uri: str | None = None,
    model_uri: str | None = None,
    drift_config: DriftConfig | None = None,
    cooldown_hours: Annotated[float, Field(ge=0)] = 24.0,
) -> dict[str, Any]:
    """Validate and drift-test what DEPLOYMENT captured since the last run, signal drift, and
    only then advance the watermark. `window` ('24h', '7d', an ISO time) re-analyses the files
    since then instead, leaving the watermark alone. `drift_config` holds the drift settings
    (a typed form in the Prefect UI; a dict is validated the same way). Returns the
    `MonitorResult` as JSON (what `mlops monitor --json` prints)."""
    return run_monitor(
        deployment, window, capture_uri, model_uri, drift_config, cooldown_hours
    ).model_dump(mode="json")


def run_monitor(
    deployment: str,
    window: str | None,
    capture_uri: str | None,
    model_uri: str | None,
    drift_config: DriftConfig | dict[str, Any] | None,
    cooldown_hours: float,
) -> MonitorResult:
    """The monitor flow's recipe, returning the typed result."""
    config = DriftConfig.parse(drift_config, "drift_config")
    target = resolve_target(deployment, capture_uri, model_uri)
    files = list_new_captures(
        deployment, target.capture_uri, target.model_name, target.model_version, window
    )
    window_text = window or "since last run"
    if not files:
        get_logger(__name__).info("no new capture files for %s", deployment)
        return MonitorResult.no_new_data(deployment, target.model_uri, window_text)

    reference = load_reference(target.model_name, target.model_version)
    features = feature_columns(target, reference.frame)
    kinds = kinds_for(reference.profile, reference.frame, features)
    batch = read_captures(target.capture_uri, target.model_name, target.model_version, files, kinds)
    scored, stats = summarise_window(batch, features)

    report_dir = monitor_dir(deployment) / "reports" / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
    validation = validate_captures(
        scored,
        features,
        reference.suite,
        batch.quarantined,
        report_dir / "data-docs",
        profile=reference.profile,
    )
    predictions = predict_reference(target, reference.frame, features)
    reference_frame, prediction_columns = reference_for_drift(
        reference.frame, features, predictions, list(scored.columns)
    )
    verdict = detect_drift(
        reference_frame,
        scored,
        columns=[*features, *prediction_columns],
        prediction_columns=prediction_columns,
        config=config,
        profile=reference.profile,
    )
    report_path = save_window_results(
        report_dir,
        verdict,
        validation,
        f"Monitor {deployment}: {target.model_uri}",
        {"window": window_text, **stats.model_dump()},
    )
    run_id = log_monitoring_run(target, verdict, validation, stats, report_dir)
    publish_artifacts(target, verdict, validation, report_path)
    signal = signal_drift(target, verdict, report_path, cooldown_hours)
    # results are saved: only now may the watermark move (a crash before re-runs the window)
    if window is None:
        commit_watermark(deployment, files)
    header = {
        "deployment": deployment,
        "model_uri": target.model_uri,
        "window": window_text,
        "files": len(files),
    }
    return MonitorResult.of_window(header, verdict, validation, stats, report_path, run_id, signal)
