"""The docker: target against a real engine: create, failed updates, update, conflicts, delete."""

from __future__ import annotations

import io
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlops_pipeline.errors import (
    BackendUnavailableError,
    ConflictError,
    DeploymentError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.targets.base import DeployConfig, DeploymentStatus, ModelRef, get_target
from mlops_pipeline.targets.docker import DockerTarget

from tests.docker_support import (
    IRIS_PAYLOAD,
    build_iris_images,
    remove_deployment_objects,
)

docker_test = pytest.mark.docker
V1, V2 = ModelRef("iris", "1"), ModelRef("iris", "2")


@pytest.fixture(scope="module")
def iris_images(
    docker_engine, session_wheelhouse, tmp_path_factory, iris_model_dir
) -> Iterator[dict[str, str]]:
    """Images of iris versions 1 and 2, built once for this module in a private MLOPS_HOME."""
    home = tmp_path_factory.mktemp("docker-target-home")
    yield from build_iris_images(docker_engine, session_wheelhouse, home, iris_model_dir, "target")


@pytest.fixture
def deployment_name(docker_engine, request) -> Iterator[str]:
    name = f"dk-{request.node.name.split('_')[1]}"
    yield name
    remove_deployment_objects(docker_engine, name)


def test_docker_uri_is_found_by_entry_point_and_takes_no_location():
    assert isinstance(get_target("docker:"), DockerTarget)
    with pytest.raises(InvalidInputError, match="DOCKER_HOST"):
        get_target("docker:/somewhere")


def test_unreachable_engine_is_backend_unavailable(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    with pytest.raises(BackendUnavailableError, match="tcp://127.0.0.1:1"):
        DockerTarget("docker:").list()


@docker_test
def test_create_serves_with_keys_and_capture_then_delete_removes_all(
    docker_engine, iris_images, deployment_name, tmp_path: Path
):
    name = deployment_name
    keys = tmp_path / "keys"
    keys.write_text("primary-key\n")
    keys.chmod(0o600)
    capture = tmp_path / "capture"
    config = DeployConfig(capture_uri=str(capture), api_key_file=str(keys))
    target = DockerTarget("docker:")

    deployment = target.create(name, V1, config, image=iris_images["1"])

    assert deployment.status == DeploymentStatus.READY
    assert deployment.endpoint_url.startswith("http://127.0.0.1:")
    assert (deployment.model_version, deployment.image) == ("1", iris_images["1"])
    assert (
        httpx.post(f"{deployment.endpoint_url}/invocations", json=IRIS_PAYLOAD).status_code == 401
    )
    headers = {"Authorization": "Bearer primary-key"}
    assert target.predict(name, IRIS_PAYLOAD, headers=headers) == {"predictions": [0]}
    # every object is labelled, so a new client reads the state back from Docker alone
    containers = docker_engine.containers.list(filters={"label": f"mlops.deployment={name}"})
    roles = sorted(c.labels["mlops.role"] for c in containers)
    assert roles == ["model", "proxy"]
    model = next(c for c in containers if c.labels["mlops.role"] == "model")
    assert model.attrs["Config"]["User"] == "10001:10001"
    assert "primary-key" not in str(model.attrs)  # the key file is copied in, not in the env
    model_env = dict(item.split("=", 1) for item in model.attrs["Config"]["Env"])
    assert model_env["MLOPS_SERVING_CAPTURE_URI"] == "/var/lib/mlops/capture"
    assert model_env["MLOPS_SERVING_API_KEY_FILE"] == "/run/mlops/api-keys"
    assert model_env["MLOPS_SERVING_MODEL_VERSION"] == "1"
    proxy = next(c for c in containers if c.labels["mlops.role"] == "proxy")
    proxy_env = dict(item.split("=", 1) for item in proxy.attrs["Config"]["Env"])
    assert proxy_env["MLOPS_SERVING_PROXY_UPSTREAM"] == f"http://{model.name}:8080"
    # the proxy's health is its liveness; whether the model can score is the model's own check
    assert "/health/live" in " ".join(proxy.attrs["Config"]["Healthcheck"]["Test"])
    assert "/ping" in " ".join(model.attrs["Config"]["Healthcheck"]["Test"])
    live = httpx.get(f"{deployment.endpoint_url}/health/live")  # no key: the proxy answers
    assert (live.status_code, live.text) == (200, "ok")
    recovered = DockerTarget("docker:").get(name)
    assert (recovered.model_version, recovered.endpoint_url) == ("1", deployment.endpoint_url)
    assert recovered.config["capture_uri"] == str(capture)
    assert name in [d.name for d in target.list()]
    assert "ready" in target.logs(name)
    with pytest.raises(ConflictError, match=f"'{name}' already exists"):
        target.create(name, V2, config, image=iris_images["2"])

    target.delete(name)
    target.delete(name)

    assert (
        docker_engine.containers.list(all=True, filters={"label": f"mlops.deployment={name}"}) == []
    )
    assert docker_engine.networks.list(filters={"label": f"mlops.deployment={name}"}) == []
    with pytest.raises(NotFoundError):
        target.get(name)
    # the graceful stop flushed the capture into the bind-mounted host dir
    captured = pd.read_parquet(next(capture.rglob("*.parquet")))
    assert set(captured["_model_version"]) == {"1"}
    assert captured.loc[captured["_status"] == 200, "prediction"].tolist() == [0]
    assert captured["_status"].tolist().count(401) == 1  # the request without a key


@docker_test
def test_failed_updates_keep_the_old_version_serving(docker_engine, iris_images, deployment_name):
    name = deployment_name
    target = DockerTarget("docker:")
    deployment = target.create(name, V1, DeployConfig(), image=iris_images["1"])
    run = uuid.uuid4().hex[:8]
    crash, hang = f"mlops-test/crash-{run}:1", f"mlops-test/hang-{run}:1"
    for tag, cmd in ((crash, "raise SystemExit(3)"), (hang, "import time; time.sleep(600)")):
        dockerfile = f'FROM {iris_images["2"]}\nCMD ["python", "-c", "{cmd}"]\n'
        docker_engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)

    with pytest.raises(DeploymentError, match="exited with code 3"):
        target.update(name, V2, DeployConfig(), image=crash)
    with pytest.raises(DeploymentError, match="did not answer /ready within 8 s"):
        target.update(name, V2, DeployConfig(ready_timeout=8), image=hang)

    assert target.predict(name, IRIS_PAYLOAD) == {"predictions": [0]}
    assert target.get(name).model_version == "1"
    models = docker_engine.containers.list(
        all=True, filters={"label": [f"mlops.deployment={name}", "mlops.role=model"]}
    )
    assert [c.labels["mlops.model.version"] for c in models] == ["1"]

    updated = target.update(name, V2, DeployConfig(), image=iris_images["2"])

    assert (updated.model_version, updated.endpoint_url) == ("2", deployment.endpoint_url)
    assert httpx.get(f"{deployment.endpoint_url}/version").json()["model_version"] == "2"
    target.delete(name)
    for tag in (crash, hang):
        docker_engine.images.remove(tag, force=True, noprune=True)


@docker_test
def test_port_in_use_is_a_conflict_naming_the_port(docker_engine, iris_images, deployment_name):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConflictError, match=f"Port {port} on 127.0.0.1 is already in use"):
            DockerTarget("docker:").create(
                deployment_name, V1, DeployConfig(port=port), image=iris_images["1"]
            )
    assert (
        docker_engine.containers.list(
            all=True, filters={"label": f"mlops.deployment={deployment_name}"}
        )
        == []
    )
