"""The kubernetes: live challenger and the champion's HorizontalPodAutoscaler, through the real
`kubernetes` client against the stand-in API server (tests/fakes/kubernetes_apiserver.py),
which scales a Deployment as its HPA would: the challenger is sized like the champion and has
its own HPA and PDB, a champion pod the HPA adds during a canary starts with the current split
(from the `NAME-routes` ConfigMap), and a promotion holds the champion HPA's minimum at the
challenger's pod count until the champion serves everything again."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from mlops_pipeline.errors import MLOpsError
from mlops_pipeline.targets.base import DeployConfig
from mlops_pipeline.targets.kubernetes import KubernetesTarget
from mlops_pipeline.targets.kubernetes_routes import PodsProxyAdmin

from tests.targets.kubernetes_support import NAMESPACE, OPTIONS, URI, V1, V2, challenger_objects

pytestmark = pytest.mark.docker


@pytest.fixture
def target(kubeconfig: Path) -> KubernetesTarget:
    return KubernetesTarget(URI)


def answering(admin: PodsProxyAdmin, count: int, timeout: float = 120.0) -> list[str]:
    """The champion's pods once there are `count` and each one's proxy answers (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        pods = admin.pods()
        try:
            if len(pods) == count and all(admin.pod(p).routes() for p in pods):
                return pods
        except MLOpsError:
            pass
        assert time.monotonic() < deadline, f"not {count} answering pods: {pods}"
        time.sleep(0.5)


def test_a_canary_follows_the_champions_hpa_and_a_promotion_holds_its_minimum(
    target, standin, k8s_images
):
    name = f"k8s-scale-{uuid.uuid4().hex[:4]}"
    own = f"{name}-challenger"
    config = DeployConfig(
        ready_timeout=120,
        drain_timeout=10,
        options={**OPTIONS, "min_replicas": "1", "max_replicas": "3"},
    )
    try:
        target.create(name, V1, config, image=k8s_images["1"])
        admin = target.proxy_admin(name)
        assert isinstance(admin, PodsProxyAdmin)
        standin.scale(NAMESPACE, name, 2)  # its HPA scaled it up before the canary
        before = answering(admin, 2)
        upstream = target.start_challenger(name, V2, config, image=k8s_images["2"])
        sized = standin.get("Deployment", NAMESPACE, own)["spec"]["replicas"]
        hpa = standin.get("HorizontalPodAutoscaler", NAMESPACE, own)
        pdb = standin.get("PodDisruptionBudget", NAMESPACE, own)

        route = {"upstream": upstream, "percent": 30, "version": "2"}
        admin.set_routes(canary=route)
        standin.scale(NAMESPACE, name, 3)  # the HPA adds a pod during the canary
        (joined,) = set(answering(admin, 3)) - set(before)
        started_with = admin.pod(joined).routes()

        mark = len(standin.applied)
        promoted = target.promote_challenger(name)
        minimums = [
            doc["spec"]["minReplicas"]
            for doc in standin.applied[mark:]
            if (doc["kind"], doc["metadata"]["name"]) == ("HorizontalPodAutoscaler", name)
        ]
        after = standin.get("HorizontalPodAutoscaler", NAMESPACE, name)["spec"]
        left = challenger_objects(standin, name)
    finally:
        target.delete(name)

    # the challenger starts with as many pods as the champion runs, under its own HPA and PDB
    assert sized == 2
    assert hpa["spec"]["scaleTargetRef"]["name"] == own
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert pdb["spec"]["selector"] == {"matchLabels": {"mlops.deployment": own}}
    # the pod the HPA added read the current split from the ConfigMap when it started
    assert started_with.canary is not None
    assert started_with.canary.model_dump() == {**route, "percent": 30.0}
    # held at the challenger's 2 pods during the roll, then the configured 1 again
    assert minimums == [2, 1]
    assert after["minReplicas"] == 1
    assert promoted.model_version == "2"
    assert left == []  # the challenger's HPA and PDB went with it
