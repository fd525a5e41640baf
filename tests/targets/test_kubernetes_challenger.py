"""The kubernetes: target's live challenger, through the real `kubernetes` client against the
stand-in API server (tests/fakes/kubernetes_apiserver.py), whose pods are real containers: each
champion pod's proxy sidecar splits or mirrors traffic to the `NAME-challenger` Service, the
controller reaches every pod's proxy through the API server's pod proxy subresource, and pods
started later read the routes from the `NAME-routes` ConfigMap."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlops_pipeline.errors import BackendError, ConflictError, DeploymentError
from mlops_pipeline.images import build_image
from mlops_pipeline.rollout.canary import run_canary
from mlops_pipeline.rollout.settings import RolloutPolicy
from mlops_pipeline.targets.base import DeployConfig, ModelRef
from mlops_pipeline.targets.kubernetes import KubernetesTarget
from mlops_pipeline.targets.kubernetes_routes import PodsProxyAdmin

from tests.docker_support import docker_build_env  # noqa: F401 (fixture)
from tests.mlops.rollout.support import register_behaviour
from tests.targets.kubernetes_support import NAMESPACE, OPTIONS, URI, V1, V2, challenger_objects
from tests.targets.local_support import IRIS_ROW, LoadClient, register_version, served_version

pytestmark = pytest.mark.docker


def config(**options: str) -> DeployConfig:
    return DeployConfig(ready_timeout=120, drain_timeout=10, options={**OPTIONS, **options})


@pytest.fixture
def target(kubeconfig: Path) -> KubernetesTarget:
    return KubernetesTarget(URI)


def pod_routes(admin: PodsProxyAdmin) -> dict[str, dict]:
    """Each live champion pod's routes as its own proxy reports them."""
    return {pod: admin.pod(pod).routes().model_dump() for pod in admin.pods()}


def test_canary_on_two_pods_promotes_under_load_with_no_failed_request(target, standin, k8s_images):
    name = f"k8s-canary-{uuid.uuid4().hex[:4]}"
    two = config(min_replicas="2", max_replicas="3")
    try:
        created = target.create(name, V1, two, image=k8s_images["1"])
        load = LoadClient(created.endpoint_url, max_requests=20_000, max_seconds=300)
        load.start()
        upstream = target.start_challenger(name, V2, two, image=k8s_images["2"])
        assert upstream == f"http://{name}-challenger:8081"  # the Service's DNS name
        with pytest.raises(ConflictError, match="already runs challenger"):
            target.start_challenger(name, V2, two, image=k8s_images["2"])
        admin = target.proxy_admin(name)
        assert isinstance(admin, PodsProxyAdmin) and len(admin.pods()) == 2
        assert admin.routes().canary is None  # the readiness probe left no route behind
        assert standin.get("ConfigMap", NAMESPACE, f"{name}-routes") is None

        result = run_canary(
            admin, upstream, "2", [50, 100], 3.0,
            RolloutPolicy(min_requests=10, max_p95_ratio=50.0),  # p95 noise on 2 shared cores
        )  # fmt: skip
        assert result.outcome == "promote", result.reason
        # at the last step every pod, and the ConfigMap, send everything to the challenger
        at_100 = pod_routes(admin)
        stored = json.loads(standin.get("ConfigMap", NAMESPACE, f"{name}-routes")["data"]["routes"])
        assert target.health(name)["routes"]["canary"]["percent"] == 100.0

        promoted = target.promote_challenger(name)
        time.sleep(1)
        load.stop()
        after = served_version(created.endpoint_url)
        final = pod_routes(target.proxy_admin(name))
        left = challenger_objects(standin, name)
        target.stop_challenger(name)  # idempotent: nothing to stop
    finally:
        target.delete(name)

    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    first = result.steps[0].comparison
    # stats merged over both pods: each side served at 50 %
    assert first.challenger.requests >= 10 and first.challenger.failures == 0
    assert first.champion.requests >= 10 and first.champion.failures == 0
    assert len(at_100) == 2
    for routes in at_100.values():
        assert routes["canary"] == {"upstream": upstream, "percent": 100.0, "version": "2"}
    assert stored["canary"] == {"upstream": upstream, "percent": 100, "version": "2"}
    # promoted: the champion Deployment rolled to v2, its pods serve it themselves
    assert promoted.model_version == "2" and after == "2"
    assert len(final) == 2
    for routes in final.values():
        assert routes["canary"] is None and routes["shadow"] is None
        assert routes["primary"] == {"upstream": "http://127.0.0.1:8081", "version": "2"}
    assert left == []


