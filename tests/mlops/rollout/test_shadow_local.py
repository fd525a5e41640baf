"""Shadow traffic on the local target: live answers untouched, the comparison checked by hand."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlops_pipeline import ledger
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.rollout import shadow, shadow_report
from mlops_pipeline.redeploy.records import decisions
from mlops_pipeline.targets.operations import check_no_challenger
from mlops_pipeline.tasks.demo import wait_for_captures

from tests.mlops.rollout.support import register_behaviour

# setosa, versicolor-like and virginica rows: the champion answers a mix of classes
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
PAYLOAD = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": ROWS,
    }
}
LABELS = [0, 1, 2]  # the rows' true classes, sent as feedback


def _run_in_thread(flow, **params) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = run_flow(flow, **params)
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _captures(root: Path, version: str) -> pd.DataFrame:
    files = sorted((root / "model=iris" / f"version={version}").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_shadow_answers_never_reach_clients_and_the_report_matches_the_captures(
    iris_prod: dict, iris_features, tmp_path: Path, mlops_home: Path
) -> None:
    v2 = register_behaviour(tmp_path, "faulty", iris_features)
    endpoint = iris_prod["endpoint_url"]
    expected = httpx.post(f"{endpoint}/invocations", json=PAYLOAD).json()
    thread, out = _run_in_thread(
        shadow, name="iris-prod", model_uri=f"models:/iris/{v2}", percent=100, duration=6
    )
    answers = []
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 180
        while thread.is_alive() and time.monotonic() < deadline:
            r = client.post(f"{endpoint}/invocations", json=PAYLOAD)
            answers.append((r.status_code, r.headers.get("x-model-version"), r.json()))
            time.sleep(0.01)
    thread.join(60)
    assert "error" not in out, out.get("error")
    result = out["result"]

    # the shadow fails every request (row 3 trips its bug), and no client ever saw it
    assert len(answers) > 50
    assert {(status, version) for status, version, _ in answers} == {(200, "1")}
    assert all(body == expected for _, _, body in answers)

    # the comparison, against a hand computation on the capture files
    root = mlops_home / "captures" / "iris-prod"
    live, mirrored = _captures(root, "1"), _captures(root, v2)
    mirrored_ids = set(mirrored["_request_id"])
    live = live[live["_request_id"].isin(mirrored_ids)]
    s = result["shadow"]
    assert result["decision"] == "shadowed" and result["challenger_version"] == v2
    assert s["challenger_requests"] == len(mirrored_ids) > 20
    assert s["challenger_error_rate"] == 1.0  # 422 on every copy
    assert s["champion_requests"] == live["_request_id"].nunique()
    assert s["champion_error_rate"] == 0.0
    assert s["paired_rows"] == 0 and s["kind"] == "none"  # the shadow answered no row
    first = live.drop_duplicates("_request_id")["_latency_ms"]
    assert s["champion_p50_ms"] == first.quantile(0.5)
    # recorded: ledger row, MLflow run, HTML report; the deployment untouched
    row = decisions("iris-prod")[-1]
    assert (row["decision"], row["challenger_version"]) == ("shadowed", v2)
    assert result["mlflow_run_id"]
    report = Path(result["report_path"])
    assert report.is_file() and "shadow" in report.read_text().lower()
    assert ledger.get_deployment("iris-prod").model_version == "1"


def test_shadow_report_on_demand_agreement_and_labelled_metric(
    iris_prod: dict, iris_features, tmp_path: Path, mlops_home: Path
) -> None:
    v2 = register_behaviour(tmp_path, "ones", iris_features)
    endpoint = iris_prod["endpoint_url"]
    thread, out = _run_in_thread(
        shadow, name="iris-prod", model_uri=f"models:/iris/{v2}", percent=100, duration=5
    )
    ids = []
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 180
        while thread.is_alive() and time.monotonic() < deadline:
            r = client.post(f"{endpoint}/invocations", json=PAYLOAD)
            ids.append(r.headers["x-request-id"])
            time.sleep(0.02)
        thread.join(60)
        assert "error" not in out, out.get("error")
        # feedback for every live request: the rows' true classes
        for request_id in ids:
            body = {
                "feedback": [
                    {"request_id": request_id, "row": i, "label": label}
                    for i, label in enumerate(LABELS)
                ]
            }
            assert client.post(f"{endpoint}/feedback", json=body).status_code == 202
    # the champion flushes its labels apart from its predictions: wait for both
    captured = len(ids) * len(LABELS)
    wait_for_captures(mlops_home / "captures" / "iris-prod", captured, labels=captured)
    root = mlops_home / "captures" / "iris-prod"
    live, mirrored = _captures(root, "1"), _captures(root, v2)
    # v2 answers other traffic after the shadow (e.g. promoted later): failed requests outside
    # the shadow's window, which a report on that shadow must leave out
    later = mirrored.assign(
        _request_id=[f"later-{i}" for i in range(len(mirrored))],
        _status=500,
        _ts=pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=5),
    )
    first = sorted((root / "model=iris" / f"version={v2}").rglob("*.parquet"))[0]
    later.to_parquet(first.with_name("later-traffic.parquet"), index=False)
    report = run_flow(shadow_report, name="iris-prod")

    pairs = live.merge(mirrored, on=["_request_id", "_row"], suffixes=("_c", "_s"))
    pairs = pairs[(pairs["_status_c"] == 200) & (pairs["_status_s"] == 200)]
    labels = pairs["_row"].map(dict(enumerate(LABELS)))
    s = report["shadow"]
    assert report["challenger_version"] == v2  # found from the last recorded shadow
    assert s["kind"] == "classes" and s["paired_rows"] == len(pairs) > 30
    # "ones" answers 1: agreement is the champion's share of class 1 on the paired rows
    assert s["agreement"] == (pairs["prediction_c"] == pairs["prediction_s"]).mean()
    assert s["labelled_rows"] == len(pairs)
    assert s["metric"] == "accuracy"
    assert s["champion_metric"] == (pairs["prediction_c"] == labels).mean()
    assert abs(s["challenger_metric"] - 1 / 3) < 1e-9  # right on the versicolor row only
    assert s["challenger_error_rate"] == 0.0 and s["champion_error_rate"] == 0.0
    assert s["challenger_requests"] == out["result"]["shadow"]["challenger_requests"]
    window = out["result"]["window_start"], out["result"]["window_end"]
    assert all(window) and report["window_start"] == window[0]

    # a regression metric on class answers: the report says why it has no metric; a new
    # shadow refuses it before its challenger starts (no new ledger row, no route)
    wrong = run_flow(shadow_report, name="iris-prod", metric="rmse")["shadow"]
    assert wrong["metric"] is None and "rmse is a regression metric" in wrong["metric_problem"]
    rows_before = len(decisions("iris-prod"))
    with pytest.raises(InvalidInputError, match="rmse is a regression metric, but version 1"):
        run_flow(shadow, name="iris-prod", model_uri=f"models:/iris/{v2}", metric="rmse")
    assert len(decisions("iris-prod")) == rows_before
    check_no_challenger("iris-prod", "test")  # raises ConflictError while one runs
