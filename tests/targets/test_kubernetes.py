"""The kubernetes: target through the real `kubernetes` client against the stand-in API server
(tests/fakes/kubernetes_apiserver.py), whose pods are real containers of images `build-image`
made, on the local Docker engine, and whose Service forwards to them on 127.0.0.1."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest
from mlops_pipeline import inuse, ledger
from mlops_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    DeploymentError,
    NotFoundError,
)
from mlops_pipeline.settings import get_settings
from mlops_pipeline.targets import operations
from mlops_pipeline.targets.base import DeployConfig, DeploymentStatus
from mlops_pipeline.targets.kubernetes import KubernetesTarget, delete_order
from mlops_pipeline.tracking import connect

from tests.docker_support import IRIS_PAYLOAD
from tests.targets.kubernetes_support import NAMESPACE, OPTIONS, URI, V1, V2
from tests.targets.local_support import LoadClient, served_version

pytestmark = pytest.mark.docker


def config(**options: str) -> DeployConfig:
    return DeployConfig(ready_timeout=120, options={**OPTIONS, **options})


@pytest.fixture
def target(kubeconfig: Path) -> KubernetesTarget:
    return KubernetesTarget(URI)


def wait_gone(standin, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while standin.containers(NAMESPACE, name) and time.monotonic() < deadline:
        time.sleep(0.5)


def test_create_serves_through_the_service_then_delete_removes_all(
    target, standin, k8s_images, tmp_path: Path
):
    keys = tmp_path / "keys"
    keys.write_text("primary-key\n")
    name = "k8s-create"

    deployment = target.create(
        name, V1, config().model_copy(update={"api_key_file": str(keys)}), image=k8s_images["1"]
    )

    assert deployment.status == DeploymentStatus.READY
    assert (deployment.model_version, deployment.image) == ("1", k8s_images["1"])
    assert deployment.endpoint_url.startswith("http://127.0.0.1:3")  # the NodePort
    url = deployment.endpoint_url
    assert httpx.post(f"{url}/invocations", json=IRIS_PAYLOAD).status_code == 401
    headers = {"Authorization": "Bearer primary-key"}
    assert target.predict(name, IRIS_PAYLOAD, headers=headers) == {"predictions": [0]}
    # every object went through server-side apply with our field manager
    applies = [r for r in standin.requests if r[0] == "PATCH"]
    assert {r[2] for r in applies} == {"application/apply-patch+yaml"}
    kinds = [r[1].split("/")[-2] for r in applies]
    assert kinds == [
        "secrets",
        "secrets",  # the proxies' admin token
        "deployments",
        "services",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
    ]
    stored = standin.get("Deployment", NAMESPACE, name)
    assert stored["metadata"]["managedFields"][0]["manager"] == "mlops-pipeline"
    assert stored["metadata"]["generation"] == 1
    assert stored["spec"]["replicas"] == 1  # set by the HPA's minReplicas, not by us
    (container,) = standin.containers(NAMESPACE, name)
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert "primary-key" not in str(container.attrs)  # mounted as a file, not in the env
    assert container.exec_run(["cat", "/run/mlops/api-keys"]).output == b"primary-key\n"
    # the proxies' admin token: a file of the Secret's volume, not in the environment
    (proxy,) = standin.containers(NAMESPACE, name, "proxy")
    token_path = ["cat", "/run/mlops-proxy/token"]
    token = base64.b64decode(standin.get("Secret", NAMESPACE, f"{name}-proxy")["data"]["token"])
    assert proxy.exec_run(token_path).output == token
    assert token.decode() not in str(proxy.attrs["Config"]["Env"])
    # a rotated Secret reaches the running pod's file (the kubelet's volume sync): no restart
    rotated = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-proxy", "namespace": NAMESPACE},
        "stringData": {"token": "rotated-token"},
    }
    target.api.apply(rotated)
    assert proxy.exec_run(token_path).output == b"rotated-token"
    assert standin.get("Secret", NAMESPACE, f"{name}-api-keys")["data"] == {
        "api-keys": "cHJpbWFyeS1rZXkK"
    }
    # a new client reads the state back from the labels and annotations
    again = KubernetesTarget(URI).get(name)
    assert (again.model_version, again.endpoint_url) == ("1", url)
    assert again.config["api_key_file"] == str(keys)
    assert [d.name for d in target.list()] == [name]
    logs = target.logs(name)
    assert logs.startswith(f"==> pod {name}-")
    assert "model iris version 1 is ready" in logs
    with pytest.raises(ConflictError, match=f"'{name}' already exists"):
        target.create(name, V2, config(), image=k8s_images["2"])

    target.delete(name)
    target.delete(name)

    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert standin.get(kind, NAMESPACE, name) is None
    assert standin.get("Secret", NAMESPACE, f"{name}-api-keys") is None
    assert standin.get("Secret", NAMESPACE, f"{name}-proxy") is None
    with pytest.raises(NotFoundError, match=f"'{name}' does not exist in {URI}"):
        target.get(name)
    wait_gone(standin, name)
    assert standin.containers(NAMESPACE, name) == []


def test_delete_of_a_missing_deployment_succeeds(target, standin):
    before = len(standin.requests)
    target.delete("k8s-never-created")
    deletes = [r for r in standin.requests[before:] if r[0] == "DELETE"]
    # every object asked (the challenger's HPA and PDB too), each answered 404, none an error
    assert len(deletes) == len(delete_order("k8s-never-created")) == 11


def test_never_ready_rollout_is_restored_and_the_old_version_keeps_serving(
    target, standin, k8s_images
):
    name = "k8s-stuck"
    deployment = target.create(name, V1, config(), image=k8s_images["1"])
    url = deployment.endpoint_url
    generation = standin.get("Deployment", NAMESPACE, name)["metadata"]["generation"]

    with pytest.raises(DeploymentError) as failed:
        target.update(name, V2, config(progress_deadline_seconds="6"), image=k8s_images["hang"])

    message = str(failed.value)
    assert f"Deployment '{name}' ({k8s_images['hang']}) did not become ready" in message
    assert "exceeded its progress deadline" in message
    assert "Restored the previous pod template" in message and "(version 1)" in message
    stored = standin.get("Deployment", NAMESPACE, name)
    # applied the new template, then the old one again: two more generations
    assert stored["metadata"]["generation"] == generation + 2
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == k8s_images["1"]
    assert target.get(name).model_version == "1"
    assert served_version(url) == "1"
    assert httpx.post(f"{url}/invocations", json=IRIS_PAYLOAD).json() == {"predictions": [0]}

    pending = r"within 5 s \(1 old replicas are pending termination\)"  # kubectl's order
    with pytest.raises(DeploymentError, match=pending):
        target.update(
            name, V2, config().model_copy(update={"ready_timeout": 5}), image=k8s_images["hang"]
        )
    assert served_version(url) == "1"
    wait_gone(standin, name, 30)
    images = {c.image.tags[0] for c in standin.containers(NAMESPACE, name)}
    assert images == {k8s_images["1"]}
    target.delete(name)


def test_api_failure_during_create_removes_what_was_applied(target, standin, k8s_images):
    name = "k8s-half"
    standin.fail_next("PATCH", rf"/horizontalpodautoscalers/{name}$", 500)

    with pytest.raises(BackendError, match="Kubernetes refused to apply HorizontalPodAutoscaler"):
        target.create(name, V1, config(), image=k8s_images["1"])

    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert standin.get(kind, NAMESPACE, name) is None
    wait_gone(standin, name)
    assert standin.containers(NAMESPACE, name) == []


def test_create_in_a_missing_namespace_is_not_found_and_leaves_nothing(kubeconfig, standin):
    target = KubernetesTarget("kubernetes:/elsewhere")
    with pytest.raises(NotFoundError, match='namespaces "elsewhere" not found') as missing:
        target.create("iris", V1, config(), image="mlops/iris:1")
    assert "Check the namespace exists" in str(missing.value)
    with pytest.raises(NotFoundError, match="does not exist in kubernetes:/elsewhere"):
        target.get("iris")


def serves_soon(url: str, version: str) -> bool:
    """Whether 5 answers in a row come from `version` within 20 s: a rollout is complete when
    the new pods are available, while the old ones answer until their preStop ends and the
    Service's endpoints drop them (prestop_seconds 2 here)."""
    deadline, streak = time.monotonic() + 20, 0
    while time.monotonic() < deadline and streak < 5:
        streak = streak + 1 if served_version(url) == version else 0
        time.sleep(0.1)
    return streak == 5


