"""The whole deploy loop on the docker: target through the CLI, with a client scoring throughout."""

from __future__ import annotations

import json

import httpx
import pytest
from mlops_pipeline.cli import app
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from typer.testing import CliRunner

from tests.docker_support import IRIS_PAYLOAD, continuous_load, remove_deployment_objects

NAME = "iris-docker-e2e"


def mlops(*args: str, expect: int = 0) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == expect, result.output
    return json.loads(result.stdout)


@pytest.fixture
def cleanup(docker_engine):
    yield
    # the images keep their default tags (mlops/iris:1, :2), which every flow-built iris image
    # of this session shares: removing them here once took the image from under a kubernetes
    # canary promoting on another worker ("No such image: mlops/iris:2"), so they stay
    remove_deployment_objects(docker_engine, NAME)


@pytest.mark.e2e
@pytest.mark.docker
def test_build_deploy_update_rollback_undeploy_without_failed_requests(
    docker_build_env, registered_model, iris_model_dir, tmp_path, cleanup
):
    run_flow(register_model, source=str(iris_model_dir), name="iris")
    capture = tmp_path / "capture"

    deployed = mlops(
        "deploy", "models:/iris@champion", "--target", "docker:", "--name", NAME,
        "--capture-dir", str(capture),
    )  # fmt: skip

    endpoint = deployed["endpoint_url"]
    assert (deployed["model_version"], deployed["image"]) == ("1", "mlops/iris:1")
    scored = httpx.post(f"{endpoint}/invocations", json=IRIS_PAYLOAD)
    assert scored.status_code == 200 and scored.json() == {"predictions": [0]}

    with continuous_load(f"{endpoint}/invocations", IRIS_PAYLOAD) as during_update:
        updated = mlops("update", NAME, "--model", "models:/iris/2")
    assert (updated["model_version"], updated["endpoint_url"]) == ("2", endpoint)
    assert during_update.failures == [] and during_update.ok > 0
    assert httpx.get(f"{endpoint}/version").json()["model_version"] == "2"

    with continuous_load(f"{endpoint}/invocations", IRIS_PAYLOAD) as during_rollback:
        rolled_back = mlops("rollback", NAME)
    assert (rolled_back["model_version"], rolled_back["image"]) == ("1", "mlops/iris:1")
    assert during_rollback.failures == [] and during_rollback.ok > 0
    assert httpx.get(f"{endpoint}/version").json()["model_version"] == "1"

    status = mlops("status", NAME)
    assert status["health"]["ready"] is True
    refused = mlops("models", "delete", "iris", "--version", "1", expect=4)
    assert refused["error"]["code"] == "in_use" and NAME in refused["error"]["message"]

    mlops("undeploy", NAME)

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{endpoint}/ping")
    held = mlops("models", "delete", "iris", "--version", "1", expect=4)
    assert "holds alias 'champion'" in held["error"]["message"]
    deleted = mlops("models", "delete", "iris", "--version", "1", "--force")
    assert deleted["deleted_versions"] == ["1"]
    history = mlops("deployments", "history", NAME)
    assert [(e["action"], e["to_version"]) for e in history] == [
        ("create", "1"),
        ("update", "2"),
        ("rollback", "1"),
        ("delete", None),
    ]
