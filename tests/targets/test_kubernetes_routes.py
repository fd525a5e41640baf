"""The kubernetes: target's route fan-out (targets/kubernetes_routes.py) on two champion pods,
through the real `kubernetes` client against the stand-in API server
(tests/fakes/kubernetes_apiserver.py), whose pods are real containers: pods that are not
running yet, the proxy's own refusals told from the API server's, the PUTs sent to every pod
at once, and stats that miss a pod.

The canary upstream is each pod's own scoring container (http://127.0.0.1:8081): a ready
upstream without a challenger Deployment, so one two-pod deployment serves every test.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from mlops_pipeline.errors import (
    AuthError,
    BackendError,
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
)
from mlops_pipeline.targets.base import DeployConfig, ModelRef
from mlops_pipeline.targets.kubernetes import KubernetesTarget
from mlops_pipeline.targets.kubernetes_manifests import (
    PROXY_ADMIN_PORT,
    PROXY_CONTAINER,
    routes_name,
)
from mlops_pipeline.targets.kubernetes_routes import PodsProxyAdmin

from tests.targets.kubernetes_support import NAMESPACE, OPTIONS, URI
from tests.targets.local_support import IRIS_ROW

pytestmark = pytest.mark.docker
ROUTE = {"upstream": "http://127.0.0.1:8081", "percent": 10, "version": "1"}
PUT_DELAY = 3.0  # seconds the stand-in holds each pods/proxy PUT (a pod draining)


class Deployed:
    """The module's deployment: two pods of iris v1."""

    def __init__(self, target: KubernetesTarget, standin, name: str, url: str) -> None:
        self.target, self.standin, self.name, self.url = target, standin, name, url

    def admin(self, **kw: float) -> PodsProxyAdmin:
        found = self.target.proxy_admin(self.name)
        return PodsProxyAdmin(self.target.api, self.name, found.access.token, **kw)

    def two_running(self, timeout: float = 90.0) -> list[str]:
        """The two pods once both are ready and both proxies answer (bounded)."""
        admin, deadline = self.admin(), time.monotonic() + timeout
        while True:
            pods = admin.pods()
            status = self.standin.get("Deployment", NAMESPACE, self.name)["status"]
            try:
                ready = status.get("readyReplicas") == status.get("replicas") == 2
                if ready and len(pods) == 2 and all(admin.pod(p).routes() for p in pods):
                    return pods
            except (BackendError, NotFoundError):
                pass
            assert time.monotonic() < deadline, f"not two answering pods: {pods}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def deployed(standin, k8s_images, tmp_path_factory) -> Iterator[Deployed]:
    path = standin.kubeconfig(tmp_path_factory.mktemp("k8s-routes") / "kubeconfig")
    name = f"k8s-routes-{uuid.uuid4().hex[:4]}"
    config = DeployConfig(
        ready_timeout=120,
        drain_timeout=10,
        options={**OPTIONS, "min_replicas": "2", "max_replicas": "2"},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_K8S_KUBECONFIG", str(path))
        target = KubernetesTarget(URI)
        try:
            created = target.create(name, ModelRef("iris", "1"), config, image=k8s_images["1"])
            yield Deployed(target, standin, name, created.endpoint_url or "")
        finally:
            standin.release_pods(NAMESPACE, name)
            target.delete(name)


def pod_names(standin, name: str) -> list[str]:
    """NAME's pods that are not terminating, as the stand-in holds them."""
    return standin.pod_names(NAMESPACE, name)


def put_pods(standin, since: int) -> list[str]:
    """The pods that got a pods/proxy PUT after request `since`."""
    return [
        path.split("/pods/")[1].split(":")[0]
        for method, path, _ in standin.requests[since:]
        if method == "PUT" and "/proxy/-/proxy/routes" in path
    ]


def test_a_canary_step_while_a_pod_is_unscheduled_skips_it_and_it_starts_with_the_routes(
    deployed, standin
):
    old, kept = deployed.two_running()
    admin = deployed.admin()
    standin.hold_pods(NAMESPACE, deployed.name, 1)
    try:
        deployed.target.api.delete("Pod", old)
        deadline = time.monotonic() + 30
        while not (
            pending := [p for p in pod_names(standin, deployed.name) if p not in (old, kept)]
        ):
            assert time.monotonic() < deadline, "no replacement pod"
            time.sleep(0.2)
        [pending] = pending
        listed = standin.get("Pod", NAMESPACE, pending)
        # the API server does not proxy to a pod without an IP (400): "not started yet"
        with pytest.raises(BackendUnavailableError, match="address not allowed"):
            admin.pod(pending).routes()

        mark = len(standin.requests)
        started = time.monotonic()
        answer = admin.set_routes(canary=ROUTE, sticky_header="X-User")
        took = time.monotonic() - started
        on_kept = admin.pod(kept).routes()
        sent_to = put_pods(standin, mark)

        assert standin.release_pods(NAMESPACE, deployed.name) == [pending]
        deadline = time.monotonic() + 90
        while True:  # its proxy read NAME-routes when it started
            try:
                later = admin.pod(pending).routes()
                break
            except BackendError:
                assert time.monotonic() < deadline, "the released pod's proxy never answered"
                time.sleep(0.5)
        admin.set_routes(canary=None)  # a sticky header alone routes nothing: no ConfigMap kept
        left = standin.get("ConfigMap", NAMESPACE, routes_name(deployed.name))
        cleared = [admin.pod(p).routes() for p in deployed.two_running()]
    finally:  # a failure above must not leave the module's deployment a pod short
        standin.release_pods(NAMESPACE, deployed.name)

    assert "nodeName" not in listed["spec"] and "podIP" not in listed["status"]
    assert listed["status"]["phase"] == "Pending"
    assert answer.canary is not None and answer.canary.percent == 10
    assert sent_to == [kept]  # the unscheduled pod got no PUT, and no wait
    assert took < admin.settle / 2, took
    assert on_kept.canary == later.canary and later.canary is not None
    assert later.canary.model_dump() == {**ROUTE, "percent": 10.0}
    assert later.sticky_header == "X-User"
    assert left is None
    assert all(r.canary is None for r in cleared)


def test_the_proxys_own_refusals_are_told_from_the_api_servers(deployed, standin):
    first, _ = deployed.two_running()
    wrong = PodsProxyAdmin(deployed.target.api, deployed.name, "not-the-token", settle=20)
    started = time.monotonic()
    with pytest.raises(AuthError) as refused:
        wrong.set_routes(canary=None)
    took = time.monotonic() - started
    with pytest.raises(AuthError, match="rollout restart"):
        wrong.stats(60)
    admin = deployed.admin()
    # a canary whose upstream is not ready: the proxy's 409, one line
    with pytest.raises(ConflictError) as conflict:
        admin.pod(first).set_routes(canary={**ROUTE, "upstream": "http://127.0.0.1:9"})
    # a path the proxy does not know (an older proxy): its 404 is not "the pod is gone"
    with pytest.raises(BackendError) as unknown:
        admin.pod(first)._call("GET", "no-such-path")
    # the API server's own 403 stays a refusal of the kubeconfig's user
    standin.fail_next("GET", rf"/pods/{first}:{PROXY_ADMIN_PORT}/proxy/-/proxy/routes$", 403)
    with pytest.raises(AuthError, match="RBAC") as rbac:
        admin.pod(first).routes()

    error = refused.value
    assert f"kubectl rollout restart deployment/{deployed.name}" in (error.hint or "")
    assert "The proxy of pod" in error.message and "Wrong or missing token" in error.message
    assert "{" not in error.message  # no raw JSON body
    assert took < 5, took  # a refused token is not retried until `settle`
    assert "not ready" in conflict.value.message and "{" not in conflict.value.message
    assert "HTTP 404: Unknown admin path." in unknown.value.message
    assert not isinstance(unknown.value, NotFoundError)
    assert "Kubernetes refused" in rbac.value.message


def test_a_rollback_changes_every_pod_at_once(deployed, standin):
    pods = deployed.two_running()
    admin = deployed.admin()
    admin.set_routes(canary=ROUTE)
    mark = len(standin.proxy_calls)
    standin.pod_proxy_put_delay = PUT_DELAY
    try:
        started = time.monotonic()
        admin.set_routes(canary=None)
        took = time.monotonic() - started
    finally:
        standin.pod_proxy_put_delay = 0.0
    puts = [call for call in standin.proxy_calls[mark:] if call[0] == "PUT"]
    routes = [admin.pod(p).routes() for p in pods]

    assert sorted(pod for _, pod, _, _ in puts) == sorted(pods)
    # both PUTs were in flight together: each started before the other ended
    assert max(start for *_, start, _ in puts) < min(end for *_, end in puts)
    # one delay, where one pod after the other takes two
    assert PUT_DELAY <= took < 2 * PUT_DELAY - 0.5, took
    assert all(r.canary is None for r in routes)


def test_stats_that_miss_a_pod_say_incomplete(deployed, standin, caplog):
    first, second = deployed.two_running()
    with httpx.Client(timeout=30) as client:
        answers = [client.post(f"{deployed.url}/invocations", json=IRIS_ROW) for _ in range(20)]
    admin = deployed.admin(timeout=2)
    whole = admin.stats(300)
    # the first pod is deleted between the listing and its call: skipped, not an abort
    standin.fail_next("GET", rf"/pods/{first}:{PROXY_ADMIN_PORT}/proxy/-/proxy/stats$", 404)
    with caplog.at_level(logging.WARNING, "mlops_pipeline.targets.kubernetes_routes"):
        gone = admin.stats(300)
    # the second pod's proxy runs but does not answer
    proxy = standin.pods[(NAMESPACE, second)].by_name(PROXY_CONTAINER)
    proxy.pause()
    try:
        silent = admin.stats(300)
        primary = admin.figures(300, "primary", "http://127.0.0.1:8081")
    finally:
        proxy.unpause()
    deployed.two_running()

    assert [a.status_code for a in answers] == [200] * 20
    assert whole and all(f.complete for f in whole)
    assert sum(f.requests for f in whole if f.route == "primary") >= 20
    assert gone and all(not f.complete for f in gone)
    assert sum(f.requests for f in gone) < sum(f.requests for f in whole)
    assert any(first in r.getMessage() and "no stats" in r.getMessage() for r in caplog.records)
    assert silent and all(not f.complete for f in silent)
    assert not primary.complete and primary.requests > 0


def test_a_pod_whose_proxy_stopped_is_waited_for_then_skipped(deployed, standin, caplog):
    first, second = deployed.two_running()
    admin = deployed.admin(settle=3)
    standin.pods[(NAMESPACE, second)].by_name(PROXY_CONTAINER).stop(timeout=1)
    deadline = time.monotonic() + 30
    while standin.get("Pod", NAMESPACE, second)["status"]["phase"] != "Failed":  # probed
        assert time.monotonic() < deadline, "the stopped proxy was not noticed"
        time.sleep(0.2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "mlops_pipeline.targets.kubernetes_routes"):
        admin.set_routes(canary=ROUTE)
    took = time.monotonic() - started
    on_first = admin.pod(first).routes()
    admin.set_routes(canary=None)
    deployed.target.api.delete("Pod", second)  # the stand-in restarts no container
    deployed.two_running()

    assert on_first.canary is not None
    assert admin.settle <= took < admin.settle + 5, took
    assert any(second in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
