"""Prometheus metrics move by exactly what was sent, labelled with model name and version."""

from __future__ import annotations

from tests.serving.conftest import split_payload

LABELS = {"model_name": "iris", "model_version": "1"}


def test_request_error_latency_and_row_counters(iris_server, http, iris_features):
    def snapshot():
        m = iris_server.metric
        return {
            "ok": m("mlops_serving_requests_total", status="200", **LABELS),
            "bad": m("mlops_serving_requests_total", status="400", **LABELS),
            "missing": m("mlops_serving_errors_total", code="missing_column", **LABELS),
            "rows": m("mlops_serving_rows_scored_total", **LABELS),
            "latency": m("mlops_serving_request_latency_seconds_count", **LABELS),
        }

    before = snapshot()
    for n in (1, 3, 5):
        assert (
            http.post("/invocations", json=split_payload(iris_features.head(n))).status_code == 200
        )
    missing = {"dataframe_records": [{"sepal_length": 1.0}]}
    assert http.post("/invocations", json=missing).status_code == 400
    after = snapshot()
    assert after["ok"] - before["ok"] == 3
    assert after["bad"] - before["bad"] == 1
    assert after["missing"] - before["missing"] == 1
    assert after["rows"] - before["rows"] == 9
    assert after["latency"] - before["latency"] == 4


def test_capture_metrics_are_exposed(iris_server):
    names = {name for name, _ in iris_server.metrics()}
    assert {
        "mlops_capture_rows_written_total",
        "mlops_capture_rows_dropped_total",
        "mlops_capture_rows_queued",
    } <= names
