"""Flow: make a deployment match its spec file (`mlops deploy --spec deploy.yaml`)."""

from __future__ import annotations

from typing import Any

from mlops_pipeline.flows.deploy import build_image_tag, deploy
from mlops_pipeline.flows.deployments import MONITOR_DEPLOYMENT
from mlops_pipeline.spec.load import load_spec
from mlops_pipeline.spec.plan import SpecResult, refuse_replacement
from mlops_pipeline.tasks.deploy import preflight_target, switch_deployment, target_needs_image
from mlops_pipeline.tasks.orchestration import run_flow
from mlops_pipeline.tasks.spec import (
    install_keys,
    plan_spec,
    save_applied_spec,
    sync_monitor_schedule,
)
from prefect import flow


@flow(name="apply-spec", log_prints=False)
def apply_spec(spec_file: str) -> dict[str, Any]:
    """Create or update the deployment SPEC_FILE describes so that it matches the file.

    Idempotent: when nothing differs, nothing is touched (no ledger event) and the result's
    action is `none`. A new deployment goes through the `deploy` flow; a changed one is switched
    with zero downtime to the new version and settings; a change of only the monitoring or
    redeploy settings (or the secrets' names) is recorded. Then the served `monitor` deployment
    gets, changes or loses its schedule `spec-<name>` for `monitoring.schedule` (when a Prefect
    API serves it; otherwise `mlops up` serves it from the ledger), also when nothing else
    differs, so a spec applied before `mlops up` ran gets its schedule by applying it again.
    Returns the `SpecResult` as JSON.

    Raises:
        InvalidInputError: the file does not validate (exit 2), with `file:line: field:`.
        ConflictError: the spec names another target, port or model than the deployment has
            (exit 4): those need `mlops undeploy` first.
        Whatever the deploy steps raise; the previous version keeps serving.
    """
    loaded = load_spec(spec_file)
    planned, desired = plan_spec(loaded)
    refuse_replacement(loaded, planned)
    spec, config = loaded.spec, desired.config
    result = SpecResult(
        name=spec.name, action=planned.action, changes=planned.changes, source=str(loaded.path)
    )
    cron = spec.monitoring.schedule if spec.monitoring else None
    if planned.action == "none":
        sync_monitor_schedule(spec.name, cron, MONITOR_DEPLOYMENT)
        return result.model_dump(mode="json")
    install_keys(loaded)
    if planned.action == "create":
        result.deployment = run_flow(
            deploy,
            model_uri=desired.model.uri,
            name=spec.name,
            target=spec.target.uri,
            port=config.port,
            capture_uri=config.capture_uri,
            sample_rate=config.sample_rate,
            api_key_file=config.api_key_file,
            workers=config.workers,
            options=config.options,
            scoring_code=config.scoring_code,
            ensemble=config.ensemble,
        )
    elif planned.action == "update":
        preflight_target(desired.target_uri, config)
        needs_image = target_needs_image(desired.target_uri)
        image = build_image_tag(desired.model.uri, None, config) if needs_image else None
        switched = switch_deployment(
            spec.name, desired.model, config, image, "update", f"spec {loaded.path.name}"
        )
        result.deployment = switched.model_dump(mode="json")
    save_applied_spec(spec, str(loaded.path), desired.scoring_code_sha256)
    sync_monitor_schedule(spec.name, cron, MONITOR_DEPLOYMENT)
    return result.model_dump(mode="json")
