"""The device side of the iotedge: target, without an edge runtime: the manifest the SDK applied
at the stand-in hub is run as edgeAgent would run its module: on the local Docker engine, with the
manifest's createOptions, from the image `build-image` made; it scores and captures. The module
reads its settings from the env in createOptions (the same values as its twin's desired
properties), because no edgeAgent passes it a twin here."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.images import build_image
from mlops_pipeline.serving.contract import free_port
from mlops_pipeline.settings import get_settings
from mlops_pipeline.targets.base import DeployConfig, ModelRef, get_target

from tests.docker_support import BASE_IMAGE, IRIS_PAYLOAD
from tests.fakes.iothub import IoTHubStandIn
from tests.targets.iotedge_support import applied_content, create_options, serve_standin

V1 = ModelRef("iris", "1")


@pytest.fixture(scope="module")
def iris_image(
    docker_engine, session_wheelhouse, tmp_path_factory, iris_model_dir
) -> Iterator[str]:
    """The image `build-image` makes of iris version 1, in a private MLOPS_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(tmp_path_factory.mktemp("iotedge-device-home")))
        mp.setenv("MLOPS_BASE_IMAGE", BASE_IMAGE)
        mp.setenv("MLOPS_WHEELHOUSE", str(session_wheelhouse))
        for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        run_flow(register_model, source=str(iris_model_dir), name="iris")
        # unique per run: several test runs may share one Docker engine
        tag = build_image(
            "models:/iris/1", tag=f"mlops-test/iris-edge-{uuid.uuid4().hex[:8]}:1"
        ).tag
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    get_settings.cache_clear()
    yield tag
    docker_engine.images.remove(tag, force=True, noprune=True)


@pytest.fixture
def standin(tmp_path_factory, monkeypatch) -> Iterator[IoTHubStandIn]:
    yield from serve_standin(tmp_path_factory, monkeypatch)


def run_args(options: dict[str, Any]) -> dict[str, Any]:
    """Docker SDK `containers.run` arguments for Docker create options, as edgeAgent passes
    them to the engine: env, exposed port bindings, binds, labels."""
    host = options.get("HostConfig", {})
    ports = {
        container_port: [(b.get("HostIp", ""), int(b["HostPort"])) for b in bindings]
        for container_port, bindings in host.get("PortBindings", {}).items()
    }
    volumes = {}
    for bind in host.get("Binds", []):
        source, target, *mode = bind.split(":")
        volumes[source] = {"bind": target, "mode": mode[0] if mode else "rw"}
    return {
        "environment": options.get("Env", []),
        "ports": {k: v[0] if len(v) == 1 else v for k, v in ports.items()},
        "volumes": volumes,
        "labels": options.get("Labels", {}),
    }


@pytest.mark.docker
def test_module_container_from_the_applied_manifest_scores_and_captures(
    docker_engine, iris_image, standin: IoTHubStandIn, tmp_path: Path
):
    capture = tmp_path / "device-capture"
    capture.mkdir()
    if os.geteuid() == 0:  # the image runs as its own non-root user; let it write captures
        os.chown(capture, 10001, 10001)
    else:
        capture.chmod(0o777)
    port = free_port()
    config = DeployConfig(
        port=port, capture_uri="/var/captures", options={"capture_dir": str(capture)}
    )
    standin.add_device("edge-01")
    get_target("iotedge:/localhost/edge-01").create("iris-edge", V1, config, image=iris_image)
    # what the hub received through the SDK is what edgeAgent would run
    content = applied_content(standin, "edge-01")
    module = content["$edgeAgent"]["properties.desired"]["modules"]["iris-edge"]
    desired = content["iris-edge"]["properties.desired"]
    options = create_options(module)
    args = run_args(options)
    assert args["ports"] == {"8080/tcp": ("127.0.0.1", port)}  # only 127.0.0.1

    container = docker_engine.containers.run(
        module["settings"]["image"], detach=True, name=f"iotedge-{uuid.uuid4().hex[:8]}", **args
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            container.reload()
            assert container.status != "exited", container.logs(tail=30).decode()
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the module never answered /ready: " + container.logs(tail=30).decode())

        scored = httpx.post(f"{url}/invocations", json=IRIS_PAYLOAD, timeout=30)
        version = httpx.get(f"{url}/version", timeout=5).json()

        assert (scored.status_code, scored.json()) == (200, {"predictions": [0]})
        # what the module serves is what its twin's desired properties say
        assert (version["model_name"], version["model_version"]) == (
            desired["model"]["name"],
            desired["model"]["version"],
        )
        assert container.labels["mlops.deployment"] == "iris-edge"
    finally:
        container.stop(timeout=10)  # SIGTERM: the service flushes its capture
        logs = container.logs(tail=30).decode(errors="replace")
        container.remove(force=True)
    captured = pd.read_parquet(next(capture.rglob("*.parquet")))
    assert captured["prediction"].tolist() == [0], logs
    assert set(captured["_model_version"]) == {"1"}
