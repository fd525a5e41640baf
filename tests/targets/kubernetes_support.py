"""Fixtures of the kubernetes: target tests: the stand-in API server (tests/fakes) pointed to by
a kubeconfig, and iris images (versions 1 and 2, plus one that never answers /ping) built once
per module in a registry that stays available for ledger tests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlops_pipeline.targets import kubernetes
from mlops_pipeline.targets.base import ModelRef

from tests.docker_support import build_iris_images
from tests.fakes.kubernetes_apiserver import StandInApiServer

NAMESPACE = "mlops-test"
URI = f"kubernetes:/{NAMESPACE}"
V1, V2 = ModelRef("iris", "1"), ModelRef("iris", "2")
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
    for images in build_iris_images(
        docker_engine, session_wheelhouse, iris_home, iris_model_dir, "k8s"
    ):
        hang = images["2"].rsplit(":", 1)[0] + ":hang"
        dockerfile = f'FROM {images["2"]}\nCMD ["python", "-c", "import time; time.sleep(600)"]\n'
        docker_engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=hang, rm=True)
        try:
            yield {**images, "hang": hang}
        finally:
            docker_engine.images.remove(hang, force=True, noprune=True)


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


def challenger_objects(standin: StandInApiServer, name: str) -> list[dict]:
    """What is left of NAME's challenger: its Deployment, Service, HPA, PDB and the routes
    ConfigMap (the target's own list of them)."""
    return [
        found
        for kind, object_name in kubernetes.challenger_objects(name)
        if (found := standin.get(kind, NAMESPACE, object_name)) is not None
    ]
