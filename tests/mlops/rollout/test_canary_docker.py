"""A canary on the docker: target whose challenger's model raises: the proxy container counts its
422 answers as that version's client errors, and the controller rolls all traffic back."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pandas as pd
from mlops_pipeline.images import build_image
from mlops_pipeline.rollout.admin import ProxyAdmin
from mlops_pipeline.rollout.canary import run_canary
from mlops_pipeline.rollout.settings import RolloutPolicy
from mlops_pipeline.targets.base import DeployConfig, ModelRef, get_target

from tests.docker_support import (  # noqa: F401 (fixtures)
    continuous_load,
    docker_build_env,
    docker_engine,
    remove_deployment_objects,
    session_wheelhouse,
)
from tests.mlops.rollout.support import register_behaviour
from tests.targets.local_support import IRIS_ROW, register_version


def test_docker_canary_rolls_back_a_challenger_whose_model_raises(
    docker_engine,  # noqa: F811
    docker_build_env: Path,  # noqa: F811
    iris_model_dir: Path,
    iris_features: pd.DataFrame,
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    v1 = register_version(iris_model_dir)
    v2 = register_behaviour(tmp_path, "faulty", iris_features)  # raises on IRIS_ROW's 2nd row
    images = {
        v: build_image(f"models:/iris/{v}", tag=f"mlops-test/iris-canary-{run}:{v}").tag
        for v in (v1, v2)
    }
    name = f"dk-faulty-{run[:6]}"
    target = get_target("docker:")
    config = DeployConfig(ready_timeout=120, drain_timeout=10)
    try:
        created = target.create(name, ModelRef("iris", v1), config, image=images[v1])
        url = f"{created.endpoint_url}/invocations"
        upstream = target.start_challenger(name, ModelRef("iris", v2), config, image=images[v2])
        admin = ProxyAdmin(target.proxy_access(name))
        with continuous_load(url, IRIS_ROW, max_seconds=120) as load:
            result = run_canary(admin, upstream, v2, [50, 100], 3.0, RolloutPolicy(min_requests=10))
        target.stop_challenger(name)
        after = [httpx.post(url, json=IRIS_ROW, timeout=30) for _ in range(10)]
        serving = httpx.get(f"{created.endpoint_url}/version", timeout=30).json()
        routes = admin.routes()
    finally:
        target.delete(name)
        remove_deployment_objects(docker_engine, name)
        for tag in images.values():
            docker_engine.images.remove(tag, force=True, noprune=True)

    assert result.outcome == "rolled_back", result.reason
    [step] = result.steps  # rolled back at the first step
    x, c = step.comparison.challenger, step.comparison.champion
    # every challenger answer was the 422 of its model's error, counted by the proxy container
    assert x.client_errors == x.requests > 0 and x.errors == 0
    assert c.client_errors == c.errors == 0 and c.requests > 0
    assert result.reason.startswith(f"at 50%: error rate {x.requests}/{x.requests}")
    # what the client saw: failures only while the canary ran, all 422
    assert load.ok > 0 and load.failures
    assert all(re.match(r"HTTP 422: ", f) for f in load.failures), load.failures[:3]
    # all traffic is back on the champion
    assert [r.status_code for r in after] == [200] * 10
    assert serving["model_version"] == v1 and routes.canary is None
