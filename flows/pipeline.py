"""Flow: the whole loop in one run: register -> build-image -> deploy -> monitor -> redeploy."""

from __future__ import annotations

from typing import Annotated, Any

from mlops_pipeline.flows.deploy import deploy
from mlops_pipeline.flows.monitor import monitor_deployment
from mlops_pipeline.flows.redeploy import redeploy
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tasks.deploy import find_deployment, validate_deployment_name
from mlops_pipeline.tasks.orchestration import run_flow
from mlops_pipeline.tasks.registry import set_model_alias, validate_model_name
from prefect import flow
from pydantic import Field


@flow(name="mlops-pipeline", log_prints=False)
def mlops_pipeline(
    source: Annotated[str, Field(min_length=1)],
    name: Annotated[str, Field(min_length=1)],
    deployment: str | None = None,
    target: str = "local:",
    reference_data: str | None = None,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    capture_uri: str | None = None,
    port: int | None = None,
    metric: str | None = None,
    min_improvement: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None,
    bake_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None,
) -> dict[str, Any]:
    """Register SOURCE as the next version of model NAME and put it in service as DEPLOYMENT
    (default: NAME) on TARGET, then monitor what the deployment captured and redeploy on drift.

    * A new deployment serves the new version (the image is built when the target needs
      one), which becomes the `champion`; it captures to CAPTURE_URI (default
      $MLOPS_HOME/captures/DEPLOYMENT).
    * An existing deployment gets the new version as a challenger: gated against its champion,
      switched with zero downtime, baked, then promoted or rolled back (the redeploy flow).
    * The monitor then validates and drift-tests the captured traffic; drift starts a redeploy
      (a retrained challenger when MLOPS_TRAINER is set, else `skipped`), one per episode.

    Returns {"registered": version, "deployed": deployment or null, "redeploy": decision or
    null, "monitor": monitor result (null when the deployment does not capture),
    "drift_redeploy": decision or null}.
    """
    deployment = deployment or name
    validate_model_name(name)
    validate_deployment_name(deployment)
    registered = run_flow(
        register_model,
        source=source,
        name=name,
        tags=tags,
        description=description,
        reference_data=reference_data,
    )
    model_uri = f"models:/{name}/{registered['version']}"
    deployed = decision = None
    if find_deployment(deployment) is None:
        capture = capture_uri or str(get_settings().resolved_home / "captures" / deployment)
        deployed = run_flow(
            deploy, model_uri=model_uri, name=deployment, target=target, port=port,
            capture_uri=capture,
        )  # fmt: skip
        set_model_alias(name, "champion", registered["version"])
    else:
        decision = run_flow(
            redeploy, name=deployment, challenger=model_uri, reason="pipeline: new version",
            metric=metric, min_improvement=min_improvement, bake_seconds=bake_seconds,
        )  # fmt: skip
    current = find_deployment(deployment)
    monitored = drift_decision = None
    if current is not None and current.capture_uri:  # a deployment that never captured: no data
        monitored = run_flow(monitor_deployment, deployment=deployment)
    if monitored and monitored.get("drift"):
        drift_decision = run_flow(
            redeploy, name=deployment, reason="drift detected",
            episode_id=(monitored.get("event") or {}).get("episode_id"),
            monitor_run_id=monitored.get("mlflow_run_id"),
            metric=metric, min_improvement=min_improvement, bake_seconds=bake_seconds,
        )  # fmt: skip
    return {
        "registered": registered,
        "deployed": deployed,
        "redeploy": decision,
        "monitor": monitored,
        "drift_redeploy": drift_decision,
    }
