"""Micro-batching: concurrent requests combined into one predict answer exactly as alone.

Each model is served in-process (uvicorn on a thread, 127.0.0.1); the expected answer of every
request is its body scored alone by a server with batching off, compared byte for byte with the
answer it gets from a batching server under concurrent load. The models sleep a little in
`predict` (a slow model), so requests really queue behind each other and form batches; the
batch-size histogram shows that they did.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlops_pipeline.serving.app import create_app
from mlops_pipeline.serving.settings import ServingSettings
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import wait_for_http
from tests.serving.conftest import ThreadServer

FEATURES = [f"f{i}" for i in range(6)]
M = {"model_name": "m", "model_version": "1"}
SLOW = 0.03  # seconds each predict call sleeps: later requests queue while one runs


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)


class SlowSklearn(mlflow.pyfunc.PythonModel):
    """A fitted estimator's `method` (predict, predict_proba) behind a slow predict."""

    def __init__(self, estimator, method: str) -> None:
        self.estimator = estimator
        self.method = method

    def predict(self, context, model_input, params=None):
        time.sleep(SLOW)
        if (model_input["f0"] > 50).any():
            raise ValueError("f0 out of range")  # rows the model refuses: 422
        return getattr(self.estimator, self.method)(model_input[FEATURES].to_numpy())


class SlowFrame(mlflow.pyfunc.PythonModel):
    """Several output columns: the label, its probability and a string, as a DataFrame."""

    def __init__(self, estimator) -> None:
        self.estimator = estimator

    def predict(self, context, model_input, params=None):
        time.sleep(SLOW)
        proba = self.estimator.predict_proba(model_input[FEATURES].to_numpy())
        label = proba.argmax(axis=1)
        return pd.DataFrame(
            {"label": label, "score": proba.max(axis=1), "name": [f"class-{k}" for k in label]}
        )


class SlowSummary(mlflow.pyfunc.PythonModel):
    """Not one row per input row: one summary row for the whole input."""

    def predict(self, context, model_input, params=None):
        time.sleep(SLOW)
        return pd.DataFrame({"rows": [len(model_input)], "mean_f0": [model_input["f0"].mean()]})


class SlowCentred(mlflow.pyfunc.PythonModel):
    """One row per input row, but each depends on the others (centred on the input's mean)."""

    def predict(self, context, model_input, params=None):
        time.sleep(SLOW)
        return (model_input["f0"] - model_input["f0"].mean()).to_numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    root = tmp_path_factory.mktemp("batch-models")
    train = _frame(400, 0)
    labels = (train["f0"] + train["f1"] > 0).astype(int) + (train["f2"] > 1).astype(int)
    clf = RandomForestClassifier(n_estimators=20, random_state=0).fit(train.to_numpy(), labels)
    reg = RandomForestRegressor(n_estimators=20, random_state=0).fit(
        train.to_numpy(), train["f3"] * 2.5 + train["f4"]
    )
    specs = {
        "classifier": SlowSklearn(clf, "predict"),
        "proba": SlowSklearn(clf, "predict_proba"),
        "regressor": SlowSklearn(reg, "predict"),
        "frame": SlowFrame(clf),
        "summary": SlowSummary(),
        "centred": SlowCentred(),
    }
    out = {}
    for name, model in specs.items():
        sample = train.head(5)
        output = model.predict(None, sample)
        path = root / name
        mlflow.pyfunc.save_model(
            path, python_model=model, signature=infer_signature(sample, output)
        )
        out[name] = path
    return out


def _serve(model: Path, tmp: Path, **settings) -> ThreadServer:
    server = ThreadServer(
        create_app(
            ServingSettings(model_uri=str(model), model_name="m", model_version="1", **settings)
        )
    )
    try:
        # a probe that times out on a loaded machine is "not ready yet", not a failure
        wait_for_http(f"{server.url}/ready", 120)
    except TimeoutError:
        server.stop()
        raise
    # in-process servers share one metrics registry: count from here on
    server.baseline = _read_histogram(server.url)
    return server


def _bodies(n: int, seed: int = 1) -> list[bytes]:
    """n split-format bodies of 1-7 rows each."""
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        frame = _frame(int(rng.integers(1, 8)), seed * 1000 + i)
        bodies.append(
            json.dumps(
                {"dataframe_split": {"columns": FEATURES, "data": frame.values.tolist()}}
            ).encode()
        )
    return bodies