def test_update_and_rollback_under_load_fail_no_request_and_keep_the_ledger(
    kubeconfig, standin, k8s_images, iris_home: Path, monkeypatch
):
    monkeypatch.setenv("MLOPS_HOME", str(iris_home))  # the registry holding iris 1 and 2
    get_settings.cache_clear()
    name = "k8s-load"
    try:
        created = operations.create_deployment(name, V1, URI, config(), image=k8s_images["1"])
        url = created.endpoint_url
        client = connect()
        assert inuse.deployments_using(client, "iris", "1") == {name: URI}
        load = LoadClient(url, max_requests=20_000, max_seconds=240)
        load.start()
        time.sleep(1)

        updated = operations.switch_deployment(name, V2, image=k8s_images["2"])
        switched = serves_soon(url, "2")
        model, image, settings = operations.find_rollback_version(name)
        assert (model, image) == (V1, k8s_images["1"]) and settings is not None
        rolled = operations.switch_deployment(name, model, settings, image, action="rollback")
        rolled_back = serves_soon(url, "1")
        load.stop()

        assert load.failures == []
        assert load.ok > 20
        assert (updated.model_version, rolled.model_version) == ("2", "1")
        assert switched and rolled_back
        assert ledger.get_deployment(name).model_version == "1"
        assert inuse.deployments_using(client, "iris", "1") == {name: URI}
        assert inuse.deployments_using(client, "iris", "2") == {}
        assert [e.action for e in ledger.history(name)] == ["create", "update", "rollback"]
        operations.delete_deployment(name)
        assert inuse.deployments_using(client, "iris", "1") == {}
        assert standin.get("Deployment", NAMESPACE, name) is None
    finally:
        KubernetesTarget(URI).delete(name)
        get_settings.cache_clear()


