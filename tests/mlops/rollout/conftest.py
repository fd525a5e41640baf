"""Fixtures of the rollout tests: a captured local deployment of iris v1 under fast settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy


@pytest.fixture
def fast_rollout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge after 20 requests per route; capture files flushed every 0.5 s."""
    monkeypatch.setenv("MLOPS_ROLLOUT_MIN_REQUESTS", "20")
    monkeypatch.setenv("MLOPS_ROLLOUT_CAPTURE_SETTLE_SECONDS", "1.5")
    monkeypatch.setenv("MLOPS_SERVING_CAPTURE_FLUSH_SECONDS", "0.5")


@pytest.fixture
def iris_prod(
    registered_model: dict, mlops_home: Path, fast_rollout: None, undeploy_all: None
) -> Iterator[dict]:
    """`iris-prod` on local: serving iris v1, capturing to $MLOPS_HOME/captures/iris-prod."""
    capture = mlops_home / "captures" / "iris-prod"
    yield run_flow(
        deploy,
        model_uri="models:/iris/1",
        name="iris-prod",
        target="local:",
        capture_uri=str(capture),
        ready_timeout=90.0,
    )
