"""Fixtures for tests that need a real Docker engine (import them into the test module).

Without an engine the tests skip, naming the reason; with MLOPS_REQUIRE_DOCKER=1 (CI) they fail
instead. The base image is the local Debian bookworm image that .ci/docker.sh builds with
debootstrap, and the wheelhouse lives for the whole session, so only the first build of a
session installs dependencies.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from mlops_pipeline.errors import BackendUnavailableError
from mlops_pipeline.settings import get_settings

BASE_IMAGE = os.environ.get("MLOPS_TEST_BASE_IMAGE", "mlops-test/bookworm-python:latest")
PROVISION = Path(__file__).resolve().parents[1] / ".ci" / "docker.sh"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_PAYLOAD = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [IRIS_ROW],
    }
}


def docker_required() -> bool:
    """MLOPS_REQUIRE_DOCKER=1 (CI): a missing engine fails the tests instead of skipping them."""
    return os.environ.get("MLOPS_REQUIRE_DOCKER", "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(reason: str) -> None:
    if docker_required():
        pytest.fail(f"{reason} (MLOPS_REQUIRE_DOCKER=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine():
    """A client for a reachable engine that holds the test base image."""
    import docker  # before its submodules: see tests/mlops/test_docker_imports.py
    import docker.errors
    from mlops_pipeline.targets.docker import docker_client

    try:
        client = docker_client()
    except BackendUnavailableError as exc:
        _unavailable(f"{exc.message} Run `sudo bash .ci/docker.sh` to install and start one.")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        if os.geteuid() != 0:
            _unavailable(f"Base image {BASE_IMAGE} is missing; run `sudo bash {PROVISION}`.")
        # builds it with debootstrap (about a minute, once per machine)
        subprocess.run(["bash", str(PROVISION)], check=True)
    return client


@pytest.fixture(scope="session")
def session_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheelhouse")


@pytest.fixture
def docker_build_env(
    docker_engine, session_wheelhouse: Path, mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A fresh MLOPS_HOME whose image builds use the local base image and shared wheelhouse."""
    monkeypatch.setenv("MLOPS_BASE_IMAGE", BASE_IMAGE)
    monkeypatch.setenv("MLOPS_WHEELHOUSE", str(session_wheelhouse))
    get_settings.cache_clear()
    yield mlops_home
    get_settings.cache_clear()


def build_iris_images(
    engine, wheelhouse: Path, home: Path, model_dir: Path, label: str
) -> Iterator[dict[str, str]]:
    """Images of iris versions 1 and 2 (`mlops-test/iris-LABEL-<run>:N`), registered and built
    in the private MLOPS_HOME HOME; removed afterwards. A generator for module fixtures to
    `yield from`."""
    import uuid

    import mlflow
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from mlops_pipeline.images import build_image

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLOPS_BASE_IMAGE", BASE_IMAGE)
        mp.setenv("MLOPS_WHEELHOUSE", str(wheelhouse))
        for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        images = {}
        run = uuid.uuid4().hex[:8]  # unique per run: several test runs may share one engine
        for version in ("1", "2"):
            run_flow(register_model, source=str(model_dir), name="iris")
            images[version] = build_image(
                f"models:/iris/{version}", tag=f"mlops-test/iris-{label}-{run}:{version}"
            ).tag
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    get_settings.cache_clear()
    yield images
    for tag in images.values():
        engine.images.remove(tag, force=True, noprune=True)


def remove_deployment_objects(client, name: str) -> None:
    """Force-remove whatever a failed test left of deployment `name`."""
    for container in client.containers.list(
        all=True, filters={"label": f"mlops.deployment={name}"}
    ):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": f"mlops.deployment={name}"}):
        network.remove()


@dataclass
class LoadStats:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


@contextmanager
def continuous_load(
    url: str, payload: dict, *, max_requests: int = 5000, max_seconds: float = 180.0
) -> Iterator[LoadStats]:
    """Score `payload` at `url` back to back from one client thread until the block ends
    (bounded in count and time); every non-200 answer or transport error is a failure."""
    stats = LoadStats()
    stop = threading.Event()

    def send() -> None:
        deadline = time.monotonic() + max_seconds
        with httpx.Client(timeout=30.0) as client:
            for _ in range(max_requests):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                try:
                    response = client.post(url, json=payload)
                except httpx.HTTPError as exc:
                    stats.failures.append(repr(exc))
                    time.sleep(0.01)  # a refused connection returns at once; don't spin
                    continue
                stats.latencies.append(time.perf_counter() - started)
                if response.status_code == 200:
                    stats.ok += 1
                else:
                    stats.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")

    thread = threading.Thread(target=send, name="continuous-load", daemon=True)
    thread.start()
    try:
        yield stats
        time.sleep(0.5)  # keep requests flowing through the moment the switch completes
    finally:
        stop.set()
        thread.join(timeout=60)