def test_shadow_split_and_routes_on_a_pod_started_later(target, standin, k8s_images):
    name = f"k8s-shadow-{uuid.uuid4().hex[:4]}"
    try:
        created = target.create(name, V1, config(), image=k8s_images["1"])
        url = created.endpoint_url
        # a challenger that never becomes ready is removed, the champion untouched
        hang = config().model_copy(update={"ready_timeout": 8})
        with pytest.raises(DeploymentError, match=f"'{name}-challenger'"):
            target.start_challenger(name, V2, hang, image=k8s_images["hang"])
        assert challenger_objects(standin, name) == []
        assert served_version(url) == "1"

        upstream = target.start_challenger(name, V2, config(), image=k8s_images["2"])
        admin = target.proxy_admin(name)

        # split accuracy on one pod: 10 % of 1,000 requests
        admin.set_routes(canary={"upstream": upstream, "percent": 10, "version": "2"})
        with httpx.Client(timeout=30) as client:
            versions = Counter(
                client.post(f"{url}/invocations", json=IRIS_ROW).headers["x-model-version"]
                for _ in range(1000)
            )
        admin.set_routes(canary=None)

        # a shadow: every request copied to the challenger, every answer from the champion
        admin.set_routes(shadow={"upstream": upstream, "percent": 100, "version": "2"})
        with httpx.Client(timeout=30) as client:
            answers = [client.post(f"{url}/invocations", json=IRIS_ROW) for _ in range(50)]
        time.sleep(1)  # the copies are sent after the live answers
        mirrored = admin.figures(60, "shadow", upstream)

        # a pod started after the routes were set reads them from the ConfigMap
        (old_pod,) = admin.pods()
        target.api.delete("Pod", old_pod)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pods = admin.pods()
            ready = standin.get("Deployment", NAMESPACE, name)["status"].get("readyReplicas")
            if pods and pods != [old_pod] and ready == 1:
                break
            time.sleep(0.5)
        (new_pod,) = admin.pods()
        restarted = admin.pod(new_pod).routes()
        later = [httpx.post(f"{url}/invocations", json=IRIS_ROW, timeout=30) for _ in range(20)]

        target.stop_challenger(name)
        cleared = admin.pod(new_pod).routes()
        left = challenger_objects(standin, name)
        after = [httpx.post(f"{url}/invocations", json=IRIS_ROW, timeout=30) for _ in range(10)]
    finally:
        target.delete(name)

    # Binomial(1000, 0.1): standard deviation 9.5; +-38 (4 sd) fails once in ~16,000 runs
    assert versions["1"] + versions["2"] == 1000
    assert 62 <= versions["2"] <= 138, versions
    # the shadow's answers never reach a client
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.headers["x-model-version"] for a in answers} == {"1"}
    assert mirrored.requests >= 45 and mirrored.failures == 0
    assert new_pod != old_pod
    assert restarted.shadow is not None and restarted.shadow.upstream == upstream
    assert restarted.primary == {"upstream": "http://127.0.0.1:8081", "version": "1"}
    assert {a.headers["x-model-version"] for a in later} == {"1"}
    assert [a.status_code for a in later + after] == [200] * 30
    # stopped: routes cleared on the pod, ConfigMap and challenger gone
    assert cleared.shadow is None and cleared.canary is None
    assert left == []


