"""Fixtures of the target tests: a real Prefect server per test module (the batch: target's),
and the kubernetes: tests' stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import prefect_server

# the kubernetes: tests' fixtures (stand-in API server, kubeconfig, iris images); a test module
# that defines its own fixture of the same name (the IoT Hub stand-in) overrides it
from tests.targets.kubernetes_support import (  # noqa: F401
    iris_home,
    k8s_images,
    kubeconfig,
    standin,
)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as api:
        yield api


@pytest.fixture
def api(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's Prefect server as this test's PREFECT_API_URL."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.delenv("PREFECT_API_KEY", raising=False)
    return prefect_api
