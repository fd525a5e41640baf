"""The CLI against a real `prefect server start`: steps become tracked flow runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import prefect_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home) as api:
        yield api


def test_register_runs_as_a_tracked_flow_run(prefect_api, tmp_path, iris_pickle):
    env = {
        **os.environ,
        "MLOPS_HOME": str(tmp_path / "home"),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
    }
    env.pop("MLOPS_TRACKING_URI", None)
    mlops = Path(sys.executable).with_name("mlops")
    done = subprocess.run(
        [str(mlops), "register", str(iris_pickle), "--name", "tracked", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "1"

    runs = httpx.post(
        f"{prefect_api}/flow_runs/filter",
        json={"flow_runs": {"name": {}}, "limit": 50},
        timeout=30,
    ).json()
    flows = {
        f["id"]: f["name"]
        for f in httpx.post(f"{prefect_api}/flows/filter", json={}, timeout=30).json()
    }
    register_runs = [r for r in runs if flows.get(r["flow_id"]) == "register-model"]
    assert len(register_runs) == 1
    assert register_runs[0]["state_type"] == "COMPLETED"
    assert register_runs[0]["parameters"]["name"] == "tracked"
