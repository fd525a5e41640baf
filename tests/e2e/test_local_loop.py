"""The whole deploy loop on the local target through the `mlops` CLI, under continuous load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.targets.local_support import IRIS_ROW, LoadClient, register_version, served_version

pytestmark = pytest.mark.e2e


def mlops(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mlops")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_deploy_score_update_rollback_undeploy_under_load(
    undeploy_all: None, registered_model: dict, iris_model_dir: Path, tmp_path: Path
) -> None:
    v2 = register_version(iris_model_dir)
    capture = tmp_path / "capture"

    deployed = json.loads(
        mlops(
            "deploy",
            "models:/iris@champion",
            "--name",
            "iris-prod",
            "--capture-dir",
            str(capture),
            "--json",
        ).stdout
    )
    endpoint = deployed["endpoint_url"]
    assert deployed["model_version"] == "1" and deployed["capture_uri"] == str(capture)
    scored = httpx.post(f"{endpoint}/invocations", json=IRIS_ROW, timeout=30)
    assert scored.status_code == 200 and scored.json() == {"predictions": [0, 2]}

    # bad input: one clear line, non-zero exit, nothing deployed
    taken = mlops(
        "deploy",
        "models:/iris/1",
        "--name",
        "iris-b",
        "--port",
        endpoint.rsplit(":", 1)[1],
        check=False,
    )
    assert taken.returncode == 4 and "already in use" in taken.stderr
    assert len(taken.stderr.strip().splitlines()) == 1
    unknown = mlops("deploy", "models:/iris/42", "--name", "iris-b", check=False)
    assert unknown.returncode == 3 and "no version '42'" in unknown.stderr
    listed = json.loads(mlops("deployments", "list", "--json").stdout)
    assert [d["name"] for d in listed] == ["iris-prod"]

    load = LoadClient(endpoint)
    load.start()
    updated = json.loads(
        mlops("update", "iris-prod", "--model", f"models:/iris/{v2}", "--json").stdout
    )
    assert updated["model_version"] == v2 and served_version(endpoint) == v2
    rolled = json.loads(mlops("rollback", "iris-prod", "--json").stdout)
    load.stop()

    assert rolled["model_version"] == "1" and served_version(endpoint) == "1"
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50

    status = json.loads(mlops("status", "iris-prod", "--json").stdout)
    assert status["health"]["ready"] is True and status["endpoint_url"] == endpoint
    assert status["health"]["version"]["model_version"] == "1"

    refused = mlops("models", "delete", "iris", "--version", "1", check=False)
    assert refused.returncode == 4 and "in use" in refused.stderr and "iris-prod" in refused.stderr

    history = json.loads(mlops("deployments", "history", "iris-prod", "--json").stdout)
    assert [(e["action"], e["result"]) for e in history] == [
        ("create", "succeeded"),
        ("update", "succeeded"),
        ("rollback", "succeeded"),
    ]

    mlops("undeploy", "iris-prod")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{endpoint}/ping", timeout=5)
    assert mlops("status", "iris-prod", check=False).returncode == 3
    held = mlops("models", "delete", "iris", "--version", "1", check=False)
    assert held.returncode == 4 and "holds alias 'champion'" in held.stderr
    deleted = json.loads(
        mlops("models", "delete", "iris", "--version", "1", "--force", "--json").stdout
    )
    assert deleted["deleted_versions"] == ["1"]
    assert list(capture.rglob("*.parquet")), "the scoring service captured nothing"
