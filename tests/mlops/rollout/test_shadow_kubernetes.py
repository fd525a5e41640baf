"""The shadow flow on a kubernetes: deployment, end to end, with captures on S3: the real
`kubernetes` client against the stand-in API server (tests/fakes/kubernetes_apiserver.py), whose
pods are real containers of the images the flows build (with s3fs: MLOPS_IMAGE_EXTRAS=s3), and
moto's S3 in a container (tests/fakes/s3_container.py) on the stand-in's Docker network.

The pods reach the store as `http://s3:5000` through the deployment's `env_secret` (endpoint and
keys in a Secret, as for an S3-compatible store in a cluster); this process reaches it on
127.0.0.1 only, where the flow's comparison reads both versions' captures."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
import s3fs
from mlops_pipeline import ledger
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy
from mlops_pipeline.flows.rollout import shadow, shadow_report
from mlops_pipeline.images.dockerfile import default_tag
from mlops_pipeline.redeploy.records import decisions
from mlops_pipeline.serving.contract import FEEDBACK_PREFIX
from mlops_pipeline.settings import get_settings
from mlops_pipeline.targets.base import ModelRef
from mlops_pipeline.targets.kubernetes import KubernetesTarget
from mlops_pipeline.targets.kubernetes_api import KubernetesApi

from tests.docker_support import BASE_IMAGE, docker_build_env  # noqa: F401 (fixture)
from tests.fakes.s3_container import S3Container, build_moto_image, s3_container
from tests.mlops.rollout.support import register_behaviour
from tests.targets import kubernetes_support
from tests.targets.kubernetes_support import NAMESPACE, OPTIONS, URI, challenger_objects
from tests.targets.local_support import register_version

pytestmark = pytest.mark.docker
standin = kubernetes_support.standin
kubeconfig = kubernetes_support.kubeconfig

# setosa, versicolor-like and virginica rows, and their true classes (sent as feedback)
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
PAYLOAD = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": ROWS,
    }
}
LABELS = [0, 1, 2]
BUCKET = "captures"


@pytest.fixture(scope="module")
def moto_image(docker_engine, session_wheelhouse: Path) -> Iterator[str]:
    tag = f"mlops-test/moto-{uuid.uuid4().hex[:8]}:1"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_WHEELHOUSE", str(session_wheelhouse))
        get_settings.cache_clear()
        build_moto_image(docker_engine, BASE_IMAGE, tag)
    get_settings.cache_clear()
    yield tag
    docker_engine.images.remove(tag, force=True, noprune=True)


@pytest.fixture
def s3_store(docker_engine, standin, moto_image: str, monkeypatch) -> Iterator[S3Container]:
    """moto in a container on the stand-in's network (`s3` to the pods), this process pointed
    at its port on 127.0.0.1; the store and its buckets go with the container."""
    with s3_container(docker_engine, moto_image, standin.network_name) as store:
        for name, value in store.env().items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()  # none made for another endpoint
        yield store
    s3fs.S3FileSystem.clear_instance_cache()


def _fs() -> s3fs.S3FileSystem:
    """A filesystem with no listing cache: each glob sees what the pods flushed since."""
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def _captures(root: str, model: str, version: str) -> pd.DataFrame:
    fs = _fs()
    files = sorted(fs.glob(f"{root}/model={model}/version={version}/**/*.parquet"))
    return pd.concat([pd.read_parquet(f, filesystem=fs) for f in files], ignore_index=True)


def _flushed_labels(root: str) -> int:
    fs = _fs()
    files = fs.glob(f"{root}/{FEEDBACK_PREFIX}/**/*.parquet")
    return sum(pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files)


def _wait_for_labels(root: str, labels: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while (flushed := _flushed_labels(root)) < labels and time.monotonic() < deadline:
        time.sleep(0.5)
    return flushed


def test_shadow_flow_on_kubernetes_with_s3_captures_never_answers_clients_and_reports(
    docker_engine,
    kubeconfig,
    standin,
    s3_store: S3Container,
    docker_build_env: Path,  # noqa: F811
    iris_model_dir: Path,
    iris_features,
    fast_rollout: None,
    tmp_path: Path,
    monkeypatch,
) -> None:
    monkeypatch.setenv("MLOPS_IMAGE_EXTRAS", "s3")  # the pods write s3:// through s3fs
    get_settings.cache_clear()
    model = f"iris-s3-{uuid.uuid4().hex[:4]}"
    name, secret = "k8s-flow-shadow", "k8s-flow-shadow-s3"
    root = f"{BUCKET}/capture"
    s3_store.create_bucket(BUCKET)
    api = KubernetesApi(NAMESPACE, None, str(kubeconfig))
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": NAMESPACE},
            "stringData": s3_store.env(s3_store.pod_endpoint),
        }
    )
    register_version(iris_model_dir, name=model)
    try:
        created = run_flow(
            deploy, model_uri=f"models:/{model}/1", name=name, target=URI,
            capture_uri=f"s3://{root}", options={**OPTIONS, "env_secret": secret},
            ready_timeout=120.0,
        )  # fmt: skip
        v2 = register_behaviour(tmp_path, "ones", iris_features, model=model)
        endpoint = created["endpoint_url"]
        expected = httpx.post(f"{endpoint}/invocations", json=PAYLOAD, timeout=30).json()
        out: dict = {}

        def run_shadow() -> None:
            try:
                out["result"] = run_flow(
                    shadow, name=name, model_uri=f"models:/{model}/{v2}", percent=100, duration=6
                )
            except BaseException as exc:  # handed to the test thread
                out["error"] = exc

        thread = threading.Thread(target=run_shadow, daemon=True)
        thread.start()
        answers, ids, failures = [], [], []
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 240
            while thread.is_alive() and time.monotonic() < deadline:
                try:
                    r = client.post(f"{endpoint}/invocations", json=PAYLOAD)
                    answers.append((r.status_code, r.headers.get("x-model-version"), r.json()))
                    request_id = r.headers["x-request-id"]
                    ids.append(request_id)
                    feedback = [
                        {"request_id": request_id, "row": i, "label": label}
                        for i, label in enumerate(LABELS)
                    ]
                    fed = client.post(f"{endpoint}/feedback", json={"feedback": feedback})
                    if fed.status_code != 202:
                        failures.append(f"feedback HTTP {fed.status_code}: {fed.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                time.sleep(0.05)  # bounded, modest load: 2 cores shared
        thread.join(60)
        assert "error" not in out, out.get("error")
        result = out["result"]
        left = challenger_objects(standin, name)
        labelled = _wait_for_labels(root, len(ids) * len(LABELS))
        report = run_flow(shadow_report, name=name)
        live, mirrored = _captures(root, model, "1"), _captures(root, model, v2)
        row = decisions(name)[-1]
        serving = ledger.get_deployment(name).model_version
    finally:
        KubernetesTarget(URI).delete(name)
        api.delete("Secret", secret)
        for version in ("1", "2"):  # this test's model only: no other test runs its images
            tag = default_tag(ModelRef(model, version))
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_engine.images.remove(tag, force=True, noprune=True)

    # live traffic: never failed, always the champion's answers
    assert failures == [], failures[:5]
    assert len(answers) > 20
    assert {(status, version) for status, version, _ in answers} == {(200, "1")}
    assert all(body == expected for _, _, body in answers)

    # the flow's comparison, read from S3 on 127.0.0.1, paired the pods' captures
    s = result["shadow"]
    assert result["decision"] == "shadowed" and result["challenger_version"] == v2
    assert s["kind"] == "classes" and s["paired_rows"] > 0
    assert s["challenger_requests"] > 5
    assert s["champion_error_rate"] == s["challenger_error_rate"] == 0.0
    assert s["metric"] == "accuracy" and s["labelled_rows"] > 0
    assert abs(s["challenger_metric"] - 1 / 3) < 1e-9  # "ones" is right on the versicolor row
    # recorded: ledger row, MLflow run, HTML report; the deployment untouched, challenger gone
    assert (row["decision"], row["challenger_version"]) == ("shadowed", v2)
    assert result["mlflow_run_id"]
    html = Path(result["report_path"])
    assert html.is_file() and "shadow" in html.read_text().lower()
    assert serving == "1"
    assert left == []

    # the report on demand: every label in, checked by hand against the captures on S3
    assert labelled == len(ids) * len(LABELS)
    pairs = live.merge(mirrored, on=["_request_id", "_row"], suffixes=("_c", "_s"))
    pairs = pairs[(pairs["_status_c"] == 200) & (pairs["_status_s"] == 200)]
    truth = pairs["_row"].map(dict(enumerate(LABELS)))
    r = report["shadow"]
    assert report["challenger_version"] == v2 and report["window_start"] == result["window_start"]
    assert r["paired_rows"] == len(pairs) >= s["paired_rows"]
    # every copy the challenger's pod captured carries the live request id it mirrors
    assert set(mirrored["_request_id"]) <= set(ids)
    assert r["agreement"] == (pairs["prediction_c"] == pairs["prediction_s"]).mean()
    # each request's rows answer alike, so the flow's own pairs agree in the same share
    assert s["agreement"] == pytest.approx(r["agreement"])
    assert r["labelled_rows"] == len(pairs)
    assert r["champion_metric"] == (pairs["prediction_c"] == truth).mean()
    assert abs(r["challenger_metric"] - 1 / 3) < 1e-9
