"""`mlops up` serves a monitor schedule for each applied spec's `monitoring.schedule` (ledger)."""

from __future__ import annotations

from pathlib import Path

from mlops_pipeline.flows.deployments import (
    MONITOR_SCHEDULE_SLUG,
    ServeSettings,
    served_deployments,
)
from mlops_pipeline.spec.load import parse_spec
from mlops_pipeline.spec.store import save_applied, scheduled_monitors

SCHEDULED = "name: iris-sched\nmodel: models:/iris/1\nmonitoring:\n  schedule: '*/15 * * * *'\n"
UNSCHEDULED = "name: iris-plain\nmodel: models:/iris/1\nmonitoring:\n  drift: {alpha: 0.02}\n"


def test_served_monitor_has_a_schedule_per_applied_spec_schedule(
    mlops_home: Path, tmp_path: Path
) -> None:
    for text in (SCHEDULED, UNSCHEDULED):
        save_applied(parse_spec(text, tmp_path / "deploy.yaml").spec, "deploy.yaml")
    assert scheduled_monitors() == {"iris-sched": "*/15 * * * *"}

    served = {d.name: d for d in served_deployments(ServeSettings(monitored_deployment="iris"))}
    schedules = {s.slug: s for s in served["monitor"].schedules}
    assert set(schedules) == {MONITOR_SCHEDULE_SLUG, "spec-iris-sched"}
    spec = schedules["spec-iris-sched"]
    assert (spec.schedule.cron, spec.schedule.timezone) == ("*/15 * * * *", "UTC")
    assert spec.active is True
    assert spec.parameters == {"deployment": "iris-sched"}
    assert schedules[MONITOR_SCHEDULE_SLUG].parameters == {"deployment": "iris"}
    # no other deployment gets a schedule from a spec
    others = [d for name, d in served.items() if name != "monitor"]
    assert all(not d.schedules for d in others)


def test_without_a_monitored_deployment_only_the_spec_schedules_are_served(
    mlops_home: Path, tmp_path: Path
) -> None:
    served = {d.name: d for d in served_deployments(ServeSettings(monitored_deployment=None))}
    assert served["monitor"].schedules == []
    save_applied(parse_spec(SCHEDULED, tmp_path / "deploy.yaml").spec, "deploy.yaml")
    served = {d.name: d for d in served_deployments(ServeSettings(monitored_deployment=None))}
    assert [s.slug for s in served["monitor"].schedules] == ["spec-iris-sched"]
