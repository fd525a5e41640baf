"""The batch: target against a real Prefect server: schedule, update, delete, ledger, guard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlops_pipeline.deployment import DeployConfig, DeploymentStatus, ModelRef
from mlops_pipeline.errors import (
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.targets.base import get_target
from mlops_pipeline.targets.batch import ENTRYPOINT, BatchTarget

from tests.mlops.batch.conftest import iris_model, iris_registry  # noqa: F401, F811 - fixtures
from tests.targets.batch_support import prefect_deployment, prefect_post

URI = "batch:{landing}?output={output}&cron=0 * * * *"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("batch:/landing?cron=0 * * * *", "needs an output folder"),
        ("batch:/landing?output=/scored", "needs a schedule"),
        ("batch:?output=/scored&cron=0 * * * *", "needs a landing folder"),
        ("batch:/landing?output=/o&cron=0 * * * *&colour=red", "has no option 'colour'"),
        ("batch:/landing?output=/o&cron=0 * * * *&format=xlsx", "format=xlsx"),
        ("batch:/landing?output=/o&cron=0 * * * *&chunk_rows=many", "chunk_rows=many"),
    ],
)
def test_target_uri_problems_are_named(uri: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        get_target(uri)


def test_target_uri_parts_and_the_canonical_ledger_uri(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = get_target("batch:landing?output=s3://bucket/scored&cron=*/5 * * * *&format=csv")
    assert isinstance(target, BatchTarget)
    assert target.landing == str(tmp_path / "landing")  # workers run elsewhere: absolute
    assert target.options["output"] == "s3://bucket/scored"
    assert target.options["cron"] == "*/5 * * * *"
    # the ledger's URI: absolute landing, options in one order, defaults left out
    expected = f"batch:{tmp_path / 'landing'}?output=s3://bucket/scored&cron=*/5 * * * *&format=csv"
    assert target.target_uri == expected
    same = get_target(
        f"batch:{tmp_path}/landing?format=csv&tz=UTC&cron=*/5  * * * *&output=s3://bucket/scored"
    )
    assert same.target_uri == expected == get_target(expected).target_uri
    assert get_target("batch:").target_uri == "batch:"


def test_without_a_prefect_api_the_target_says_what_to_set(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    target = get_target(URI.format(landing=tmp_path, output=tmp_path / "o"))
    with pytest.raises(BackendUnavailableError, match="PREFECT_API_URL"):
        target.create("nightly", ModelRef("iris", "1"), DeployConfig())


def test_create_schedules_update_switches_version_delete_removes(api: str, tmp_path) -> None:
    (tmp_path / "land").mkdir()
    uri = URI.format(landing=tmp_path / "land", output=tmp_path / "out") + "&tz=Europe/Paris"
    target = get_target(uri + "&id=key,region&pool=batch-pool")
    created = target.create("churn-hourly", ModelRef("churn", "3"), DeployConfig())

    assert created.model_uri == "models:/churn/3" and created.status == DeploymentStatus.READY
    assert created.target_uri == target.target_uri
    assert created.target_uri == (
        f"batch:{tmp_path / 'land'}?output={tmp_path / 'out'}&cron=0 * * * *&tz=Europe/Paris"
        "&id=key,region&pool=batch-pool"
    )
    assert created.capture_uri == f"{tmp_path / 'out'}/_captures"
    found = prefect_deployment(api, "churn-hourly")
    assert found["entrypoint"] == ENTRYPOINT
    assert found["global_concurrency_limit"]["limit"] == 1  # runs never overlap
    assert found["work_pool_name"] == "batch-pool"
    schedule = found["schedules"][0]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == "0 * * * *"
    assert schedule["schedule"]["timezone"] == "Europe/Paris"
    assert found["parameters"] == {
        "model_uri": "models:/churn/3",
        "input": str(tmp_path / "land"),
        "output": str(tmp_path / "out"),
        "format": "parquet",
        "chunk_rows": 100_000,
        "error_threshold": 0,
        "capture_uri": f"{tmp_path / 'out'}/_captures",
        "deployment": "churn-hourly",
        "id_columns": ["key", "region"],
    }
    pool = httpx.get(f"{api}/work_pools/batch-pool", timeout=10).json()
    assert pool["type"] == "process"
    assert (
        created.endpoint_url == f"{api.removesuffix('/api')}/deployments/deployment/{found['id']}"
    )

    with pytest.raises(ConflictError, match="already exists"):
        target.create("churn-hourly", ModelRef("churn", "4"), DeployConfig())

    updated = get_target("batch:").update("churn-hourly", ModelRef("churn", "4"), DeployConfig())
    assert updated.model_version == "4"
    after = prefect_deployment(api, "churn-hourly")
    assert after["parameters"] == {**found["parameters"], "model_uri": "models:/churn/4"}
    assert after["schedules"][0]["schedule"]["cron"] == "0 * * * *"

    listed = get_target("batch:").list()
    assert [(d.name, d.target_uri) for d in listed] == [("churn-hourly", target.target_uri)]
    health = get_target("batch:").health("churn-hourly")
    assert health["schedule"] == "0 * * * *"  # next_run once the Prefect scheduler ran
    # the schedule is on, but no worker polls batch-pool yet: nothing would run it
    assert (health["health"], health["ready"]) == ("degraded", False)
    assert "no worker polls pool 'batch-pool'" in health["error"]
    assert "No runs" in get_target("batch:").logs("churn-hourly")
    with pytest.raises(InvalidInputError, match="scores files, not requests"):
        get_target("batch:").predict("churn-hourly", {"inputs": []})

    get_target("batch:").delete("churn-hourly")
    assert prefect_deployment(api, "churn-hourly") is None
    with pytest.raises(NotFoundError, match="No batch deployment named 'churn-hourly'"):
        get_target("batch:").get("churn-hourly")
    get_target("batch:").delete("churn-hourly")  # idempotent


def test_a_prefect_deployment_of_that_name_made_by_someone_else_is_a_conflict(
    api: str, tmp_path
) -> None:
    flow_id = prefect_post(api, "/flows/", {"name": "score-batch"})["id"]
    prefect_post(api, "/deployments/", {"name": "handmade", "flow_id": flow_id})
    target = get_target(URI.format(landing=tmp_path, output=tmp_path / "o"))
    with pytest.raises(ConflictError, match="already exists"):
        target.create("handmade", ModelRef("churn", "1"), DeployConfig())
    assert prefect_deployment(api, "handmade")["parameters"] == {}  # left as it was
    with pytest.raises(NotFoundError):
        get_target("batch:").get("handmade")  # not one of ours


def test_a_bad_cron_is_refused_and_nothing_is_created(api: str, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match=r"cron 'every hour' is not a cron expression"):
        get_target(f"batch:{tmp_path}?output={tmp_path / 'o'}&cron=every hour")
    assert prefect_deployment(api, "bad-cron") is None


def test_deploy_records_guards_runs_and_undeploys(
    api: str,
    iris_model,  # noqa: F811 - the fixture imported above
    iris_features,
    tmp_path,
) -> None:
    """Through the deployment operations, as `mlops deploy` does: ledger, in-use tag, runs."""
    from mlops_pipeline import inuse
    from mlops_pipeline.batch import watermark
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.batch import score_batch
    from mlops_pipeline.monitoring.captures import list_capture_files
    from mlops_pipeline.targets import operations
    from mlops_pipeline.tracking import connect
    from prefect.flows import load_flow_from_entrypoint

    landing, out = tmp_path / "landing", tmp_path / "scored"
    landing.mkdir()
    iris_features.iloc[:40].to_parquet(landing / "monday.parquet", index=False)
    uri = URI.format(landing=landing, output=out)
    operations.create_deployment("iris-batch", ModelRef("iris", "1"), uri, DeployConfig())
    try:
        recorded = operations.get_deployment("iris-batch")
        assert (recorded.target_uri, recorded.model_uri) == (uri, "models:/iris/1")
        assert inuse.deployments_using(connect(), "iris", "1") == {"iris-batch": uri}
        assert operations.get_status("iris-batch").status == DeploymentStatus.READY

        # what the schedule runs: the installed entry point with the deployment's parameters
        assert load_flow_from_entrypoint(ENTRYPOINT) is score_batch
        found = prefect_deployment(api, "iris-batch")
        # the worker gets this process's registry and ledger (no password in them here)
        assert found["job_variables"]["env"] == {
            "MLOPS_HOME": str(iris_model["home"]),
            "MLOPS_TRACKING_URI": f"sqlite:///{iris_model['home']}/mlflow.db",
            "MLOPS_LEDGER_URI": f"sqlite:///{iris_model['home']}/ledger.db",
        }
        params = found["parameters"]
        first = run_flow(score_batch, **params)
        assert (first["files_scored"], first["rows_scored"]) == (1, 40)
        assert run_flow(score_batch, **params)["files_scored"] == 0  # nothing new
        iris_features.iloc[40:50].to_parquet(landing / "tuesday.parquet", index=False)
        assert run_flow(score_batch, **params)["rows_scored"] == 10
        assert len(list_capture_files(params["capture_uri"], "iris", "1")) == 2
        assert pd.read_parquet(out).shape[0] == 50  # BI tools read the folder as one table
    finally:
        operations.delete_deployment("iris-batch")
    assert prefect_deployment(api, "iris-batch") is None
    assert inuse.deployments_using(connect(), "iris", "1") == {}
    assert watermark.scored_files("iris-batch") == {}


def test_the_worker_env_never_carries_a_password(mlops_home, monkeypatch) -> None:
    from mlops_pipeline.settings import get_settings
    from mlops_pipeline.targets.batch import _worker_env

    monkeypatch.setenv("MLOPS_LEDGER_URI", "postgresql://mlops:s3cret@db.example/ledger")
    monkeypatch.setenv("MLOPS_TRACKING_URI", "http://mlflow.example:5000")
    get_settings.cache_clear()
    env = _worker_env()
    assert env == {
        "MLOPS_HOME": str(mlops_home),
        "MLOPS_TRACKING_URI": "http://mlflow.example:5000",
    }
    assert "s3cret" not in str(env)


def test_mlops_deploy_status_and_undeploy_on_the_batch_target(
    api: str,
    iris_model,  # noqa: F811 - the fixture imported above
    tmp_path,
) -> None:
    """The CLI end to end: deploy runs the deploy flow (a Prefect flow run on this server)."""
    import json

    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    (tmp_path / "landing").mkdir()
    target = f"batch:{tmp_path / 'landing'}?output={tmp_path / 'scored'}&cron=30 2 * * *"
    deployed = runner.invoke(
        app, ["deploy", "models:/iris/1", "--name", "iris-nightly", "--target", target, "--json"]
    )
    assert deployed.exit_code == 0, deployed.output
    record = json.loads(deployed.stdout)
    assert (record["target_uri"], record["model_uri"]) == (target, "models:/iris/1")
    assert record["config"]["options"]["cron"] == "30 2 * * *"

    status = runner.invoke(app, ["status", "iris-nightly", "--json"])
    assert status.exit_code == 1, status.output  # degraded: no worker polls the pool
    report = json.loads(status.stdout)
    assert report["status"] == "ready" and report["health"]["schedule"] == "30 2 * * *"
    assert report["health"]["health"] == "degraded"

    again = runner.invoke(app, ["deploy", "models:/iris/1", "--name", "iris-nightly",
                                "--target", "local:"])  # fmt: skip
    assert again.exit_code == 4  # the name runs on batch:, not local:

    removed = runner.invoke(app, ["undeploy", "iris-nightly"])
    assert removed.exit_code == 0, removed.output
    assert prefect_deployment(api, "iris-nightly") is None


def test_a_process_worker_of_the_pool_runs_what_the_schedule_starts(
    api: str,
    iris_model,  # noqa: F811 - the fixture imported above
    iris_features,
    tmp_path,
) -> None:
    """A run of the deployment, as its cron creates one, picked up by a real `prefect worker`
    of its pool in another process: it scores the landing folder into the output folder."""
    from mlops_pipeline.targets import operations

    landing, out = tmp_path / "landing", tmp_path / "scored"
    landing.mkdir()
    iris_features.iloc[:40].to_parquet(landing / "monday.parquet", index=False)
    uri = URI.format(landing=landing, output=out) + "&pool=batch-worker-test"
    operations.create_deployment("iris-worker", ModelRef("iris", "1"), uri, DeployConfig())
    try:
        found = prefect_deployment(api, "iris-worker")
        run = prefect_post(api, f"/deployments/{found['id']}/create_flow_run", {})
        prefect = str(Path(sys.executable).with_name("prefect"))
        worker = subprocess.run(
            [prefect, "worker", "start", "--pool", "batch-worker-test", "--run-once"],
            env={**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "worker")},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=30).json()["state"]
        assert state["type"] == "COMPLETED", (state, worker.stdout[-3000:], worker.stderr[-3000:])
        scored = pd.read_parquet(out)
        assert scored.shape[0] == 40 and (out / "_SUCCESS").exists()
    finally:
        operations.delete_deployment("iris-worker")