def test_two_replica_rollout_never_drops_below_two_available_pods(target, standin, k8s_images):
    import threading

    name = "k8s-two"
    two = config(min_replicas="2")
    deployment = target.create(name, V1, two, image=k8s_images["1"])
    stored = standin.get("Deployment", NAMESPACE, name)
    assert stored["spec"]["replicas"] == 2  # the HPA raised it to minReplicas
    assert stored["status"]["availableReplicas"] == 2
    assert len(standin.containers(NAMESPACE, name)) == 2
    seen: list[tuple[int, int, int]] = []  # (available, updated, replicas) while rolling
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            status = standin.get("Deployment", NAMESPACE, name)["status"]
            seen.append(
                (status["availableReplicas"], status["updatedReplicas"], status["replicas"])
            )
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        updated = target.update(name, V2, two, image=k8s_images["2"])
    finally:
        done.set()
        watcher.join(5)

    assert updated.model_version == "2"
    assert serves_soon(deployment.endpoint_url, "2")
    assert min(available for available, _, _ in seen) >= 2  # maxUnavailable: 0
    assert max(replicas for _, _, replicas in seen) == 3  # maxSurge: 1
    final = standin.get("Deployment", NAMESPACE, name)["status"]
    assert (final["availableReplicas"], final["updatedReplicas"], final["replicas"]) == (2, 2, 2)
    images = [c.image.tags[0] for c in standin.containers(NAMESPACE, name)]  # old ones stopping
    assert images == [k8s_images["2"]] * 2
    target.delete(name)


def test_the_uri_context_selects_the_cluster(standin, tmp_path: Path, monkeypatch):
    import yaml

    path = standin.kubeconfig(tmp_path / "kubeconfig", context="standin")
    config = yaml.safe_load(path.read_text())
    # the current context is a cluster that answers nothing
    config["clusters"].append({"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"].append({"name": "gone", "context": {"cluster": "gone", "user": "stand-in"}})
    config["current-context"] = "gone"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("MLOPS_K8S_KUBECONFIG", str(path))

    assert KubernetesTarget(f"kubernetes:/{NAMESPACE}?context=standin").list() == []
    with pytest.raises(BackendUnavailableError, match="http://127.0.0.1:9 did not answer"):
        KubernetesTarget(f"kubernetes:/{NAMESPACE}").list()
