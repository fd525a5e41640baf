"""Both orchestration modes give the same results: register -> deploy -> score -> monitor.

Once in-process (`MLOPS_ORCHESTRATE=never`: steps called directly, with their retries) and once as
tracked Prefect flow runs (`always`, against a temporary Prefect API), each in a fresh
MLOPS_HOME, with the same model, reference data and traffic. What may differ between the two
(ids, times, ports, paths) is masked; everything else must be equal.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy, undeploy
from mlops_pipeline.flows.monitor import monitor_deployment
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tasks.demo import wait_for_captures

from tests.conftest import IRIS_COLUMNS

pytestmark = pytest.mark.e2e

ROWS = 600
# keys whose values are per-run by nature: identifiers, clocks, durations, places
VOLATILE = re.compile(
    r"(^|_)(id|ids|time|timestamp|at|created|updated|seconds|duration|url|uri|port|pid|path|"
    r"report|dir|docs|home|source|episode|event|run|started|finished|elapsed|latency\w*)$"
)


def normalised(value: Any, home: Path) -> Any:
    """VALUE with per-run fields masked and this run's home replaced by a placeholder."""
    if isinstance(value, dict):
        return {
            k: "<volatile>" if VOLATILE.search(k) else normalised(v, home) for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalised(v, home) for v in value]
    if isinstance(value, str):
        return value.replace(str(home), "<home>")
    if isinstance(value, float):
        return round(value, 9)
    return value


def traffic(iris_frame: pd.DataFrame) -> list[dict]:
    """ROWS in-distribution rows in batches of 100, the same for both modes."""
    rng = np.random.default_rng(11)
    rows = iris_frame[IRIS_COLUMNS].sample(ROWS, replace=True, random_state=11)
    rows = rows.reset_index(drop=True) + rng.normal(0, 0.05, (ROWS, len(IRIS_COLUMNS)))
    return [
        {
            "dataframe_split": {
                "columns": IRIS_COLUMNS,
                "data": rows.iloc[i : i + 100].values.tolist(),
            }
        }
        for i in range(0, ROWS, 100)
    ]


def run_loop(home: Path, mode: str, monkeypatch, model_dir: Path, reference: Path, batches):
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLOPS_ORCHESTRATE", mode)
    get_settings.cache_clear()
    capture = home / "capture"
    registered = run_flow(
        register_model,
        source=str(model_dir),
        name="iris-modes",
        tags={"team": "risk"},
        reference_data=str(reference),
        alias="champion",
    )
    deployed = run_flow(
        deploy, model_uri="models:/iris-modes@champion", name="modes", capture_uri=str(capture)
    )
    try:
        with httpx.Client(timeout=30) as client:
            for batch in batches:
                response = client.post(f"{deployed['endpoint_url']}/invocations", json=batch)
                assert response.status_code == 200, response.text
        assert wait_for_captures.fn(capture, ROWS) == ROWS
        monitored = run_flow(monitor_deployment, deployment="modes")
    finally:
        removed = run_flow(undeploy, name="modes")
    get_settings.cache_clear()
    return {
        "register": normalised(registered, home),
        "deploy": normalised(deployed, home),
        "monitor": normalised(monitored, home),
        "undeploy": normalised(removed, home),
    }


def test_direct_and_orchestrated_runs_give_the_same_results(
    prefect_harness, tmp_path, monkeypatch, iris_model_dir, iris_frame
):
    for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLOPS_LEDGER_URI"):
        monkeypatch.delenv(var, raising=False)
    reference = tmp_path / "reference.csv"
    rng = np.random.default_rng(3)
    base = (
        iris_frame[IRIS_COLUMNS].sample(3000, replace=True, random_state=3).reset_index(drop=True)
    )
    (base + rng.normal(0, 0.05, base.shape)).to_csv(reference, index=False)
    batches = traffic(iris_frame)

    direct = run_loop(tmp_path / "direct", "never", monkeypatch, iris_model_dir, reference, batches)
    tracked = run_loop(
        tmp_path / "tracked", "always", monkeypatch, iris_model_dir, reference, batches
    )

    assert direct["monitor"]["drift"] is False
    assert direct["register"]["version"] == "1"
    for step in ("register", "deploy", "monitor", "undeploy"):
        assert tracked[step] == direct[step], step