def _post_all(url: str, bodies: list[bytes], concurrency: int) -> list[httpx.Response]:
    def send(body: bytes) -> httpx.Response:
        return httpx.post(
            f"{url}/invocations",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(send, bodies))


def _batch_histogram(server: ThreadServer) -> tuple[float, ...]:
    """(predict calls, requests they answered, calls that answered exactly one request,
    requests answered 200) since the server became ready."""
    now = _read_histogram(server.url)
    return tuple(a - b for a, b in zip(now, server.baseline, strict=True))


def _read_histogram(url: str) -> tuple[float, ...]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    calls = total = single = ok = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "mlops_serving_requests":
            ok += sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels == {**M, "status": "200"}
            )
        if family.name != "mlops_serving_batch_requests":
            continue
        for s in family.samples:
            if s.labels.get("model_name") != "m":
                continue
            if s.name.endswith("_count"):
                calls = s.value
            elif s.name.endswith("_sum"):
                total = s.value
            elif s.name.endswith("_bucket") and s.labels["le"] == "1.0":
                single = s.value
    return calls, total, single, ok


def _alone(model: Path, tmp: Path, bodies: list[bytes]) -> list[tuple[int, bytes]]:
    server = _serve(model, tmp, batching=False)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            out = []
            for body in bodies:
                r = client.post(
                    "/invocations", content=body, headers={"Content-Type": "application/json"}
                )
                out.append((r.status_code, r.content))
            return out
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["classifier", "proba", "regressor", "frame"])
def test_batched_answers_are_byte_identical_to_alone(models, tmp_path, name):
    bodies = _bodies(48)
    expected = _alone(models[name], tmp_path, bodies)
    assert all(status == 200 for status, _ in expected)
    server = _serve(models[name], tmp_path, batch_verify=2)
    try:
        responses = _post_all(server.url, bodies, concurrency=8)
        calls, total, single, ok = _batch_histogram(server)
    finally:
        server.stop()
    assert [(r.status_code, r.content) for r in responses] == expected
    assert total == ok == len(bodies)  # every request counted once, in both metrics
    assert calls < total and calls - single > 0  # ... some by combined predicts
    first = json.loads(expected[0][1])["predictions"]
    if name == "frame":
        assert set(first[0]) == {"label", "score", "name"}
    elif name == "proba":
        assert len(first[0]) == 3 and abs(sum(first[0]) - 1.0) < 1e-9


@pytest.mark.parametrize("name", ["summary", "centred"])
def test_models_that_cannot_be_batched_fall_back_to_alone(models, tmp_path, name):
    bodies = _bodies(24, seed=2)
    expected = _alone(models[name], tmp_path, bodies)
    server = _serve(models[name], tmp_path)
    try:
        responses = _post_all(server.url, bodies, concurrency=8)
        first = _batch_histogram(server)
        more = _post_all(server.url, bodies, concurrency=8)  # batching is off by now
        calls, total, single, _ = _batch_histogram(server)
    finally:
        server.stop()
    assert [(r.status_code, r.content) for r in responses] == expected
    assert [(r.status_code, r.content) for r in more] == expected
    if name == "summary":
        assert json.loads(expected[0][1])["predictions"][0]["rows"] == len(
            json.loads(bodies[0])["dataframe_split"]["data"]
        )
    # after the fall-back every request is a predict call of its own
    assert calls - first[0] == len(bodies) and single - first[2] == len(bodies)


