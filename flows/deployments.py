"""Every flow as a Prefect deployment, served from one process (what `mlops up` starts).

    python -m mlops_pipeline.flows.deployments     # needs PREFECT_API_URL

serves the deployments `prefect.yaml` declares for work pools, with the same names, schedule,
event trigger and concurrency limit, so a worker is not needed on one machine:

* every flow is a deployment whose typed parameters render as a form in the Prefect UI;
* `monitor` runs on a cron schedule for the deployment named by MLOPS_MONITORED_DEPLOYMENT
  (without it the monitor deployment is served without a schedule: run it from the UI), and
  on one more cron schedule, slug `spec-<name>`, for each deployment whose applied spec has a
  `monitoring.schedule` (read from the ledger when serving starts; `mlops deploy --spec` adds,
  changes or removes it on a running server too, see `tasks.spec.sync_monitor_schedule`);
* `redeploy` runs when `mlops.drift.detected` arrives for a resource `mlops.deployment.<name>`,
  with parameters rendered from the event (the flow then retrains a challenger with
  MLOPS_TRAINER or takes the version aliased `challenger`).
  Prefect triggers have no cool-down, so one drift episode gives at most one redeploy by
  other means: the flow skips an `episode_id` it has handled, and the deployment's
  concurrency limit of 1 with CANCEL_NEW cancels runs that arrive while one is in progress.
  (Prefect's run-deployment action sets an idempotency key per automation firing, not per
  event, so it does not deduplicate repeated events.)

The trigger, its parameter templates, the schedule and the limit are defined once here;
tests/test_prefect_yaml.py checks that `prefect.yaml` says the same. The spec schedules are not
in `prefect.yaml`: they come from the ledger, so they exist only where `mlops up` serves (or
`mlops deploy --spec` adds them to the served `monitor` deployment).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Schedule
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

# Prefect starts each served run in a fresh (spawned) interpreter, which imports this module
# again: so it imports no flow at module level, and a run pays only for its own flow's imports
# (the monitor's Great Expectations is not the redeploy's business).
DRIFT_EVENT = "mlops.drift.detected"  # monitoring.publish.DRIFT_EVENT (a test checks they agree)

MONITOR_CRON = "0 * * * *"
MONITOR_SCHEDULE_SLUG = "monitor-hourly"
# "flow name/deployment name" of the served monitor (flows.monitor's flow is monitor-deployment)
MONITOR_DEPLOYMENT = "monitor-deployment/monitor"
# the drift event's resource is the serving deployment (monitoring.publish.drift_event)
DEPLOYMENT_RESOURCES = "mlops.deployment.*"
REDEPLOY_TRIGGER_NAME = "redeploy-on-drift"
# Jinja the Prefect server renders from the triggering event. A value that is one `{{ }}`
# expression is rendered through `| tojson`, so it keeps its type (a UUID is not JSON, hence
# `| string` on event.id); text around an expression makes the value a string.
REDEPLOY_PARAMETERS: dict[str, str] = {
    "name": "{{ event.resource['prefect.resource.name'] }}",
    "reason": "drift detected: {{ event.payload.drifted_features | join(', ') }}",
    "episode_id": "{{ event.payload.episode_id }}",
    "event_id": "{{ event.id | string }}",
}
REDEPLOY_CONCURRENCY = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


class ServeSettings(BaseSettings):
    """Settings of the serving process; MLOPS_<FIELD> from the environment."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    monitored_deployment: str | None = Field(
        default=None, description="Deployment the monitor schedule watches (ledger name)."
    )


@dataclass(frozen=True)
class Spec:
    """One Prefect deployment: its name, flow ("module:attribute") and the UI's description."""

    name: str
    entrypoint: str
    description: str

    @property
    def flow(self) -> Flow:
        module, _, attribute = self.entrypoint.partition(":")
        return getattr(importlib.import_module(module), attribute)


