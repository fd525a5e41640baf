"""The event path on a real `prefect server` with the flows served by
`python -m mlops_pipeline.flows.deployments` (what `mlops up` runs): drifted traffic -> the monitor
deployment -> `mlops.drift.detected` -> the automation -> the redeploy deployment -> the
challenger serving; and one drift episode's event arriving three times switches versions once."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlops_pipeline import ledger
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy
from mlops_pipeline.monitoring.publish import drift_event
from mlops_pipeline.monitoring.reference import MonitorTarget
from mlops_pipeline.monitoring.results import DriftVerdict
from mlops_pipeline.redeploy import records
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tasks.demo import wait_for_captures
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.flows.redeploy_support import COLUMNS, register_pickle, strong_model, weak_model
from tests.servers import prefect_server
from tests.targets.local_support import served_version

pytestmark = pytest.mark.e2e

SERVED = ["monitor", "redeploy"]  # the deployments this test drives


@dataclass
class Stack:
    """A Prefect server, the served flows, and the MLOPS_HOME the runner and test share."""

    api: str
    home: Path
    client: SyncPrefectClient
    tmp: Path

    def flow_runs(self, deployment: str) -> list[FlowRun]:
        return self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    raise TimeoutError(f"{what} within {timeout} s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("event-redeploy")
    home = tmp / "mlops-home"
    (tmp / "prefect-server").mkdir()
    with pytest.MonkeyPatch.context() as mp, prefect_server(tmp / "prefect-server") as api:
        mp.setenv("MLOPS_HOME", str(home))
        for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLOPS_LEDGER_URI"):
            mp.delenv(var, raising=False)
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
            mp.delenv(var, raising=False)  # the test's own steps run in-process
        get_settings.cache_clear()
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(tmp / "prefect-runner"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "MLOPS_ORCHESTRATE": "auto",
            "MLOPS_BAKE_SECONDS": "0",
        }
        env.pop("MLOPS_MONITORED_DEPLOYMENT", None)
        # the test's own setup (register, deploy) runs in-process, not as tracked flow runs
        mp.setenv("MLOPS_ORCHESTRATE", "never")
        get_settings.cache_clear()
        log = open(tmp / "runner.log", "w")  # noqa: SIM115 - closed below, after the runner
        runner = subprocess.Popen(
            [sys.executable, "-m", "mlops_pipeline.flows.deployments"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as c:
                yield Stack(api, home, c, tmp)
        finally:
            runner.terminate()
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runner.kill()
            log.close()
            from mlops_pipeline.targets.local import LocalTarget

            for served in LocalTarget().list():
                LocalTarget().delete(served.name)
            get_settings.cache_clear()


def wait_for_served(stack: Stack) -> None:
    """Until the runner has created the deployments and the redeploy trigger's automation."""

    def ready() -> bool:
        names = {d.name for d in stack.client.read_deployments()}
        if not set(SERVED) <= names:
            return False
        redeploy = stack.client.read_deployment_by_name("redeploy/redeploy")
        return bool(
            stack.client.read_resource_related_automations(f"prefect.deployment.{redeploy.id}")
        )

    wait_until(ready, 60, "the served deployments and their automation did not appear")


def champion_and_challenger(stack: Stack, frame: pd.DataFrame, model: str, name: str) -> dict:
    """A weak champion serving as `name` (capturing) and a better challenger, both registered
    under `model` with labelled reference data, so the gate can split it."""
    reference = stack.tmp / f"{model}-reference.csv"
    frame.to_csv(reference, index=False)
    champion = register_pickle(weak_model(frame), stack.tmp, reference, "champion", name=model)
    challenger = register_pickle(
        strong_model(frame), stack.tmp, reference, "challenger", name=model
    )
    captures = stack.tmp / f"{name}-captures"
    served = run_flow(
        deploy,
        model_uri=f"models:/{model}@champion",
        name=name,
        capture_uri=str(captures),
        ready_timeout=90,
    )
    return {
        "champion": champion,
        "challenger": challenger,
        "endpoint": served["endpoint_url"],
        "captures": captures,
    }


def finished(runs: list[FlowRun], count: int) -> list[FlowRun] | None:
    done = [r for r in runs if r.state is not None and r.state.is_final()]
    return done if len(runs) >= count and len(done) == len(runs) else None


