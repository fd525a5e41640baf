"""Flow: collect-and-validate one deployment's captured traffic since the last run."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from mlops_pipeline.monitoring.captures import monitor_dir, read_feedback
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.monitoring.partitions import (
    plan_columns,
    validation_from_summary,
    verdict_from_summary,
)
from mlops_pipeline.monitoring.reference import MonitorTarget, ReferenceBundle, kinds_for
from mlops_pipeline.monitoring.results import (
    DriftVerdict,
    MonitorResult,
    ValidationResult,
    WindowStats,
)
from mlops_pipeline.spec.store import drift_settings
from mlops_pipeline.tasks.capture import (
    THREADS,
    claim_new_captures,
    commit_watermark,
    list_new_captures,
    map_partitions,
    parse_task_runner,
    read_captures,
    release_claim,
    summarise_window,
    task_runner_for,
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
from prefect import Flow, flow
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field


@flow(
    name="monitor-deployment",
    log_prints=False,
    task_runner=ThreadPoolTaskRunner(max_workers=THREADS),
)
def monitor_deployment(
    deployment: Annotated[str, Field(min_length=1)],
    window: str | None = None,
    capture_uri: str | None = None,
    model_uri: str | None = None,
    drift_config: DriftConfig | None = None,
    cooldown_hours: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 24.0,
    task_runner: str | None = None,
) -> dict[str, Any]:
    """Validate and drift-test what DEPLOYMENT captured since the last run, signal drift, and
    only then advance the watermark. `window` ('24h', '7d', an ISO time) re-analyses the files
    since then instead, leaving the watermark alone. `drift_config` holds the drift settings
    (a typed form in the Prefect UI; a dict is validated the same way). `task_runner`
    ('threads', 'dask', 'dask:ADDRESS') summarises the capture files one partition per task
    on that runner instead of reading the window into one frame (no GX suite on that path, see
    `monitoring.partitions`). Returns the `MonitorResult` as JSON (what `mlops monitor --json`
    prints)."""
    return run_monitor(
        deployment, window, capture_uri, model_uri, drift_config, cooldown_hours, task_runner
    ).model_dump(mode="json")


def monitor_flow_for(task_runner: str | None) -> Flow[..., dict[str, Any]]:
    """The monitor flow with the Prefect task runner a `--task-runner` value names (the thread
    pool default when None). Raises InvalidInputError for a bad value."""
    if task_runner is None:
        return monitor_deployment
    return monitor_deployment.with_options(task_runner=task_runner_for(task_runner))


def run_monitor(
    deployment: str,
    window: str | None,
    capture_uri: str | None,
    model_uri: str | None,
    drift_config: DriftConfig | dict[str, Any] | None,
    cooldown_hours: float,
    task_runner: str | None = None,
) -> MonitorResult:
    """The monitor flow's recipe, returning the typed result.

    Without `window` the files are claimed first (`claim_new_captures`): a second monitor of
    the deployment running at once takes other files, so no record is counted twice; the
    claim is committed with the watermark, or released when the window fails.
    """
    if drift_config is None:  # the deployment's applied spec (`monitoring.drift`), if any
        drift_config = drift_settings(deployment)
    config = DriftConfig.parse(drift_config, "drift_config")
    if task_runner is not None:
        parse_task_runner(task_runner)  # a bad value fails before any file is claimed
    target = resolve_target(deployment, capture_uri, model_uri)
    claim_id = None if window else uuid.uuid4().hex
    if claim_id is None:
        files = list_new_captures(
            deployment, target.capture_uri, target.model_name, target.model_version, window
        )
    else:
        files = claim_new_captures(
            deployment, target.capture_uri, target.model_name, target.model_version, claim_id
        )
    window_text = window or "since last run"
    if not files:
        get_logger(__name__).info("no new capture files for %s", deployment)
        return MonitorResult.no_new_data(deployment, target.model_uri, window_text)
    try:
        return _monitor_window(
            target, files, window_text, config, cooldown_hours, task_runner, claim_id
        )
    except BaseException:
        if claim_id is not None:
            release_claim(deployment, claim_id)
        raise


def _monitor_window(
    target: MonitorTarget,
    files: list[str],
    window_text: str,
    config: DriftConfig,
    cooldown_hours: float,
    task_runner: str | None,
    claim_id: str | None,
) -> MonitorResult:
    deployment = target.deployment
    reference = load_reference(target.model_name, target.model_version)
    features = feature_columns(target, reference.frame)
    report_dir = monitor_dir(deployment) / "reports" / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
    if task_runner is None:
        verdict, validation, stats = _whole_window(
            target, files, reference, features, config, report_dir
        )
    else:
        verdict, validation, stats = _partitioned_window(
            target, files, reference, features, config, task_runner
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
    if claim_id is not None:
        commit_watermark(deployment, files, claim_id)
    header = {
        "deployment": deployment,
        "model_uri": target.model_uri,
        "window": window_text,
        "files": len(files),
    }
    return MonitorResult.of_window(header, verdict, validation, stats, report_path, run_id, signal)


def _whole_window(
    target: MonitorTarget,
    files: list[str],
    reference: ReferenceBundle,
    features: list[str],
    config: DriftConfig,
    report_dir: Any,
) -> tuple[DriftVerdict, ValidationResult, WindowStats]:
    """The window read into one frame: GX validation and exact drift tests on its rows."""
    kinds = kinds_for(reference.profile, reference.frame, features)
    batch = read_captures(target.capture_uri, target.model_name, files, kinds)
    scored, stats = summarise_window(batch, features)
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
    return verdict, validation, stats


def _partitioned_window(
    target: MonitorTarget,
    files: list[str],
    reference: ReferenceBundle,
    features: list[str],
    config: DriftConfig,
    task_runner: str,
) -> tuple[DriftVerdict, ValidationResult, WindowStats]:
    """The window one capture file per task on `task_runner`, summaries merged
    (`monitoring.partitions`): the same drift verdict; validation is the quarantine and the
    cast checks, no GX suite."""
    kinds = kinds_for(reference.profile, reference.frame, features)
    predictions = predict_reference(target, reference.frame, features)
    # every prediction column is summarised; those no capture file has are dropped after
    reference_frame, prediction_columns = reference_for_drift(
        reference.frame, features, predictions, [] if predictions is None else list(predictions)
    )
    plans = plan_columns(
        reference_frame, [*features, *prediction_columns], prediction_columns, config,
        reference.profile,
    )  # fmt: skip
    feedback = read_feedback(target.capture_uri, target.model_name)
    merged = map_partitions(
        task_runner, target.capture_uri, files, kinds, plans, None if feedback.empty else feedback
    )
    captured = [c for c in merged.present if c in prediction_columns]
    plans = [p for p in plans if p.role == "feature"] + sorted(
        (p for p in plans if p.name in captured), key=lambda p: captured.index(p.name)
    )
    verdict = verdict_from_summary(reference_frame, plans, merged, config)
    validation = validation_from_summary(merged, plans, features)
    return verdict, validation, merged.stats()
