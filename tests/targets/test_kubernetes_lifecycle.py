"""The kubernetes: live challenger's edges: what start_challenger refuses before it applies
anything, stop_challenger's idempotence and wait, a promotion whose cleanup fails, and pods
that still get requests while they terminate. Real `kubernetes` client against the stand-in API
server (tests/fakes/kubernetes_apiserver.py), whose terminating pods stay among the Service's
endpoints while their preStop runs and whose deleted Services' names stop resolving at once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from mlops_pipeline import inuse, ledger
from mlops_pipeline.errors import ConflictError, InvalidInputError
from mlops_pipeline.settings import get_settings
from mlops_pipeline.targets import operations
from mlops_pipeline.targets.base import DeployConfig
from mlops_pipeline.targets.kubernetes import MAX_CHALLENGER_NAME, KubernetesTarget
from mlops_pipeline.targets.kubernetes_manifests import (
    PROXY_CONTAINER,
    manifests,
    routes_manifest,
    settings_for,
)
from mlops_pipeline.tracking import connect

from tests.targets.kubernetes_support import NAMESPACE, OPTIONS, URI, V1, V2, challenger_objects
from tests.targets.local_support import IRIS_ROW, LoadClient, scored_version


def config(**options: str) -> DeployConfig:
    return DeployConfig(ready_timeout=120, drain_timeout=10, options={**OPTIONS, **options})


def writes(standin, since: int) -> list[tuple[str, str]]:
    """The API requests after the first `since` that change something (not GET)."""
    return [(m, p) for m, p, _ in standin.requests[since:] if m != "GET"]


def podless_champion(target: KubernetesTarget, name: str, image: str, *, proxy: bool) -> None:
    """NAME's Deployment at 0 replicas (no pods to wait for); with `proxy`, as this branch
    makes it (proxy sidecar and admin-token Secret), else as before the live challenger."""
    docs = manifests(
        name, NAMESPACE, V1, config(), image, settings_for(config()),
        proxy_token="token-of-the-test" if proxy else None,
    )  # fmt: skip
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 0
            pod = doc["spec"]["template"]["spec"]
            pod["containers"] = [
                c for c in pod["containers"] if proxy or c["name"] != PROXY_CONTAINER
            ]
        if doc["kind"] in ("Secret", "Deployment"):
            target.api.apply(doc)


def test_a_name_too_long_for_a_challenger_is_refused_before_any_cluster_call(monkeypatch):
    monkeypatch.setenv("MLOPS_K8S_KUBECONFIG", "/nonexistent/kubeconfig")
    target = KubernetesTarget(URI)
    name = "n" * (MAX_CHALLENGER_NAME + 1)
    with pytest.raises(InvalidInputError) as caught:
        target.start_challenger(name, V2, config(), image="mlops/iris:2")
    error = caught.value
    assert MAX_CHALLENGER_NAME == 52
    assert (error.details["field"], error.details["value"]) == ("name", name)
    assert "53 characters" in error.message and "at most 52" in error.message
    assert "\n" not in error.message
    assert target.api._client is None  # no discovery, nothing applied


@pytest.mark.docker
def test_start_refuses_a_champion_without_proxy_and_stop_only_reads(
    kubeconfig, standin, k8s_images
):
    target = KubernetesTarget(URI)
    old = f"k8s-old-{uuid.uuid4().hex[:4]}"
    try:
        # created before live challengers: no proxy sidecar, no token Secret
        podless_champion(target, old, k8s_images["1"], proxy=False)
        since = len(standin.requests)
        with pytest.raises(ConflictError) as caught:
            target.start_challenger(old, V2, config(), image=k8s_images["2"])
        refused = writes(standin, since)
        since = len(standin.requests)
        target.stop_challenger(old)  # nothing to stop: reads only
        stopped = writes(standin, since)
    finally:
        target.delete(old)

    assert "proxy sidecar" in caught.value.message and "\n" not in caught.value.message
    assert f"mlops update {old} --model models:/iris/VERSION" in caught.value.hint
    assert refused == []  # nothing applied, nothing deleted
    assert stopped == []


@pytest.mark.docker
def test_start_refuses_a_pinned_image_before_applying(kubeconfig, standin, k8s_images):
    target = KubernetesTarget(URI)
    pinned = f"k8s-pin-{uuid.uuid4().hex[:4]}"
    try:
        podless_champion(target, pinned, k8s_images["1"], proxy=True)
        since = len(standin.requests)
        # --option image=REF: every version would run that one image
        with pytest.raises(InvalidInputError) as caught:
            target.start_challenger(
                pinned, V2, config(image=k8s_images["1"]), image=k8s_images["2"]
            )
        refused = writes(standin, since)
    finally:
        target.delete(pinned)

    error = caught.value
    assert (error.details["field"], error.details["value"]) == ("image", k8s_images["1"])
    assert "registry=" in error.hint and f"mlops update {pinned} --model" in error.hint
    assert "\n" not in error.message
    assert refused == []


@pytest.mark.docker
def test_start_deletes_routes_a_crashed_controller_left(kubeconfig, standin, k8s_images):
    """A NAME-routes ConfigMap without a challenger (its controller crashed) would make new pods
    start with its routes to the new challenger before any step: it is deleted first."""
    target = KubernetesTarget(URI)
    name = f"k8s-stale-{uuid.uuid4().hex[:4]}"
    stale = {
        "canary": {"upstream": f"http://{name}-challenger:8081", "percent": 50, "version": "9"}
    }
    try:
        podless_champion(target, name, k8s_images["1"], proxy=True)
        target.api.apply(routes_manifest(name, NAMESPACE, stale))
        target.start_challenger(name, V2, config(), image=k8s_images["2"])
        routes = standin.get("ConfigMap", NAMESPACE, f"{name}-routes")
        target.stop_challenger(name)
        left = standin.get("Deployment", NAMESPACE, f"{name}-challenger")
    finally:
        target.delete(name)

    assert routes is None
    assert left is None


@pytest.mark.docker
def test_stop_with_a_terminating_pod_fails_no_request_and_waits_for_the_challenger(
    kubeconfig, standin, k8s_images
):
    """A champion pod in its preStop still gets requests (endpoints lag) and still holds the
    canary route: stop clears it too and deletes the challenger's Service only once that pod
    is gone, then returns once the challenger's pods are gone (their captures flushed)."""
    target = KubernetesTarget(URI)
    name = f"k8s-stop-{uuid.uuid4().hex[:4]}"
    two = config(min_replicas="2", max_replicas="2", prestop_seconds="5")
    try:
        created = target.create(name, V1, two, image=k8s_images["1"])
        upstream = target.start_challenger(name, V2, two, image=k8s_images["2"])
        admin = target.proxy_admin(name)
        admin.set_routes(canary={"upstream": upstream, "percent": 50, "version": "2"})
        load = LoadClient(created.endpoint_url, max_requests=20_000, max_seconds=120)
        load.start()
        time.sleep(1)
        leaving = admin.pods()[0]
        target.api.delete("Pod", leaving)  # e.g. an HPA scale-down during the canary
        target.stop_challenger(name)
        challenger_pods = target.api.list("Pod", f"mlops.deployment={name}-challenger")
        time.sleep(6)  # past the terminating pod's preStop
        load.stop()
        left = challenger_objects(standin, name)
        target.stop_challenger(name)  # idempotent
        versions = {
            httpx.post(f"{created.endpoint_url}/invocations", json=IRIS_ROW, timeout=30).headers[
                "x-model-version"
            ]
            for _ in range(10)
        }
    finally:
        target.delete(name)

    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    assert challenger_pods == []  # stop returned after they were gone
    assert left == []
    assert versions == {"1"}


