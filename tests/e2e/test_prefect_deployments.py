"""`prefect deploy --all` against a real `prefect server`, read back through the Prefect client:
every deployment, the redeploy trigger's automation, its concurrency limit, the monitor schedule,
and the Docker/Kubernetes examples with their job variables."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlops_pipeline.flows.deployments import REDEPLOY_PARAMETERS
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

from tests.servers import prefect_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
EXAMPLES = "prefect.docker-k8s.yaml"
EXAMPLE_POOLS = {"mlops-docker": "docker", "mlops-k8s": "kubernetes"}


def declared(file: str) -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load((ROOT / file).read_text())["deployments"]}


def prefect(env: dict[str, str], *args: str) -> None:
    """Run the `prefect` CLI from the project root; fail with its output if it fails."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr}"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[SyncPrefectClient, dict[str, str]]]:
    """A real Prefect server with the three work pools, its client and the CLI's environment."""
    home = tmp_path / "prefect-server"
    home.mkdir()
    with prefect_server(home) as api:
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(tmp_path / "prefect-client"),
            "MLOPS_PROJECT_DIR": str(ROOT),
            "MLOPS_MONITORED_DEPLOYMENT": "iris-prod",
            "MLOPS_FLOWS_IMAGE": "mlops-flows:test",
        }
        prefect(env, "work-pool", "create", "mlops", "--type", "process")  # as users do
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as c:
            for pool, kind in EXAMPLE_POOLS.items():  # the same, without two more CLI starts
                template = asyncio.run(get_default_base_job_template_for_infrastructure_type(kind))
                c.create_work_pool(
                    WorkPoolCreate(name=pool, type=kind, base_job_template=template or {})
                )
            yield c, env


def test_prefect_deploy_all_creates_every_deployment_trigger_limit_and_schedule(client):
    client, env = client
    prefect(env, "deploy", "--all")
    prefect(env, "deploy", "--all", "--prefect-file", EXAMPLES)

    deployments = {d.name: d for d in client.read_deployments()}
    expected = {**declared("prefect.yaml"), **declared(EXAMPLES)}
    assert set(deployments) == set(expected)
    for pool, kind in EXAMPLE_POOLS.items():
        assert client.read_work_pool(pool).type == kind
    for name, config in expected.items():
        assert deployments[name].work_pool_name == config["work_pool"]["name"], name
        assert deployments[name].description == config["description"], name

    for name in ("redeploy", "redeploy-docker", "redeploy-k8s"):
        redeploy = deployments[name]
        assert redeploy.global_concurrency_limit.limit == 1
        assert redeploy.concurrency_options.collision_strategy == (
            ConcurrencyLimitStrategy.CANCEL_NEW
        )
        [automation] = client.read_resource_related_automations(f"prefect.deployment.{redeploy.id}")
        assert automation.enabled and automation.name == "redeploy-on-drift"
        assert automation.trigger.expect == {"mlops.drift.detected"}
        assert automation.trigger.match.model_dump() == {
            "prefect.resource.id": "mlops.deployment.*"
        }
        [action] = automation.actions
        assert action.type == "run-deployment" and action.deployment_id == redeploy.id
        assert action.parameters == REDEPLOY_PARAMETERS

    for name in ("monitor", "monitor-docker", "monitor-k8s"):
        [schedule] = deployments[name].schedules
        assert schedule.active and schedule.schedule.cron == "0 * * * *"
        assert schedule.parameters == {"deployment": "iris-prod"}
        assert deployments[name].parameters == {"deployment": "iris-prod"}

    assert deployments["redeploy-docker"].job_variables["image"] == "mlops-flows:test"
    assert deployments["monitor-k8s"].job_variables["namespace"] == "mlops"
    others = set(deployments) - {n for n in deployments if n.startswith("redeploy")}
    for name in others:
        assert not client.read_resource_related_automations(
            f"prefect.deployment.{deployments[name].id}"
        ), name