def test_drift_event_starts_the_redeploy_that_ends_with_the_challenger_serving(
    stack: Stack, iris_frame: pd.DataFrame
):
    wait_for_served(stack)
    setup = champion_and_challenger(stack, iris_frame, "iris-event", "iris-event")
    assert served_version(setup["endpoint"]) == setup["champion"]

    # traffic unlike the reference: every petal 3 cm longer
    drifted = iris_frame[COLUMNS].sample(300, replace=True, random_state=1)
    drifted["petal_length"] += 3.0
    for start in range(0, len(drifted), 50):
        rows = drifted.iloc[start : start + 50]
        response = httpx.post(
            f"{setup['endpoint']}/invocations",
            json={"dataframe_split": rows.to_dict(orient="split", index=False)},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    assert wait_for_captures(setup["captures"], len(drifted)) >= len(drifted)

    # the monitor as the schedule or the UI runs it: a run of the served monitor deployment
    monitor = stack.client.read_deployment_by_name("monitor-deployment/monitor")
    stack.client.create_flow_run_from_deployment(
        monitor.id,
        parameters={"deployment": "iris-event", "drift_config": {"min_samples": 100}},
    )
    [monitored] = wait_until(
        lambda: finished(stack.flow_runs("monitor"), 1), 60, "the monitor run did not finish"
    )
    assert monitored.state.is_completed(), monitored.state

    [redeployed] = wait_until(
        lambda: finished(stack.flow_runs("redeploy"), 1),
        90,
        "no redeploy run finished after the drift event",
    )
    assert redeployed.state.is_completed(), redeployed.state
    assert redeployed.parameters["name"] == "iris-event"
    assert redeployed.parameters["reason"].startswith("drift detected: ")
    assert "petal_length" in redeployed.parameters["reason"]
    assert redeployed.parameters["event_id"] and redeployed.parameters["episode_id"]

    assert served_version(setup["endpoint"]) == setup["challenger"]
    [decision] = records.decisions("iris-event")
    assert decision["decision"] == "promoted"
    assert decision["episode_id"] == redeployed.parameters["episode_id"]
    actions = [(e.action, e.result) for e in ledger.history("iris-event")]
    assert actions == [("create", "succeeded"), ("update", "succeeded")]


def post_drift_event(stack: Stack, deployment: str, model: str, episode_id: str) -> str:
    """Send `mlops.drift.detected` as the monitor emits it to the server's events API."""
    target = MonitorTarget(deployment, "", model, "1")
    verdict = DriftVerdict(drift=True, drifted=["petal_length"])
    event: dict[str, Any] = {
        **drift_event(target, verdict, "report.html", episode_id),
        "id": str(uuid.uuid4()),
        "occurred": dt.datetime.now(dt.UTC).isoformat(),
    }
    httpx.post(f"{stack.api}/events", json=[event], timeout=30).raise_for_status()
    return event["id"]


def test_one_episode_sent_three_times_switches_versions_once(
    stack: Stack, iris_frame: pd.DataFrame
):
    wait_for_served(stack)
    setup = champion_and_challenger(stack, iris_frame, "iris-repeat", "iris-repeat")
    before = len(stack.flow_runs("redeploy"))
    episode = uuid.uuid4().hex

    sent = [post_drift_event(stack, "iris-repeat", "iris-repeat", episode) for _ in range(3)]

    def three_finished() -> list[FlowRun] | None:
        runs = [r for r in stack.flow_runs("redeploy") if r.parameters["name"] == "iris-repeat"]
        return finished(runs, 3)

    runs = wait_until(three_finished, 90, "three redeploy runs did not finish")
    assert len(stack.flow_runs("redeploy")) == before + 3
    assert sorted(r.parameters["event_id"] for r in runs) == sorted(sent)
    assert {r.parameters["episode_id"] for r in runs} == {episode}
    # each run either ran (one claims the episode) or was cancelled by the concurrency limit
    assert all(r.state.is_completed() or r.state.is_cancelled() for r in runs), [
        (r.name, r.state) for r in runs
    ]

    decisions = records.decisions("iris-repeat")
    assert [d["decision"] for d in decisions if d["decision"] != "skipped"] == ["promoted"]
    assert {d["episode_id"] for d in decisions} == {episode}
    updates = [e for e in ledger.history("iris-repeat") if e.action == "update"]
    assert len(updates) == 1
    assert served_version(setup["endpoint"]) == setup["challenger"]


def test_the_demo_redeploys_through_the_event_path_when_the_flows_are_served(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`make demo` with `mlops up` running: the drift event, not the demo, starts the redeploy."""
    from mlops_pipeline.flows.demo import run_demo

    wait_for_served(stack)
    monkeypatch.setenv("MLOPS_ORCHESTRATE", "auto")  # as a user's `mlops demo`: tracked runs
    get_settings.cache_clear()
    result = run_flow(run_demo, workdir=tmp_path / "demo", bake_seconds=0)
    assert result["redeploy_trigger"].startswith("event: mlops.drift.detected")
    decision = result["redeploy"]
    assert decision["decision"] == "promoted", decision.get("reason")
    episode = (decision.get("trigger") or {}).get("episode_id") or decision.get("episode_id")
    assert episode == result["monitor_after_drift"]["event"]["episode_id"]
    assert result["traffic_during_redeploy"]["failed"] == 0
    assert result["prefect_ui"] and stack.api.startswith(result["prefect_ui"])
    [run] = [r for r in stack.flow_runs("redeploy") if r.parameters["name"] == "wine-demo"]
    assert run.state.is_completed(), run.state
