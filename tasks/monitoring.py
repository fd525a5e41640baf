"""Steps of the monitor flow over `mlops_pipeline.monitoring`, plus what only Prefect does:
publishing the window's artifacts and emitting `mlops.drift.detected`.

Artifacts and events belong to a Prefect run: they are published only while a flow or task
run is active (a worker, `run_flow` in orchestrated mode), never from direct mode, where
Prefect has no run to attach them to.
"""

from __future__ import annotations

from mlops_pipeline.monitoring import drift, episodes, publish, reference, report, validation
from mlops_pipeline.monitoring.reference import MonitorTarget
from mlops_pipeline.monitoring.results import DriftSignal, DriftVerdict, ValidationResult
from mlops_pipeline.tasks.orchestration import get_logger, in_prefect_run, step
from prefect.cache_policies import NO_CACHE

resolve_target = step(reference.resolve_target, cache_policy=NO_CACHE)
load_reference = step(
    reference.load_reference, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2
)
feature_columns = step(reference.feature_columns, cache_policy=NO_CACHE)
predict_reference = step(reference.predict_reference, cache_policy=NO_CACHE)
reference_for_drift = step(reference.reference_for_drift, cache_policy=NO_CACHE)
validate_captures = step(validation.validate_captures, cache_policy=NO_CACHE)
detect_drift = step(drift.detect_drift, cache_policy=NO_CACHE)
save_window_results = step(report.save_window_results, cache_policy=NO_CACHE)
log_monitoring_run = step(
    publish.log_monitoring_run, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2
)


@step(cache_policy=NO_CACHE)
def publish_artifacts(
    target: MonitorTarget, verdict: DriftVerdict, validation: ValidationResult, report_path: str
) -> bool:
    """Publish the per-feature table and the verdict as Prefect artifacts of the current run;
    returns False (logged) outside a Prefect run."""
    if not in_prefect_run():
        get_logger(__name__).info("not in a Prefect run: monitor artifacts not published")
        return False
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    markdown = publish.verdict_markdown(target, verdict, validation, report_path)
    create_table_artifact(
        table=publish.feature_table(verdict),
        key=publish.artifact_key("drift", target.deployment),
        description=markdown,
    )
    create_markdown_artifact(
        markdown=markdown, key=publish.artifact_key("monitor", target.deployment)
    )
    return True


@step(cache_policy=NO_CACHE)
def signal_drift(
    target: MonitorTarget,
    verdict: DriftVerdict,
    report_path: str,
    cooldown_hours: float = 24.0,
) -> DriftSignal:
    """Emit `mlops.drift.detected` for the deployment once per drift episode (see
    `monitoring.episodes`; the episode state is in the ledger database). Outside a Prefect run
    nothing is emitted and the episode stays unopened."""
    verdict = DriftVerdict.coerce(verdict)

    def emit(episode_id: str) -> DriftSignal:
        if not in_prefect_run():
            return DriftSignal(
                emitted=False,
                reason="not in a Prefect run: set PREFECT_API_URL (or MLOPS_ORCHESTRATE=always) "
                "so the monitor runs as a flow that can emit events",
            )
        from prefect.events import emit_event

        event = emit_event(**publish.drift_event(target, verdict, report_path, episode_id))
        event_id = str(event.id) if event is not None else None
        get_logger(__name__).warning(
            "drift in %s: %s; emitted %s (event %s)",
            target.deployment,
            verdict.drifted,
            publish.DRIFT_EVENT,
            event_id,
        )
        return DriftSignal(emitted=True, event_id=event_id)

    return episodes.signal_once_per_episode(
        target.deployment, target.model_version, verdict, emit, cooldown_hours
    )
