"""Capture is lossless and bounded: every answered request is recorded exactly once, a broken
sink never fails a request, and whatever cannot be kept is counted exactly."""

from __future__ import annotations

import json
import random
import signal

import httpx
import pandas as pd

from tests.serving.conftest import read_capture, read_feedback, run_load, start_server, wait_for

LABELS = {"model_name": "iris", "model_version": "1"}


def make_bodies(iris_features: pd.DataFrame, n: int, bad_every: int = 10, seed: int = 0):
    """n JSON bodies of 1-5 rows; every `bad_every`-th has a wrong type (a rejected request)."""
    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        rows = iris_features.sample(rng.randint(1, 5), random_state=i).to_dict(orient="records")
        if bad_every and i % bad_every == 0:
            rows[0]["sepal_width"] = "oops"
        bodies.append((json.dumps({"dataframe_records": rows}).encode(), len(rows)))
    return bodies


def assert_exact_capture(capture: pd.DataFrame, sent) -> None:
    """Each answered request appears once per scored row (or once if rejected), nothing else."""
    answered = [s for s in sent if s.status is not None]
    assert not capture.duplicated(["_request_id", "_row"]).any()
    assert set(capture["_request_id"]) == {s.request_id for s in answered}
    by_id = capture.groupby("_request_id")
    for s in answered:
        rows = by_id.get_group(s.request_id).sort_values("_row")
        if s.status == 200:
            assert rows["_row"].tolist() == list(range(s.rows))
            assert rows["prediction"].tolist() == s.predictions
            assert (rows["_status"] == 200).all() and rows["_error_code"].isna().all()
        else:
            assert len(rows) == 1 and rows["_row"].isna().all()
            assert rows["_status"].item() == s.status
            assert rows["_error_code"].item() == "wrong_type"
            assert rows["sepal_width"].isna().all()  # rejected payloads are not stored


def test_every_answered_request_is_captured_exactly_once(tmp_path, iris_model_dir, iris_features):
    capture_dir = tmp_path / "capture"
    server = start_server(tmp_path, iris_model_dir, MLOPS_SERVING_CAPTURE_URI=str(capture_dir))
    sent = run_load(server.url, make_bodies(iris_features, 300))
    assert all(s.status in (200, 400) for s in sent)
    assert server.stop() == 0
    capture = read_capture(capture_dir)
    assert_exact_capture(capture, sent)
    assert len(capture) == sum(s.rows if s.status == 200 else 1 for s in sent)
    assert capture["_model_name"].eq("iris").all() and capture["_model_version"].eq("1").all()
    assert str(capture["_ts"].dtype) == "datetime64[us, UTC]"
    assert (capture["_latency_ms"] > 0).all()


def test_sigterm_during_load_loses_nothing(tmp_path, iris_model_dir, iris_features):
    capture_dir = tmp_path / "capture"
    server = start_server(
        tmp_path,
        iris_model_dir,
        MLOPS_SERVING_CAPTURE_URI=str(capture_dir),
        MLOPS_SERVING_CAPTURE_FLUSH_SECONDS="5",
    )
    sent = run_load(
        server.url,
        make_bodies(iris_features, 1500, seed=1),
        after=(150, lambda: server.proc.send_signal(signal.SIGTERM)),
    )
    assert server.proc.wait(60) == 0
    answered = [s for s in sent if s.status is not None]
    assert 150 <= len(answered) < 1500  # the signal really arrived mid-load
    assert_exact_capture(read_capture(capture_dir), sent)


