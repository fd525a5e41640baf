"""A shadow on a kubernetes: deployment, captured: the champion pods' proxy sidecars mirror
every request to the `NAME-challenger` Service with the live request id, both versions capture
to the same PersistentVolumeClaim, and the comparison the shadow flow makes (agreement, error
rates, latency, the metric on labelled rows) pairs them on that id.

The stand-in API server mounts a claim as one host directory in every pod that names it (a
ReadWriteMany volume, as `capture_pvc` needs when pods run on several nodes), so the test reads
the captures where the controller would read an object store's."""

from __future__ import annotations

import uuid

import httpx
import pandas as pd
import pytest
from mlops_pipeline.rollout.shadow import shadow_comparison
from mlops_pipeline.targets.base import DeployConfig
from mlops_pipeline.targets.kubernetes import KubernetesTarget
from mlops_pipeline.tasks.demo import wait_for_captures

from tests.targets.kubernetes_support import OPTIONS, URI, V1, V2
from tests.targets.local_support import IRIS_ROW

pytestmark = pytest.mark.docker
LABELS = [0, 2]  # IRIS_ROW's rows: a setosa and a virginica
REQUESTS = 40


def _request_ids(root, version: str) -> set[str]:
    files = list(root.glob(f"model=iris/version={version}/**/*.parquet"))
    return set(pd.concat(pd.read_parquet(f) for f in files)["_request_id"])


def test_shadow_captures_on_a_volume_pair_on_the_live_request_id(kubeconfig, standin, k8s_images):
    name = f"k8s-shadow-cap-{uuid.uuid4().hex[:4]}"
    claim = f"capture-{name}"
    config = DeployConfig(
        ready_timeout=120, drain_timeout=10, options={**OPTIONS, "capture_pvc": claim}
    )
    target = KubernetesTarget(URI)
    root = standin.volumes / "pvc" / claim
    try:
        url = target.create(name, V1, config, image=k8s_images["1"])
        url = url.endpoint_url
        upstream = target.start_challenger(name, V2, config, image=k8s_images["2"])
        admin = target.proxy_admin(name)
        admin.set_routes(shadow={"upstream": upstream, "percent": 100, "version": "2"})
        with httpx.Client(timeout=30) as client:
            answers = [client.post(f"{url}/invocations", json=IRIS_ROW) for _ in range(REQUESTS)]
            for answer in answers:  # labels for the live requests, through the proxy
                body = {
                    "feedback": [
                        {"request_id": answer.headers["x-request-id"], "row": i, "label": label}
                        for i, label in enumerate(LABELS)
                    ]
                }
                assert client.post(f"{url}/feedback", json=body).status_code == 202
        rows = REQUESTS * len(LABELS)
        # both versions' rows and the champion's labels land on the claim
        flushed = wait_for_captures(root, 2 * rows, labels=rows, timeout=90)
        target.stop_challenger(name)
        comparison = shadow_comparison(str(root), "iris", "1", "2")
        live_ids, shadow_ids = _request_ids(root, "1"), _request_ids(root, "2")
    finally:
        target.delete(name)

    assert [a.status_code for a in answers] == [200] * REQUESTS
    assert {a.headers["x-model-version"] for a in answers} == {"1"}  # never the shadow's
    assert flushed == 2 * rows
    # every shadow record carries the live request id it mirrors
    assert shadow_ids == live_ids == {a.headers["x-request-id"] for a in answers}
    assert comparison.kind == "classes"
    assert comparison.paired_rows == rows and comparison.agreement == 1.0  # the same model
    assert comparison.labelled_rows == rows
    assert comparison.champion_metric == comparison.challenger_metric == 1.0
    assert comparison.champion_error_rate == comparison.challenger_error_rate == 0.0
    assert comparison.champion_p95_ms is not None and comparison.challenger_p95_ms is not None