@pytest.mark.docker
def test_a_promotion_whose_route_clearing_fails_is_still_a_promotion(
    kubeconfig, standin, k8s_images, iris_home: Path, monkeypatch
):
    """Once the roll succeeded, the cluster serves v2: a failing clear is retried and logged,
    the ledger records the update as succeeded, v2 keeps its in-use tag, and the challenger
    (which pods may still route to: the same version) is left running until stopped."""
    monkeypatch.setenv("MLOPS_HOME", str(iris_home))  # the registry holding iris 1 and 2
    get_settings.cache_clear()
    name = f"k8s-clear-{uuid.uuid4().hex[:4]}"
    try:
        created = operations.create_deployment(name, V1, URI, config(), image=k8s_images["1"])
        url = created.endpoint_url
        operations.start_challenger(name, V2, image=k8s_images["2"])
        load = LoadClient(url, max_requests=20_000, max_seconds=240)
        load.start()
        # every attempt to clear the routes fails at the ConfigMap (the first write)
        for _ in range(3):
            standin.fail_next("DELETE", rf"/configmaps/{name}-routes$", 500)
        promoted = operations.promote_challenger(name, V2, image=k8s_images["2"])
        kept = standin.get("Deployment", NAMESPACE, f"{name}-challenger")
        # a scoring call: an old pod still terminating answers GET /version with v1 itself
        serving = scored_version(url)
        operations.stop_challenger(name, V2)  # what the flow's cleanup would do
        time.sleep(1)
        load.stop()
        client = connect()
        record = ledger.get_deployment(name)
        event = ledger.history(name)[-1]
        using_2 = inuse.deployments_using(client, "iris", "2")
        gone = standin.get("Deployment", NAMESPACE, f"{name}-challenger")
    finally:
        KubernetesTarget(URI).delete(name)
        get_settings.cache_clear()

    assert promoted.model_version == "2" and serving == "2"
    assert kept is not None  # its routes could not be removed, so it kept serving them
    assert record.model_version == "2"
    assert (event.action, event.result, event.to_version) == ("update", "succeeded", "2")
    assert using_2 == {name: URI}
    assert gone is None
    assert load.failures == [], load.failures[:5]
    assert load.ok > 20
