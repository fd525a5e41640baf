"""The canary flow on a kubernetes: deployment, end to end: the real `kubernetes` client against
the stand-in API server (tests/fakes/kubernetes_apiserver.py) whose pods are real containers of
the images the flows build. The controller drives every pod's proxy sidecar through the API
server, exactly as it drives the one proxy of a local or Docker deployment."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlops_pipeline import ledger
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy
from mlops_pipeline.flows.rollout import canary
from mlops_pipeline.inuse import deployments_using
from mlops_pipeline.registry.versions import get_model_version
from mlops_pipeline.targets.kubernetes import KubernetesTarget
from mlops_pipeline.tracking import connect

from tests.docker_support import docker_build_env  # noqa: F401 (fixture)
from tests.targets import kubernetes_support
from tests.targets.kubernetes_support import NAMESPACE, OPTIONS, challenger_objects
from tests.targets.local_support import LoadClient, register_version, served_version

pytestmark = pytest.mark.docker
standin = kubernetes_support.standin
kubeconfig = kubernetes_support.kubeconfig
URI = f"kubernetes:/{NAMESPACE}"


def test_canary_flow_on_kubernetes_promotes_under_load_with_no_failed_request(
    kubeconfig,
    standin,
    docker_build_env: Path,  # noqa: F811
    registered_model: dict,
    iris_model_dir: Path,
    fast_rollout: None,
) -> None:
    name = "k8s-flow-canary"
    v2 = register_version(iris_model_dir)
    try:
        created = run_flow(
            deploy, model_uri="models:/iris@champion", name=name, target=URI,
            options={**OPTIONS, "min_replicas": "2"}, ready_timeout=120.0,
        )  # fmt: skip
        endpoint = created["endpoint_url"]
        load = LoadClient(endpoint, max_requests=20_000, max_seconds=300)
        load.start()
        try:
            result = run_flow(
                canary, name=name, model_uri=f"models:/iris/{v2}", steps="50,100",
                interval=3.0, max_p95_ratio=50.0,  # the same model: p95 differs by noise only
            )  # fmt: skip
        finally:
            load.stop()
        after = served_version(endpoint)
        left = challenger_objects(standin, name)
    finally:
        KubernetesTarget(URI).delete(name)

    assert result["decision"] == "promoted", result["reason"]
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    assert [s["comparison"]["verdict"] for s in result["steps"]] == ["healthy"] * 2
    first = result["steps"][0]["comparison"]
    assert first["challenger"]["requests"] >= 20 and first["champion"]["requests"] >= 20
    # the deployment serves v2: pods, ledger, history, in-use tags, aliases
    assert after == v2
    assert ledger.get_deployment(name).model_version == v2
    event = ledger.history(name)[-1]
    assert (event.action, event.result, event.to_version) == ("update", "succeeded", v2)
    client = connect()
    assert name in deployments_using(client, "iris", v2)
    assert name not in deployments_using(client, "iris", "1")
    assert get_model_version("iris", alias="champion").version == v2
    assert left == []