def test_sink_outage_fails_no_request_and_counts_drops_exactly(
    tmp_path, iris_model_dir, iris_features
):
    blocker = tmp_path / "sink"
    blocker.write_text("a file where the capture directory should be: every write fails")
    capture_dir = blocker / "capture"
    spool = tmp_path / "spool"
    env = {
        "MLOPS_SERVING_CAPTURE_URI": str(capture_dir),
        "MLOPS_SERVING_CAPTURE_SPOOL_DIR": str(spool),
        "MLOPS_SERVING_CAPTURE_SPOOL_MAX_BYTES": "30000",
        "MLOPS_SERVING_SHUTDOWN_TIMEOUT": "2",
    }
    server = start_server(tmp_path, iris_model_dir, **env)

    def dropped(s):
        return s.metric("mlops_capture_rows_dropped_total", **LABELS)

    def queued(s, stage):
        return s.metric("mlops_capture_rows_queued", stage=stage, **LABELS)

    # phase 1: outage while serving; spool fills up to its limit, the rest is dropped
    first = run_load(server.url, make_bodies(iris_features, 400, bad_every=0, seed=2))
    assert [s.status for s in first] == [200] * 400
    wait_for(lambda: queued(server, "memory") == 0)
    assert server.metric("mlops_capture_sink_errors_total", **LABELS) > 0
    dropped_1 = dropped(server)
    spooled_1 = queued(server, "spool")
    assert dropped_1 > 0 and spooled_1 > 0
    assert dropped_1 + spooled_1 == sum(s.rows for s in first)

    # the sink comes back: the spool drains into it without a restart
    blocker.unlink()
    wait_for(lambda: queued(server, "spool") == 0, timeout=40)
    kept = read_capture(capture_dir)
    assert server.metric("mlops_capture_rows_written_total", **LABELS) == spooled_1 == len(kept)
    assert_exact_capture(kept, [s for s in first if s.request_id in set(kept["_request_id"])])

    # phase 2: down again, then SIGTERM; the spool survives and the next process uploads it
    blocker.rename(tmp_path / "phase-1")
    blocker.write_text("down again")
    second = run_load(server.url, make_bodies(iris_features, 100, bad_every=0, seed=3))
    assert [s.status for s in second] == [200] * 100
    wait_for(lambda: queued(server, "memory") == 0)
    dropped_2 = dropped(server) - dropped_1
    assert server.stop() == 0
    blocker.unlink()
    restarted = start_server(tmp_path, iris_model_dir, **env)
    wait_for(lambda: queued(restarted, "spool") == 0, timeout=40)
    assert restarted.stop() == 0
    kept = read_capture(capture_dir)
    assert len(kept) + dropped_2 == sum(s.rows for s in second)
    assert_exact_capture(kept, [s for s in second if s.request_id in set(kept["_request_id"])])


def test_sample_rate_keeps_a_share(tmp_path, iris_model_dir, iris_features):
    capture_dir = tmp_path / "capture"
    server = start_server(
        tmp_path,
        iris_model_dir,
        MLOPS_SERVING_CAPTURE_URI=str(capture_dir),
        MLOPS_SERVING_SAMPLE_RATE="0.5",
    )
    sent = run_load(server.url, make_bodies(iris_features, 200, bad_every=0, seed=4))
    assert server.stop() == 0
    captured = set(read_capture(capture_dir)["_request_id"])
    assert captured <= {s.request_id for s in sent}
    assert 50 <= len(captured) <= 150


def test_feedback_is_stored_beside_the_capture(iris_server, http, iris_features):
    scored = http.post(
        "/invocations", json={"dataframe_records": iris_features.head(2).to_dict(orient="records")}
    )
    request_id = scored.headers["X-Request-ID"]
    one = http.post("/feedback", json={"request_id": request_id, "label": 0, "row": 1})
    assert one.status_code == 202 and one.json() == {"accepted": 1}
    many = http.post("/feedback", json={"feedback": [{"request_id": request_id, "label": 1}]})
    assert many.json() == {"accepted": 1}
    for label in ([1], "setosa", 1.5):
        bad = http.post("/feedback", json={"request_id": request_id, "label": label})
        assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "label"

    def stored() -> pd.DataFrame:
        try:
            frame = read_feedback(iris_server.capture)
        except FileNotFoundError:
            return pd.DataFrame(columns=["_request_id"])
        return frame[frame["_request_id"] == request_id]

    wait_for(lambda: len(stored()) == 2)
    rows = stored().sort_values("label")
    assert rows["label"].tolist() == [0, 1]
    assert str(rows["label"].dtype) == "int64"  # typed like the model's output signature
    assert rows["_row"].tolist()[0] == 1 and pd.isna(rows["_row"].tolist()[1])


def test_feedback_without_capture_is_409(tmp_path, iris_model_dir):
    server = start_server(tmp_path, iris_model_dir)
    try:
        response = httpx.post(
            f"{server.url}/feedback", json={"request_id": "x", "label": 1}, timeout=30
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "capture_disabled"
    finally:
        assert server.stop() == 0


def test_two_workers_share_metrics_and_capture_everything(tmp_path, iris_model_dir, iris_features):
    capture_dir = tmp_path / "capture"
    server = start_server(
        tmp_path,
        iris_model_dir,
        MLOPS_SERVING_CAPTURE_URI=str(capture_dir),
        MLOPS_SERVING_WORKERS="2",
    )
    # /ready answers from whichever worker accepts the connection; wait until both loaded
    wait_for(
        lambda: all(
            httpx.get(f"{server.url}/ready", timeout=5).status_code == 200 for _ in range(10)
        )
    )
    sent = run_load(server.url, make_bodies(iris_features, 200, seed=5))
    assert all(s.status in (200, 400) for s in sent)
    ok = sum(s.status == 200 for s in sent)
    assert server.metric("mlops_serving_requests_total", status="200", **LABELS) == ok
    assert server.metric("mlops_serving_rows_scored_total", **LABELS) == sum(
        s.rows for s in sent if s.status == 200
    )
    assert server.stop() == 0
    assert_exact_capture(read_capture(capture_dir), sent)
