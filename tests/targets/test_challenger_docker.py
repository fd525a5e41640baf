"""The docker: target's live challenger against a real engine: a second model container on the
deployment's network, a canary through the proxy container, then a zero-downtime promotion."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from mlops_pipeline.errors import ConflictError
from mlops_pipeline.rollout.admin import ProxyAdmin
from mlops_pipeline.rollout.canary import run_canary
from mlops_pipeline.rollout.settings import RolloutPolicy
from mlops_pipeline.targets.base import DeployConfig, ModelRef, get_target
from mlops_pipeline.targets.docker_objects import CHALLENGER_LABEL

from tests.docker_support import (
    IRIS_PAYLOAD,
    build_iris_images,
    continuous_load,
    remove_deployment_objects,
)


@pytest.fixture(scope="module")
def iris_images(
    docker_engine, session_wheelhouse, tmp_path_factory, iris_model_dir
) -> Iterator[dict[str, str]]:
    """Images of iris versions 1 and 2, built once for this module in a private MLOPS_HOME."""
    home = tmp_path_factory.mktemp("docker-challenger-home")
    yield from build_iris_images(
        docker_engine, session_wheelhouse, home, iris_model_dir, "challenger"
    )


def test_docker_challenger_canary_and_promotion_under_load(docker_engine, iris_images) -> None:
    name = f"dk-canary-{uuid.uuid4().hex[:6]}"
    target = get_target("docker:")
    config = DeployConfig(ready_timeout=120, drain_timeout=10)
    try:
        created = target.create(name, ModelRef("iris", "1"), config, image=iris_images["1"])
        url = f"{created.endpoint_url}/invocations"
        with continuous_load(url, IRIS_PAYLOAD, max_seconds=180) as load:
            upstream = target.start_challenger(
                name, ModelRef("iris", "2"), config, image=iris_images["2"]
            )
            with pytest.raises(ConflictError):  # one challenger at a time
                target.start_challenger(name, ModelRef("iris", "2"), config, image=iris_images["2"])
            admin = ProxyAdmin(target.proxy_access(name))
            assert admin.routes().canary is None  # the readiness probe left no route behind
            health = target.health(name)
            assert health["routes"]["primary"]["upstream"] != upstream
            result = run_canary(
                admin, upstream, "2", [50, 100], 3.0,
                RolloutPolicy(min_requests=10, max_p95_ratio=3.0),
            )  # fmt: skip
            assert result.outcome == "promote", result.reason
            promoted = target.promote_challenger(name)
        assert load.failures == [] and load.ok > 50
        step = result.steps[0].comparison
        assert step.challenger.requests >= 10 and step.challenger.errors == 0
        assert step.champion.requests >= 10 and step.champion.errors == 0
        assert promoted.model_version == "2"
        assert httpx.get(f"{created.endpoint_url}/version").json()["model_version"] == "2"
        models = target.objects.models(name)
        assert [c.labels[CHALLENGER_LABEL] for c in models] == ["true"]  # the old one is gone
        target.stop_challenger(name)  # idempotent: the promoted one is the active one now
        assert len(target.objects.models(name)) == 1
        assert admin.routes().primary["version"] == "2"
    finally:
        target.delete(name)
        remove_deployment_objects(docker_engine, name)
