"""serving.client: predictions, request ids, feedback, typed errors, retries while starting."""

from __future__ import annotations

import threading

import pytest
from mlops_pipeline.serving.client import ScoringClient, ScoringError, read_api_key

from tests.serving.conftest import free_port, start_server


def test_predict_dataframe_records_and_columns(iris_server, iris_features, iris_model_dir):
    import mlflow

    rows = iris_features.head(4)
    expected = mlflow.pyfunc.load_model(str(iris_model_dir)).predict(rows).tolist()
    with ScoringClient(iris_server.url) as client:
        for data in (rows, rows.to_dict(orient="records"), rows.to_dict(orient="list")):
            result = client.predict(data)
            assert result.predictions == expected
            assert len(result.request_id) == 32
        assert client.feedback(result.request_id, label=1, row=0) == 1
        assert client.version()["model_name"] == "iris"


def test_errors_carry_status_code_and_details(iris_server):
    with ScoringClient(iris_server.url) as client, pytest.raises(ScoringError) as err:
        client.predict([{"sepal_length": 1.0}])
    assert (err.value.status, err.value.code) == (400, "missing_column")
    assert err.value.details["column"] == "sepal_width"


def test_unreachable_after_retries():
    client = ScoringClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with client, pytest.raises(ScoringError) as err:
        client.predict([{"a": 1}])
    assert err.value.status is None and err.value.code == "unreachable"


def test_retries_until_the_service_is_up(tmp_path, iris_model_dir, iris_features):
    """A client started before the server gets its answer once the server is ready."""
    port = free_port()
    holder = {}
    starter = threading.Timer(
        1.0,
        lambda: holder.setdefault("server", start_server(tmp_path, iris_model_dir, port=port)),
    )
    starter.start()
    try:
        with ScoringClient(f"http://127.0.0.1:{port}", retries=9, backoff=0.1) as client:
            result = client.predict(iris_features.head(1))
        assert result.predictions == [0]
    finally:
        starter.join(150)
        assert holder["server"].stop() == 0


def test_api_key_is_sent(tmp_path, iris_model_dir, iris_features):
    key_file = tmp_path / "keys"
    key_file.write_text("client-key-123\n")
    server = start_server(tmp_path, iris_model_dir, MLOPS_SERVING_API_KEY_FILE=str(key_file))
    try:
        with ScoringClient(server.url, api_key=read_api_key(key_file)) as client:
            assert client.predict(iris_features.head(1)).predictions == [0]
        with ScoringClient(server.url, api_key="wrong") as client, pytest.raises(ScoringError) as e:
            client.predict(iris_features.head(1))
        assert e.value.status == 401
    finally:
        assert server.stop() == 0
