"""Fixtures of the kubernetes: target tests: the stand-in API server (tests/fakes) pointed to by
a kubeconfig, and iris images (versions 1 and 2, plus one that never answers /ping) built once
per module in a registry that stays available for ledger tests."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.images import build_image
from mlops_pipeline.settings import get_settings

from tests.docker_support import BASE_IMAGE
from tests.fakes.kubernetes_apiserver import StandInApiServer

NAMESPACE = "mlops-test"
# small and reachable from this machine: one pod, a NodePort on 127.0.0.1
OPTIONS = {
    "service_type": "NodePort",
    "node_address": "127.0.0.1",
    "min_replicas": "1",
    "max_replicas": "2",
    "prestop_seconds": "2",
    "cpu_limit": "1",
}


@pytest.fixture(scope="module")
def iris_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k8s-target-home")


@pytest.fixture(scope="module")
def k8s_images(
    docker_engine, session_wheelhouse, iris_home: Path, iris_model_dir
) -> Iterator[dict[str, str]]:
    """Tags of iris versions "1" and "2", and "hang": version 2 whose process never listens."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(iris_home))
        mp.setenv("MLOPS_BASE_IMAGE", BASE_IMAGE)
        mp.setenv("MLOPS_WHEELHOUSE", str(session_wheelhouse))
        for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        run = uuid.uuid4().hex[:8]  # several test runs may share one engine
        images = {}
        for version in ("1", "2"):
            run_flow(register_model, source=str(iris_model_dir), name="iris")
            images[version] = build_image(
                f"models:/iris/{version}", tag=f"mlops-test/iris-k8s-{run}:{version}"
            ).tag
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    get_settings.cache_clear()
    images["hang"] = f"mlops-test/iris-k8s-{run}:hang"
    dockerfile = f'FROM {images["2"]}\nCMD ["python", "-c", "import time; time.sleep(600)"]\n'
    docker_engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=images["hang"], rm=True)
    yield images
    for tag in images.values():
        docker_engine.images.remove(tag, force=True, noprune=True)


@pytest.fixture(scope="module")
def standin(docker_engine) -> Iterator[StandInApiServer]:
    server = StandInApiServer(docker_engine, namespaces=(NAMESPACE,)).start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(standin: StandInApiServer, tmp_path: Path, monkeypatch) -> Path:
    """This test's MLOPS_K8S_KUBECONFIG, whose current context is the stand-in."""
    path = standin.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("MLOPS_K8S_KUBECONFIG", str(path))
    return path
