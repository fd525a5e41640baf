"""`monitoring.schedule` on a real `prefect server`: `mlops deploy --spec` adds, keeps, changes
and removes the served monitor deployment's schedule `spec-<name>`; without the monitor it waits
for `mlops up`, which serves it from the ledger."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlops_pipeline.flows.deployments import MONITOR_DEPLOYMENT, served_deployments
from mlops_pipeline.flows.spec import apply_spec
from mlops_pipeline.tasks.orchestration import run_flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import DeploymentSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.servers import prefect_server

pytestmark = pytest.mark.e2e

SPEC = """\
name: iris-sched
model: models:/iris/1
target:
  uri: "local:"
monitoring:
  schedule: "*/15 * * * *"
"""
SLUG = "spec-iris-sched"


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as api:
        yield api


@pytest.fixture
def api(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("PREFECT_API_KEY", raising=False)
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield prefect_api


def serve_monitor() -> None:
    """Create the `monitor` deployment on the server as `mlops up` does (ledger included)."""
    (monitor,) = [d for d in served_deployments() if d.name == "monitor"]
    monitor.apply()


def spec_schedules() -> list[DeploymentSchedule]:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(MONITOR_DEPLOYMENT)
        schedules = client.read_deployment_schedules(deployment.id)
    return [s for s in schedules if s.slug and s.slug.startswith("spec-")]


def apply(path: Path) -> str:
    return run_flow(apply_spec, spec_file=str(path))["action"]


def test_the_spec_schedule_follows_the_spec_on_the_served_monitor(
    api: str,
    undeploy_all: None,
    registered_model: dict,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve_monitor()
    assert spec_schedules() == []
    spec_file = tmp_path / "deploy.yaml"
    spec_file.write_text(SPEC)

    assert apply(spec_file) == "create"
    (created,) = spec_schedules()
    assert (created.slug, created.active, created.parameters) == (
        SLUG,
        True,
        {"deployment": "iris-sched"},
    )
    assert (created.schedule.cron, created.schedule.timezone) == ("*/15 * * * *", "UTC")

    # the same spec again: no duplicate, the same schedule untouched
    assert apply(spec_file) == "none"
    assert spec_schedules() == [created]

    # another cron: the same schedule, updated
    spec_file.write_text(SPEC.replace("*/15 * * * *", "5 3 * * *"))
    assert apply(spec_file) == "record"
    (updated,) = spec_schedules()
    assert updated.id == created.id
    assert (updated.schedule.cron, updated.parameters) == (
        "5 3 * * *",
        {"deployment": "iris-sched"},
    )

    # no schedule in the spec: removed
    spec_file.write_text(SPEC.replace('  schedule: "*/15 * * * *"\n', "  drift: {alpha: 0.05}\n"))
    assert apply(spec_file) == "record"
    assert spec_schedules() == []

    # without the served monitor the schedule waits for `mlops up`, which serves it
    with get_client(sync_client=True) as client:
        client.delete_deployment(client.read_deployment_by_name(MONITOR_DEPLOYMENT).id)
    spec_file.write_text(SPEC)
    with caplog.at_level(logging.INFO, logger="mlops_pipeline.tasks.spec"):
        assert apply(spec_file) == "record"
    waiting = [
        r.getMessage() for r in caplog.records if "applies when `mlops up`" in r.getMessage()
    ]
    assert len(waiting) == 1, caplog.text
    serve_monitor()
    (served,) = spec_schedules()
    assert (served.slug, served.schedule.cron, served.parameters) == (
        SLUG,
        "*/15 * * * *",
        {"deployment": "iris-sched"},
    )
    assert apply(spec_file) == "none"
    assert [s.id for s in spec_schedules()] == [served.id]