SPECS: tuple[Spec, ...] = (
    Spec(
        "register",
        "mlops_pipeline.flows.register:register_model",
        "Register a model (MLflow run, model dir or pickle) as the next version.",
    ),
    Spec(
        "deploy",
        "mlops_pipeline.flows.deploy:deploy",
        "Build the image if the target needs one, then create or update a deployment.",
    ),
    Spec(
        "update",
        "mlops_pipeline.flows.deploy:update_deployment",
        "Switch a deployment to another model version with zero downtime.",
    ),
    Spec(
        "rollback",
        "mlops_pipeline.flows.deploy:rollback_deployment",
        "Return a deployment to the version it served before.",
    ),
    Spec(
        "undeploy",
        "mlops_pipeline.flows.deploy:undeploy",
        "Stop a deployment and release its model version.",
    ),
    Spec(
        "monitor",
        "mlops_pipeline.flows.monitor:monitor_deployment",
        "Validate and drift-test what a deployment captured since the last run; "
        "emit mlops.drift.detected on drift.",
    ),
    Spec(
        "redeploy",
        "mlops_pipeline.flows.redeploy:redeploy",
        "Gate a challenger against the champion, switch with zero downtime, bake, "
        "promote or roll back.",
    ),
    Spec(
        "pipeline",
        "mlops_pipeline.flows.pipeline:mlops_pipeline",
        "register, build the image, deploy, monitor, redeploy in one run.",
    ),
    Spec("demo", "mlops_pipeline.flows.demo:run_demo", "The whole loop on embedded defaults."),
)


def redeploy_trigger() -> DeploymentEventTrigger:
    """The event trigger of the `redeploy` deployment: any `mlops.drift.detected` whose
    resource is a serving deployment starts one run for that deployment."""
    return DeploymentEventTrigger(
        name=REDEPLOY_TRIGGER_NAME,
        description="Redeploy the drifting deployment when the monitor emits mlops.drift.detected.",
        enabled=True,
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": DEPLOYMENT_RESOURCES},
        parameters=dict(REDEPLOY_PARAMETERS),
    )


def monitor_schedules(monitored: str | None) -> list[Schedule]:
    """The monitor's hourly cron schedule for deployment `monitored` (none without a name),
    then one cron schedule (UTC) per applied spec with a `monitoring.schedule`, from the ledger.

    Raises:
        BackendError: the ledger cannot be read (MLOPS_LEDGER_URI / MLOPS_HOME).
    """
    # here, not at module level: the ledger's imports would weigh on every served run's start
    from mlops_pipeline.spec.store import monitor_schedule_slug, scheduled_monitors

    hourly = [
        Cron(
            MONITOR_CRON,
            slug=MONITOR_SCHEDULE_SLUG,
            active=True,
            parameters={"deployment": monitored},
        )
    ]
    from_specs = [
        Cron(
            cron,
            timezone="UTC",
            slug=monitor_schedule_slug(name),
            active=True,
            parameters={"deployment": name},
        )
        for name, cron in scheduled_monitors().items()
    ]
    return (hourly if monitored else []) + from_specs


def deployment_options(spec: Spec, settings: ServeSettings) -> dict[str, Any]:
    """Keyword arguments of `Flow.to_deployment` beyond name and description for `spec`."""
    if spec.name == "monitor":
        monitored = settings.monitored_deployment or None
        return {
            "schedules": monitor_schedules(monitored),
            "parameters": {"deployment": monitored} if monitored else {},
        }
    if spec.name == "redeploy":
        return {"triggers": [redeploy_trigger()], "concurrency_limit": REDEPLOY_CONCURRENCY}
    return {}


def served_deployments(settings: ServeSettings | None = None) -> list[RunnerDeployment]:
    """Every flow as a `RunnerDeployment` for `prefect.serve`, named as in prefect.yaml."""
    settings = settings or ServeSettings()
    if not settings.monitored_deployment:
        logger.info("MLOPS_MONITORED_DEPLOYMENT is not set: the monitor deployment has no schedule")
    return [
        spec.flow.to_deployment(
            name=spec.name,
            description=spec.description,
            # by module path: the runner finds the flows whatever the working directory
            entrypoint_type=EntrypointType.MODULE_PATH,
            **deployment_options(spec, settings),
        )
        for spec in SPECS
    ]


def main() -> None:
    """Serve every deployment until interrupted (Ctrl-C or SIGTERM)."""
    serve(*served_deployments())


if __name__ == "__main__":
    main()