def test_canary_of_a_failing_challenger_rolls_back_everywhere(
    kubeconfig,
    standin,
    docker_build_env: Path,  # noqa: F811
    iris_model_dir: Path,
    iris_features: pd.DataFrame,
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:6]
    v1 = register_version(iris_model_dir)
    v2 = register_behaviour(tmp_path, "faulty", iris_features)  # raises on IRIS_ROW's 2nd row
    engine = standin.docker
    images = {
        v: build_image(f"models:/iris/{v}", tag=f"mlops-test/iris-k8s-faulty-{run}:{v}").tag
        for v in (v1, v2)
    }
    name = f"k8s-faulty-{run[:4]}"
    target = KubernetesTarget(URI)
    two = config(min_replicas="2", max_replicas="2")
    try:
        created = target.create(name, ModelRef("iris", v1), two, image=images[v1])
        url = created.endpoint_url
        upstream = target.start_challenger(name, ModelRef("iris", v2), two, image=images[v2])
        admin = target.proxy_admin(name)
        load = LoadClient(url, max_requests=5_000, max_seconds=120)
        load.start()
        try:
            result = run_canary(admin, upstream, v2, [50, 100], 3.0, RolloutPolicy(min_requests=10))
        finally:
            load.stop()
        target.stop_challenger(name)
        routes = pod_routes(admin)
        left = challenger_objects(standin, name)
        after = [httpx.post(f"{url}/invocations", json=IRIS_ROW, timeout=30) for _ in range(10)]
        serving = served_version(url)
    finally:
        target.delete(name)
        for tag in images.values():
            engine.images.remove(tag, force=True, noprune=True)

    assert result.outcome == "rolled_back", result.reason
    [step] = result.steps  # rolled back at the first step
    x, c = step.comparison.challenger, step.comparison.champion
    # every challenger answer was its model's 422, counted by the pods' proxies and merged
    assert x.client_errors == x.requests > 0 and x.errors == 0
    assert c.failures == 0 and c.requests > 0
    # what clients saw: failures only while the canary ran, all the challenger's 422
    assert load.failures and all(f.startswith("422: ") for f in load.failures)
    # rolled back: no route on any pod, no ConfigMap, no challenger; v1 answers everything
    assert len(routes) == 2
    for each in routes.values():
        assert each["canary"] is None and each["shadow"] is None
    assert left == []
    assert [r.status_code for r in after] == [200] * 10
    assert serving == v1


def test_a_promotion_whose_rollout_fails_leaves_the_champion_serving_everything(
    target, standin, k8s_images
):
    name = f"k8s-promo-{uuid.uuid4().hex[:4]}"
    try:
        created = target.create(name, V1, config(), image=k8s_images["1"])
        url = created.endpoint_url
        upstream = target.start_challenger(name, V2, config(), image=k8s_images["2"])
        admin = target.proxy_admin(name)
        admin.set_routes(canary={"upstream": upstream, "percent": 50, "version": "2"})
        load = LoadClient(url, max_requests=5_000, max_seconds=120)
        load.start()
        standin.fail_next("PATCH", rf"/deployments/{name}$", 500)  # the roll to v2 is refused
        with pytest.raises(BackendError, match=f"apply Deployment {name}"):
            target.promote_challenger(name)
        time.sleep(1)
        load.stop()
        routes = pod_routes(admin)
        versions = {
            httpx.post(f"{url}/invocations", json=IRIS_ROW, timeout=30).headers["x-model-version"]
            for _ in range(20)
        }
        still = standin.get("Deployment", NAMESPACE, f"{name}-challenger")
        serving = target.get(name).model_version
        target.stop_challenger(name)
        left = challenger_objects(standin, name)
    finally:
        target.delete(name)

    assert load.failures == [] and load.ok > 10
    for each in routes.values():  # all traffic back on the champion, on every pod
        assert each["canary"] is None and each["primary"]["version"] == "1"
    assert versions == {"1"} and serving == "1"
    assert still is not None  # the caller (the flow) stops the challenger
    assert left == []
