"""The served deployments: one per flow, the monitor's schedule, the redeploy trigger and limit,
and the trigger's parameters as the Prefect server renders them from a real drift event."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from mlops_pipeline.flows import deployments
from mlops_pipeline.flows.deployments import ServeSettings, served_deployments
from mlops_pipeline.flows.redeploy import redeploy
from mlops_pipeline.monitoring.publish import drift_event
from mlops_pipeline.monitoring.reference import MonitorTarget
from mlops_pipeline.monitoring.results import DriftVerdict
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger
from prefect.events.schemas.automations import Posture
from prefect.server.events.actions import RunDeployment
from prefect.server.events.schemas.automations import Automation, TriggeredAction
from prefect.server.events.schemas.events import ReceivedEvent, Resource

NAMES = [
    "register",
    "deploy",
    "update",
    "rollback",
    "undeploy",
    "monitor",
    "redeploy",
    "pipeline",
    "demo",
]


def by_name(settings: ServeSettings) -> dict:
    return {d.name: d for d in served_deployments(settings)}


def test_every_flow_is_served_once_by_module_path():
    served = served_deployments(ServeSettings(monitored_deployment=None))
    assert [d.name for d in served] == NAMES
    assert len({d.flow_name for d in served}) == len(NAMES)
    for deployment in served:
        module, _, function = deployment.entrypoint.rpartition(".")
        assert module.startswith("mlops_pipeline.flows."), deployment.entrypoint
        assert deployment.description


def test_monitor_runs_hourly_for_the_named_deployment(monkeypatch):
    monkeypatch.setenv("MLOPS_MONITORED_DEPLOYMENT", "fraud-prod")
    monitor = by_name(ServeSettings())["monitor"]
    [schedule] = monitor.schedules
    assert schedule.schedule.cron == "0 * * * *"
    assert schedule.active is True
    assert schedule.parameters == {"deployment": "fraud-prod"}
    assert monitor.parameters == {"deployment": "fraud-prod"}


@pytest.mark.parametrize("value", [None, ""])
def test_without_a_named_deployment_the_monitor_has_no_schedule(value, monkeypatch):
    monkeypatch.delenv("MLOPS_MONITORED_DEPLOYMENT", raising=False)
    if value is not None:
        monkeypatch.setenv("MLOPS_MONITORED_DEPLOYMENT", value)
    monitor = by_name(ServeSettings())["monitor"]
    assert monitor.schedules == [] and monitor.parameters == {}


def test_only_redeploy_has_the_drift_trigger_and_a_cancel_new_limit_of_one():
    served = by_name(ServeSettings(monitored_deployment="iris-prod"))
    [trigger] = served["redeploy"].triggers
    assert trigger.expect == {"mlops.drift.detected"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "mlops.deployment.*"}
    assert trigger.posture == Posture.Reactive and trigger.threshold == 1 and trigger.enabled
    assert served["redeploy"].concurrency_limit == 1
    strategy = served["redeploy"].concurrency_options.collision_strategy
    assert strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    for name in set(NAMES) - {"redeploy"}:
        assert served[name].triggers == [] and served[name].concurrency_limit is None, name


def as_server_automation(trigger: DeploymentEventTrigger) -> Automation:
    """The automation the Prefect server stores for a deployment `trigger`."""
    trigger.set_deployment_id(uuid.uuid4())
    return Automation.model_validate(trigger.as_automation().model_dump(mode="json"))


def render_on_server(automation: Automation, event: ReceivedEvent) -> dict:
    """The flow-run parameters the automation's run-deployment action renders from `event`."""
    [action] = automation.actions
    assert isinstance(action, RunDeployment)
    triggered = TriggeredAction(
        automation=automation,
        triggered=dt.datetime.now(dt.UTC),
        triggering_labels={},
        triggering_event=event,
        action=action,
    )
    return asyncio.run(action.render_parameters(triggered))


def drift_detected(deployment: str, episode_id: str) -> ReceivedEvent:
    """`mlops.drift.detected` as the monitor emits it (`monitoring.publish.drift_event`)."""
    target = MonitorTarget(deployment, "/captures", "iris", "3")
    verdict = DriftVerdict(drift=True, drifted=["petal_length", "petal_width"])
    return ReceivedEvent(
        occurred=dt.datetime.now(dt.UTC),
        id=uuid.uuid4(),
        **drift_event(target, verdict, "/reports/r.html", episode_id=episode_id),
    )


def test_trigger_parameters_render_from_the_monitors_drift_event():
    [trigger] = by_name(ServeSettings())["redeploy"].triggers
    automation = as_server_automation(trigger)
    event = drift_detected("iris-prod", episode_id="0f" * 16)
    assert automation.trigger.covers(event)

    rendered = render_on_server(automation, event)

    assert rendered == {
        "name": "iris-prod",
        "reason": "drift detected: petal_length, petal_width",
        "episode_id": "0f" * 16,
        "event_id": str(event.id),
    }
    assert redeploy.validate_parameters(rendered)["name"] == "iris-prod"


def test_trigger_ignores_other_events_and_resources():
    [trigger] = by_name(ServeSettings())["redeploy"].triggers
    automation = as_server_automation(trigger)
    other_resource = drift_detected("iris-prod", "1" * 32).model_copy(
        update={"resource": Resource.model_validate({"prefect.resource.id": "mlops.model.iris"})}
    )
    other_event = drift_detected("iris-prod", "1" * 32).model_copy(update={"event": "mlops.x"})
    assert not automation.trigger.covers(other_resource)
    assert not automation.trigger.covers(other_event)


def test_main_serves_every_deployment(monkeypatch, mlops_home):
    served = []
    monkeypatch.setattr(deployments, "serve", lambda *d: served.extend(d))
    deployments.main()
    assert [d.name for d in served] == NAMES


def test_the_serving_module_imports_no_flow_and_names_the_monitors_event() -> None:
    """Each served run re-imports the module in a fresh interpreter: it must stay light."""
    import subprocess
    import sys

    from mlops_pipeline.flows import deployments
    from mlops_pipeline.monitoring.publish import DRIFT_EVENT

    assert deployments.DRIFT_EVENT == DRIFT_EVENT
    code = (
        "import sys, mlops_pipeline.flows.deployments; "
        "print(sorted(m for m in sys.modules if m.startswith(('great_expectations', "
        "'mlops_pipeline.flows.', 'sklearn', 'mlflow'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['mlops_pipeline.flows.deployments']"