def test_bad_requests_never_poison_a_batch(models, tmp_path):
    good = _bodies(30, seed=3)
    wrong_type = json.dumps(
        {"dataframe_split": {"columns": FEATURES, "data": [["x", 1, 2, 3, 4, 5]]}}
    ).encode()
    refused = json.dumps(
        {"dataframe_split": {"columns": FEATURES, "data": [[99.0, 1, 2, 3, 4, 5]]}}
    ).encode()
    bodies = []
    for i, body in enumerate(good):
        bodies.append(body)
        if i % 3 == 0:
            bodies.append(wrong_type if i % 2 else refused)
    expected = _alone(models["classifier"], tmp_path, bodies)
    server = _serve(models["classifier"], tmp_path)
    try:
        responses = _post_all(server.url, bodies, concurrency=8)
        calls, total, single, _ = _batch_histogram(server)
    finally:
        server.stop()
    statuses = [r.status_code for r in responses]
    assert statuses.count(400) == sum(b == wrong_type for b in bodies) == 5
    assert statuses.count(422) == sum(b == refused for b in bodies) == 5
    assert [(r.status_code, r.content) for r in responses if r.status_code == 200] == [
        e for e in expected if e[0] == 200
    ]
    for r in responses:
        if r.status_code == 422:
            assert r.json()["error"]["code"] == "prediction_failed"
    assert total == len(bodies) - 5  # rejected bodies never reached the model
    assert calls < total


def test_capture_records_each_request_under_its_own_id(models, tmp_path):
    bodies = _bodies(40, seed=4)
    capture = tmp_path / "capture"
    server = _serve(
        models["classifier"],
        tmp_path,
        capture_uri=str(capture),
        capture_flush_seconds=0.2,
        capture_spool_dir=tmp_path / "spool",
    )
    try:
        responses = _post_all(server.url, bodies, concurrency=8)
        calls, total, _, _ = _batch_histogram(server)
    finally:
        server.stop()
    assert calls < total
    rows = read_capture_model(capture)
    assert len(rows) == sum(len(json.loads(b)["dataframe_split"]["data"]) for b in bodies)
    for body, r in zip(bodies, responses, strict=True):
        assert r.status_code == 200
        mine = rows[rows["_request_id"] == r.headers["X-Request-ID"]].sort_values("_row")
        data = json.loads(body)["dataframe_split"]["data"]
        assert mine["_row"].tolist() == list(range(len(data)))
        assert mine["prediction"].tolist() == r.json()["predictions"]
        assert np.array_equal(mine[FEATURES].to_numpy(), np.array(data))


def read_capture_model(root: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    return (
        ds.dataset(root / "model=m", format="parquet", partitioning="hive").to_table().to_pandas()
    )


def test_batching_off_scores_each_request_alone(models, tmp_path):
    bodies = _bodies(16, seed=5)
    server = _serve(models["regressor"], tmp_path, batching=False)
    try:
        responses = _post_all(server.url, bodies, concurrency=8)
        calls, total, single, ok = _batch_histogram(server)
    finally:
        server.stop()
    assert all(r.status_code == 200 for r in responses)
    assert calls == total == single == ok == len(bodies)


def test_requests_with_params_or_over_the_row_limit_are_scored_alone(models, tmp_path):
    with_params = [json.dumps({**json.loads(b), "params": {}}).encode() for b in _bodies(8, seed=6)]
    large = _bodies(8, seed=7)
    bodies = with_params + large
    expected = _alone(models["classifier"], tmp_path, bodies)
    # bodies have 1-7 rows; with a 4-row limit the larger ones are always scored alone
    server = _serve(models["classifier"], tmp_path, batch_max_rows=4)
    try:
        responses = _post_all(server.url, bodies, concurrency=8)
        calls, total, single, _ = _batch_histogram(server)
    finally:
        server.stop()
    assert [(r.status_code, r.content) for r in responses] == expected
    over = [b for b in large if len(json.loads(b)["dataframe_split"]["data"]) > 4]
    assert over and single >= len(with_params) + len(over)
    assert total == len(bodies)


def test_unit_split_rows():
    from mlops_pipeline.serving.batching import split_rows

    arr = np.arange(12).reshape(6, 2)
    parts = split_rows(arr, [1, 2, 3])
    assert [p.tolist() for p in parts] == [[[0, 1]], [[2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]
    frame = pd.DataFrame({"a": range(5), "b": list("vwxyz")})
    parts = split_rows(frame, [2, 3])
    assert parts[1].index.tolist() == [0, 1, 2] and parts[1]["b"].tolist() == ["x", "y", "z"]
    assert split_rows(np.arange(4), [2, 3]) is None  # not one row per input row
    assert split_rows({"a": [1, 2]}, [1, 1]) is None
    assert split_rows(np.float64(3.0), [1]) is None
