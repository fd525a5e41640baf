"""The monitor flow end to end: real MLflow registry, real Prefect API, real capture files."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.monitor import monitor_deployment
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.monitoring.captures import load_watermark
from mlops_pipeline.tracking import connect

from tests.conftest import IRIS_COLUMNS
from tests.mlops.monitoring.capture_support import capture_table, write_capture
from tests.servers import flush_prefect_services

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
MODEL = "iris-monitored"


def iris_like(iris_frame: pd.DataFrame, seed: int, n: int, shift: dict | None = None):
    """Iris rows resampled with a little jitter; `shift` moves columns by that many sd."""
    rng = np.random.default_rng(seed)
    rows = iris_frame[IRIS_COLUMNS].sample(n, replace=True, random_state=seed)
    frame = rows.reset_index(drop=True) + rng.normal(0.0, 0.05, (n, len(IRIS_COLUMNS)))
    for column, sds in (shift or {}).items():
        frame[column] += sds * iris_frame[column].std()
    return frame


@pytest.fixture
def monitored(mlops_home: Path, iris_model_dir: Path, iris_frame: pd.DataFrame, tmp_path: Path):
    """A registered iris version with 3000 reference rows and an empty capture dir."""
    reference = tmp_path / "reference.csv"
    iris_like(iris_frame, 0, 3000).to_csv(reference, index=False)
    registered = run_flow(
        register_model, source=str(iris_model_dir), name=MODEL, reference_data=str(reference)
    )
    return {
        "model_uri": f"models:/{MODEL}/{registered['version']}",
        "version": registered["version"],
        "capture": tmp_path / "capture",
    }


def capture(monitored, estimator, frame: pd.DataFrame, at: dt.datetime, prefix: str) -> str:
    scored = frame.assign(prediction=estimator.predict(frame[IRIS_COLUMNS]))
    table = capture_table(scored, at, prefix, version=monitored["version"])
    return write_capture(monitored["capture"], table, at, model=MODEL, version=monitored["version"])


def drift_events(deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flush_prefect_services(timeout=30)
    event_filter = EventFilter(
        event=EventNameFilter(name=["mlops.drift.detected"]),
        resource=EventResourceFilter(id=[f"mlops.deployment.{deployment}"]),
    )
    with get_client(sync_client=True) as client:
        for _ in range(50):
            events = client.read_events(filter=event_filter, limit=50).events
            if events:
                return events
            time.sleep(0.2)
    return []


def test_monitor_flow_validates_signals_drift_once_and_is_incremental(
    prefect_harness, monitored, iris_frame, iris_estimator
):
    params = {
        "deployment": "iris-prod",
        "capture_uri": str(monitored["capture"]),
        "model_uri": monitored["model_uri"],
    }
    for i in range(2):
        capture(
            monitored,
            iris_estimator,
            iris_like(iris_frame, 10 + i, 800),
            T0 + dt.timedelta(minutes=i),
            f"ok{i}",
        )
    corrupt = monitored["capture"] / write_capture(
        monitored["capture"],
        capture_table(iris_like(iris_frame, 1, 5), T0, "c"),
        T0 + dt.timedelta(minutes=5),
        model=MODEL,
        version=monitored["version"],
    )
    corrupt.write_bytes(b"not parquet")

    quiet = monitor_deployment(**params)

    assert quiet["status"] == "ok" and quiet["drift"] is False
    assert quiet["stats"]["rows_scored"] == 1600
    assert {f["name"] for f in quiet["features"]} == {*IRIS_COLUMNS, "prediction"}
    assert all(f["status"] == "ok" for f in quiet["features"])
    # the rows pass every expectation; the corrupt file alone fails validation
    assert quiet["validation"]["failures"] == []
    assert quiet["validation"]["failure_rate"] == 0.0
    assert quiet["validation"]["success"] is False
    assert [q["file"] for q in quiet["validation"]["quarantined"]] == [
        str(corrupt.relative_to(monitored["capture"]))
    ]
    assert Path(quiet["validation"]["data_docs"]).is_file()
    report = Path(quiet["report"])
    assert report.is_file() and "No drift detected" in report.read_text()
    assert json.loads((report.parent / "drift.json").read_text())["drift"] is False
    run = connect().get_run(quiet["mlflow_run_id"])
    assert run.data.tags["mlops.model_name"] == MODEL
    assert run.data.tags["mlops.model_version"] == monitored["version"]
    assert run.data.tags["mlops.deployment"] == "iris-prod"
    assert run.data.metrics["rows_scored"] == 1600
    assert "psi.sepal_width" in run.data.metrics
    assert quiet["event"]["emitted"] is False

    assert monitor_deployment(**params)["status"] == "no_new_data"

    shifted = iris_like(iris_frame, 20, 1500, shift={"sepal_width": 0.5})
    capture(monitored, iris_estimator, shifted, T0 + dt.timedelta(hours=1), "drift")
    drifted = monitor_deployment(**params)

    assert drifted["drift"] is True
    assert "sepal_width" in drifted["drifted"]
    assert "petal_length" not in drifted["drifted"]
    assert drifted["event"]["emitted"] is True
    events = drift_events("iris-prod")
    assert len(events) == 1
    payload = events[0].payload
    assert payload["version"] == monitored["version"]
    assert "sepal_width" in payload["drifted_features"]
    assert payload["scores"]["sepal_width"]["psi"] > 0
    assert payload["report_path"] == drifted["report"]
    assert (
        payload["episode_id"] == drifted["event"]["episode_id"] and len(payload["episode_id"]) == 32
    )

    from prefect.artifacts import Artifact

    table = Artifact.get("drift-iris-prod")
    assert table is not None and "sepal_width" in str(table.data)

    # the same drift episode does not signal again within the cool-down
    capture(monitored, iris_estimator, shifted, T0 + dt.timedelta(hours=2), "drift-again")
    again = monitor_deployment(**params)
    assert again["drift"] is True
    assert again["event"] == {
        "emitted": False,
        "reason": "cool-down",
        "event_id": drifted["event"]["event_id"],
        "episode_id": payload["episode_id"],
    }
    assert len(drift_events("iris-prod")) == 1


def test_a_crash_before_commit_leaves_the_watermark_and_the_rerun_matches(
    monitored, iris_frame, iris_estimator, monkeypatch
):
    import mlops_pipeline.flows.monitor as monitor_flow_module

    params = {
        "deployment": "iris-crash",
        "capture_uri": str(monitored["capture"]),
        "model_uri": monitored["model_uri"],
    }
    for i in range(2):
        capture(
            monitored,
            iris_estimator,
            iris_like(iris_frame, 30 + i, 400, {"petal_width": 1}),
            T0 + dt.timedelta(minutes=i),
            f"w{i}",
        )

    def crash(*args, **kwargs):
        raise RuntimeError("killed before commit")

    with monkeypatch.context() as patch:
        patch.setattr(monitor_flow_module, "signal_drift", crash)
        with pytest.raises(RuntimeError, match="killed"):
            run_flow(monitor_deployment, **params)
    assert load_watermark("iris-crash").processed == set()

    first = run_flow(monitor_deployment, **params)
    assert load_watermark("iris-crash").processed != set()
    window = run_flow(monitor_deployment, window=T0.isoformat(), **params)

    assert first["stats"]["rows_scored"] == window["stats"]["rows_scored"] == 800
    assert [(f["name"], f["score"]) for f in first["features"]] == [
        (f["name"], f["score"]) for f in window["features"]
    ]
    assert "petal_width" in first["drifted"]
    assert run_flow(monitor_deployment, **params)["status"] == "no_new_data"


def test_monitor_reads_capture_uri_and_version_from_the_ledger(
    monitored, iris_frame, iris_estimator
):
    from mlops_pipeline.deployment import Deployment
    from mlops_pipeline.ledger import upsert_deployment

    upsert_deployment(
        Deployment(
            name="iris-ledger",
            target_uri="local:",
            model_name=MODEL,
            model_version=monitored["version"],
            model_uri=monitored["model_uri"],
            capture_uri=str(monitored["capture"]),
        )
    )
    capture(monitored, iris_estimator, iris_like(iris_frame, 40, 100), T0, "few")

    result = run_flow(monitor_deployment, deployment="iris-ledger")

    assert result["model_uri"] == monitored["model_uri"]
    assert result["stats"]["rows_scored"] == 100
    assert {f["status"] for f in result["features"]} == {"insufficient_data"}
    assert result["drift"] is False
    assert mlflow.get_run(result["mlflow_run_id"]).data.tags["mlops.deployment"] == "iris-ledger"


def rejected_request(like: pa.Table, at: dt.datetime) -> pa.Table:
    """One request the service answered 400: null features and prediction, as it is captured."""
    columns = {name: pa.nulls(1, like.schema.field(name).type) for name in like.column_names}
    columns |= {
        "_request_id": pa.array(["rejected"], like.schema.field("_request_id").type),
        "_ts": pa.array([at], like.schema.field("_ts").type),
        "_status": pa.array([400], pa.int32()),
        "_error_code": pa.array(["invalid_input"], like.schema.field("_error_code").type),
    }
    return pa.table(columns, schema=like.schema)


def test_rejected_requests_stay_out_and_a_jump_in_blanks_is_drift(
    monitored, iris_frame, iris_estimator
):
    params = {
        "deployment": "iris-rejected",
        "capture_uri": str(monitored["capture"]),
        "model_uri": monitored["model_uri"],
    }
    rows = iris_like(iris_frame, 50, 600)
    scored = capture_table(
        rows.assign(prediction=iris_estimator.predict(rows[IRIS_COLUMNS])),
        T0,
        "in",
        version=monitored["version"],
    )
    table = pa.concat_tables([scored, rejected_request(scored, T0)])
    write_capture(monitored["capture"], table, T0, model=MODEL, version=monitored["version"])

    quiet = run_flow(monitor_deployment, **params)

    assert quiet["stats"]["rows_scored"] == 600 and quiet["stats"]["rows_rejected"] == 1
    assert quiet["status"] == "ok" and quiet["drift"] is False, quiet["drifted"]
    assert {f["status"] for f in quiet["features"]} == {"ok"}
    prediction = next(f for f in quiet["features"] if f["name"] == "prediction")
    assert prediction["method"] == "chi2+psi"  # class labels stay levels, not floats
    assert quiet["validation"]["failures"] == [] and quiet["event"]["emitted"] is False

    blanks = iris_like(iris_frame, 51, 2000)
    blanks.loc[np.random.default_rng(0).random(2000) < 0.9, "sepal_width"] = np.nan
    at = T0 + dt.timedelta(hours=1)
    scored = capture_table(
        blanks.assign(prediction=iris_estimator.predict(blanks[IRIS_COLUMNS].fillna(3.0))),
        at,
        "blank",
        version=monitored["version"],
    )
    write_capture(monitored["capture"], scored, at, model=MODEL, version=monitored["version"])

    drifted = run_flow(monitor_deployment, **params)

    assert drifted["drifted"] == ["sepal_width"]
    sepal = next(f for f in drifted["features"] if f["name"] == "sepal_width")
    assert sepal["method"] == "null_rate" and sepal["drifted_by"] == ["null_rate"]
    assert sepal["null_rate_reference"] == 0.0 and sepal["null_rate_current"] > 0.85


def test_drift_settings_are_the_flows_typed_parameter():
    from mlops_pipeline.errors import InvalidInputError
    from mlops_pipeline.monitoring.drift_settings import DriftConfig

    schema = monitor_deployment.parameters.model_dump()
    drift_config = schema["properties"]["drift_config"]
    assert "DriftConfig" in json.dumps(drift_config)
    definition = schema["definitions"]["DriftConfig"]
    assert definition["additionalProperties"] is False
    assert {"alpha", "thresholds", "features"} <= set(definition["properties"])
    assert DriftConfig.parse({"alpha": 0.05}).alpha == 0.05
    with pytest.raises(InvalidInputError, match="'thresholds.psi' is '0.2'"):
        monitor_deployment.fn(deployment="x", drift_config={"thresholds": {"psi": "0.2"}})
