"""Canary rollouts on the local target, with real supervisor, proxy and scoring processes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
from mlops_pipeline import ledger
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import rollback_deployment
from mlops_pipeline.flows.rollout import canary
from mlops_pipeline.inuse import deployments_using
from mlops_pipeline.redeploy.records import decisions
from mlops_pipeline.registry.versions import get_model_version
from mlops_pipeline.targets.local import LocalTarget
from mlops_pipeline.tasks.demo import wait_for_captures
from mlops_pipeline.tracking import connect

from tests.mlops.rollout.support import VersionClient, register_behaviour
from tests.targets.local_support import IRIS_ROW, LoadClient, register_version, served_version


def _challenger_state(mlops_home: Path) -> dict | None:
    state = json.loads((mlops_home / "local" / "iris-prod" / "state.json").read_text())
    return state["challenger"]


def test_canary_promotes_under_load_with_no_failed_request(
    iris_prod: dict, iris_model_dir: Path, mlops_home: Path
) -> None:
    v2 = register_version(iris_model_dir)
    endpoint = iris_prod["endpoint_url"]
    load = LoadClient(endpoint, max_requests=20_000, max_seconds=120)
    load.start()
    try:
        result = run_flow(
            canary, name="iris-prod", model_uri=f"models:/iris/{v2}", steps="10,50,100",
            # the same model: only noise can make its p95 differ, and a shared 2-core test
            # machine makes a lot of it (3.3x seen); this test is about promotion and failed
            # requests, test_canary_rolls_back_a_slow_challenger and the unit tests check p95
            interval=2.5, max_p95_ratio=50.0,
        )  # fmt: skip
        after = served_version(endpoint)
    finally:
        load.stop()

    assert result["decision"] == "promoted", result["reason"]
    assert load.failures == []
    assert load.ok > 200
    assert [s["percent"] for s in result["steps"]] == [10.0, 50.0, 100.0]
    assert [s["comparison"]["verdict"] for s in result["steps"]] == ["healthy"] * 3
    first = result["steps"][0]["comparison"]
    # 10 % of the traffic went to the challenger, 90 % to the champion, over the same window
    assert first["challenger"]["requests"] >= 20 and first["challenger"]["errors"] == 0
    assert first["champion"]["requests"] > 3 * first["challenger"]["requests"]
    last = result["steps"][-1]["comparison"]
    assert last["challenger"]["requests"] >= 20
    # the deployment now serves v2: process, ledger, history, tags, aliases
    assert after == v2
    assert ledger.get_deployment("iris-prod").model_version == v2
    event = ledger.history("iris-prod")[-1]
    assert (event.action, event.result, event.from_version, event.to_version) == (
        "update", "succeeded", "1", v2,
    )  # fmt: skip
    client = connect()
    assert "iris-prod" in deployments_using(client, "iris", v2)
    assert "iris-prod" not in deployments_using(client, "iris", "1")
    assert get_model_version("iris", alias="champion").version == v2
    assert get_model_version("iris", alias="previous-champion").version == "1"
    # no challenger left, the proxy has no canary route and labels the new primary
    assert _challenger_state(mlops_home) is None
    target = LocalTarget()
    routes = httpx.get(
        f"{endpoint}/-/proxy/routes",
        headers={"Authorization": f"Bearer {target.proxy_access('iris-prod').token}"},
    ).json()
    assert routes["canary"] is None and routes["primary"]["version"] == v2
    row = decisions("iris-prod")[-1]
    assert (row["decision"], row["challenger_version"]) == ("promoted", v2)
    assert row["details"]["kind"] == "canary" and result["mlflow_run_id"]
    # the row spans the canary: from its challenger starting to the decision (3 steps of 2.5 s)
    took = dt.datetime.fromisoformat(row["finished_at"]) - dt.datetime.fromisoformat(
        row["started_at"]
    )
    assert took.total_seconds() >= 7.5

    # a rollback undoes the promotion: v1 serves again and is `champion` again
    back = run_flow(rollback_deployment, name="iris-prod", reason="v2 misbehaves")
    assert back["model_version"] == "1" and served_version(endpoint) == "1"
    assert get_model_version("iris", alias="champion").version == "1"
    assert "previous-champion" not in get_model_version("iris", version="1").aliases


def test_canary_rolls_back_a_failing_challenger(
    iris_prod: dict, iris_features, tmp_path: Path, mlops_home: Path
) -> None:
    v2 = register_behaviour(tmp_path, "faulty", iris_features)
    endpoint = iris_prod["endpoint_url"]
    load = VersionClient(endpoint, max_seconds=120)
    load.start()
    try:
        result = run_flow(
            canary, name="iris-prod", model_uri=f"models:/iris/{v2}", steps="30,100", interval=2.0
        )
        load.stop()
        assert result["decision"] == "rolled_back"
        # after the rollback every answer comes from the champion again
        after = [httpx.post(f"{endpoint}/invocations", json=_row()) for _ in range(20)]
    finally:
        load.stop()

    assert [r.headers["x-model-version"] for r in after] == ["1"] * 20
    assert all(r.status_code == 200 for r in after)
    [step] = result["steps"]  # rolled back at the first step
    assert step["percent"] == 30.0 and step["comparison"]["verdict"] == "regressed"
    x, c = step["comparison"]["challenger"], step["comparison"]["champion"]
    # every challenger answer failed (IRIS_ROW trips its bug: the service answers 422, which
    # the proxy counts as that version's client error), no champion answer did
    assert x["client_errors"] == x["requests"] > 0 and x["errors"] == 0
    assert c["client_errors"] == c["errors"] == 0 and c["requests"] > 0
    assert "error rate" in result["reason"]
    # what clients saw: failures only from v2, all 422
    failed = {(status, v) for _, status, v, _ in load.seen if status != 200}
    assert failed == {(422, v2)}
    # recorded: deployment still v1, the failed update with the figures, the decision row
    assert ledger.get_deployment("iris-prod").model_version == "1"
    event = ledger.history("iris-prod")[-1]
    assert (event.action, event.result, event.to_version) == ("update", "failed", v2)
    assert f"{x['client_errors']}/{x['requests']}" in event.reason
    row = decisions("iris-prod")[-1]
    assert row["decision"] == "rolled_back"
    recorded = row["details"]["steps"][0]["comparison"]["challenger"]
    assert recorded["client_errors"] == x["client_errors"]
    assert "iris-prod" not in deployments_using(connect(), "iris", v2)
    assert get_model_version("iris", alias="champion").version == "1"
    assert _challenger_state(mlops_home) is None
    assert served_version(endpoint) == "1"


def test_canary_rolls_back_a_slow_challenger(
    iris_prod: dict, iris_features, tmp_path: Path
) -> None:
    v2 = register_behaviour(tmp_path, "slow", iris_features)
    endpoint = iris_prod["endpoint_url"]
    load = LoadClient(endpoint, max_seconds=120)
    load.start()
    try:
        result = run_flow(
            canary, name="iris-prod", model_uri=f"models:/iris/{v2}", steps="50,100", interval=3.0
        )
    finally:
        load.stop()

    assert result["decision"] == "rolled_back"
    [step] = result["steps"]
    x, c = step["comparison"]["challenger"], step["comparison"]["champion"]
    assert x["errors"] == 0 and x["requests"] >= 20 and c["requests"] >= 20
    # 80 ms of sleep per answer against a champion answering in a few ms
    assert x["p95_ms"] >= 80.0 > c["p95_ms"] * 1.5
    assert step["comparison"]["p95_ratio"] > 1.5
    assert "p95" in result["reason"]
    assert load.failures == []  # slow, not failing: no client request failed
    assert ledger.get_deployment("iris-prod").model_version == "1"
    assert served_version(endpoint) == "1"


def _row() -> dict:
    from tests.targets.local_support import IRIS_ROW

    return IRIS_ROW


def test_capture_and_drift_work_per_version_through_a_canary(
    iris_prod: dict, iris_model_dir: Path, iris_reference_csv: Path, mlops_home: Path
) -> None:
    import pandas as pd
    from mlops_pipeline.flows.monitor import monitor_deployment
    from mlops_pipeline.flows.register import register_model

    v2 = run_flow(
        register_model, source=str(iris_model_dir), name="iris",
        reference_data=str(iris_reference_csv),
    )["version"]  # fmt: skip
    endpoint = iris_prod["endpoint_url"]
    load = VersionClient(endpoint, max_seconds=120)
    load.start()
    try:
        result = run_flow(
            canary, name="iris-prod", model_uri=f"models:/iris/{v2}", steps="50,100",
            interval=2.5, max_p95_ratio=50.0,  # p95 noise: see the promotion test
        )  # fmt: skip
    finally:
        load.stop()
    assert result["decision"] == "promoted", result["reason"]
    # every answer was captured under the version that served it, and only there
    served: dict[str, int] = {}
    for _, status, version, _ in load.seen:
        served[version] = served.get(version, 0) + (status == 200)
    rows = len(IRIS_ROW["dataframe_split"]["data"]) * sum(served.values())
    wait_for_captures(mlops_home / "captures" / "iris-prod", rows)
    root = mlops_home / "captures" / "iris-prod" / "model=iris"
    captured = {
        v: pd.concat(pd.read_parquet(f) for f in (root / f"version={v}").rglob("*.parquet"))
        for v in ("1", v2)
    }
    for v in ("1", v2):
        ids = set(captured[v]["_request_id"])
        assert (captured[v]["_model_version"] == v).all()
        # the load client's requests, plus the few the deploy and canary checks sent
        assert served[v] <= len(ids) <= served[v] + 5
    # drift monitoring reads each version's own partition against its own reference
    now = run_flow(monitor_deployment, deployment="iris-prod", window="1h")
    before = run_flow(
        monitor_deployment, deployment="iris-prod", window="1h", model_uri="models:/iris/1",
        capture_uri=iris_prod["capture_uri"],
    )  # fmt: skip
    assert now["model_uri"] == f"models:/iris/{v2}" and before["model_uri"] == "models:/iris/1"
    assert now["stats"]["rows_scored"] == 2 * len(set(captured[v2]["_request_id"]))
    assert before["stats"]["rows_scored"] == 2 * len(set(captured["1"]["_request_id"]))
    # two distinct rows are too few to judge drift: what matters is which rows were read
    judged = {"ok", "drift", "insufficient_data"}
    assert now["status"] in judged and before["status"] in judged
