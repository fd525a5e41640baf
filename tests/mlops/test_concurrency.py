"""Twenty concurrent registrations of one name against a PostgreSQL-backed MLflow server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.settings import get_settings

from tests.servers import mlflow_server, postgres_cluster

pytestmark = pytest.mark.postgres


def test_twenty_concurrent_registrations_get_versions_1_to_20(
    tmp_path, monkeypatch, iris_model_dir
):
    with postgres_cluster() as database, mlflow_server(database, tmp_path / "artifacts") as url:
        monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("MLOPS_TRACKING_URI", url)
        # the registry is under test, not Prefect: run the flow in-process even when this
        # worker has a Prefect test harness up
        monkeypatch.setenv("MLOPS_ORCHESTRATE", "never")
        get_settings.cache_clear()

        def register(i: int) -> str:
            result = run_flow(
                register_model, source=str(iris_model_dir), name="contended", tags={"i": str(i)}
            )
            return result["version"]

        with ThreadPoolExecutor(max_workers=20) as pool:
            versions = list(pool.map(register, range(20)))
        get_settings.cache_clear()

    assert sorted(versions, key=int) == [str(v) for v in range(1, 21)]
