"""A registered version scores its own reference rows: register -> serve -> score -> same values.

The reference holds every kind of column a frame can (nullable Int64 and boolean, strings with
None, floats with NaN, date-times with NaT, naive and in a time zone, categoricals), each with
missing cells. The rows are sent as JSON records with null, as dataframe_split and as CSV with
empty cells, to a real service; every answer is 200 with the predictions the model gives on the
reference frame itself.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.serving.schema import Column, parse_datetime, to_array

from tests.serving.conftest import Server, start_server
from tests.serving.reference_model import OPTIONAL, REQUIRED, DtypeStrictModel, reference_frame


def register(home: Path, name: str, pickle: Path, reference: pd.DataFrame | str) -> Path:
    """Register `pickle` with `reference` (a frame, or a file through the register flow) in a
    private registry and return the version's model directory."""
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from mlops_pipeline.settings import get_settings
    from mlops_pipeline.tasks import registry
    from mlops_pipeline.tracking import connect

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_HOME", str(home))
        for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
            env.delenv(var, raising=False)
        get_settings.cache_clear()
        try:
            if isinstance(reference, str):
                version = run_flow(
                    register_model, source=str(pickle), name=name, reference_data=reference
                )["version"]
            else:
                source = registry.resolve_source.fn(str(pickle))
                model = registry.load_pickled_model.fn(source.path)
                signature = registry.check_reference_fits.fn(source, reference, model)
                run = registry.log_registration_run.fn(name, source, reference, signature, model)
                version = registry.create_model_version.fn(name, run, {})
            connect()
            return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return reference_frame()


@pytest.fixture(scope="module")
def strict_model(reference) -> DtypeStrictModel:
    return DtypeStrictModel().fit(reference)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory, reference, strict_model) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("strict")
    joblib.dump(strict_model, tmp / "strict.joblib")
    model_dir = register(tmp / "home", "strict", tmp / "strict.joblib", reference)
    server = start_server(tmp, model_dir, MLOPS_SERVING_CAPTURE_URI=str(tmp / "capture"))
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def household(tmp_path_factory) -> tuple[Server, pd.DataFrame, DtypeStrictModel]:
    """The issue's case: Parquet with nullable Int64 `kids` and boolean `owner`, through the
    register flow; the missing cells are in the first rows."""
    tmp = tmp_path_factory.mktemp("household")
    frame = pd.DataFrame(
        {
            "kids": pd.array([None, 2, None, 0, 1, 3] * 20, dtype="Int64"),
            "owner": pd.array([None, True, False, None, True, False] * 20, dtype="boolean"),
            "income": np.arange(120) * 250.0,
        }
    )
    frame.to_parquet(tmp / "reference.parquet", index=False)
    reference = pd.read_parquet(tmp / "reference.parquet")
    model = DtypeStrictModel().fit(reference)
    joblib.dump(model, tmp / "household.joblib")
    model_dir = register(
        tmp / "home", "household", tmp / "household.joblib", str(tmp / "reference.parquet")
    )
    server = start_server(tmp, model_dir)
    yield server, reference, model
    assert server.stop() == 0


def test_registered_parquet_with_nullable_columns_scores_its_first_rows(household):
    server, reference, model = household
    rows = reference.head(3)
    records = _json(rows, "records")
    assert records[0]["kids"] is None and records[0]["owner"] is None
    response = httpx.post(
        f"{server.url}/invocations", json={"dataframe_records": records}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == model.predict(rows).tolist()
    without_owner = [{k: v for k, v in r.items() if k != "owner"} for r in records]
    response = httpx.post(
        f"{server.url}/invocations", json={"dataframe_records": without_owner}, timeout=30
    )
    assert response.status_code == 200, response.text
    expected = model.predict(rows.assign(owner=pd.array([None] * 3, dtype="boolean")))
    assert response.json()["predictions"] == expected.tolist()


def test_signature_marks_columns_with_missing_values_optional(strict_server):
    columns = httpx.get(f"{strict_server.url}/version", timeout=30).json()["columns"]
    assert {c["name"]: c["required"] for c in columns} == {
        **dict.fromkeys(OPTIONAL, False),
        **dict.fromkeys(REQUIRED, True),
    }
    assert {c["name"]: c["type"] for c in columns}["kids"] == "long"


def test_openapi_marks_optional_columns_nullable_and_not_required(strict_server):
    doc = httpx.get(f"{strict_server.url}/openapi.json", timeout=30).json()
    row = doc["components"]["schemas"]["ScoringRow"]
    assert row["required"] == REQUIRED
    # OpenAPI 3.1: null is one of the column's types
    assert all("null" in row["properties"][name]["type"] for name in OPTIONAL)
    assert row["properties"]["rooms"]["type"] == "integer"


def _json(frame: pd.DataFrame, orient: str):
    return json.loads(frame.to_json(orient=orient, date_format="iso", index=False))


@pytest.mark.parametrize("form", ["dataframe_records", "dataframe_split", "csv"])
def test_reference_rows_score_like_the_model(strict_server, reference, strict_model, form):
    if form == "csv":
        body = reference.to_csv(index=False).encode()
        content_type = "text/csv"
    else:
        payload = {form: _json(reference, "records" if form == "dataframe_records" else "split")}
        body, content_type = json.dumps(payload).encode(), "application/json"
    assert _json(reference.head(1), "records")[0]["kids"] is None  # row 0 misses kids and owner
    response = httpx.post(
        f"{strict_server.url}/invocations",
        content=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == strict_model.predict(reference).tolist()


def test_optional_columns_left_out_are_missing_values(strict_server, reference, strict_model):
    records = _json(reference.head(10), "records")
    for record in records:
        del record["kids"], record["owner"]
    response = httpx.post(
        f"{strict_server.url}/invocations", json={"dataframe_records": records}, timeout=30
    )
    assert response.status_code == 200, response.text
    expected = reference.head(10).assign(
        kids=pd.array([None] * 10, dtype="Int64"), owner=pd.array([None] * 10, dtype="boolean")
    )
    assert response.json()["predictions"] == strict_model.predict(expected).tolist()


def test_required_column_still_refuses_null(strict_server):
    records = _json(reference_frame(3), "records")
    records[1]["rooms"] = None
    response = httpx.post(
        f"{strict_server.url}/invocations", json={"dataframe_records": records}, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {
        "column": "rooms",
        "row": 1,
        "expected": "long",
        "got": "null",
    }


def test_time_zones_convert_to_utc_without_warnings(strict_server, reference, strict_model):
    rows = reference.head(4).copy()
    records = _json(rows, "records")
    # the same instants written with other offsets, as clients in other zones send them
    for record, when in zip(records, rows["seen_local"], strict=True):
        if when is not pd.NaT:
            record["seen_local"] = when.tz_convert("America/New_York").isoformat()
    response = httpx.post(
        f"{strict_server.url}/invocations", json={"dataframe_records": records}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == strict_model.predict(rows).tolist()
    assert "no explicit representation of timezones" not in strict_server.log.read_text()


def test_nullable_columns_reach_the_capture_as_nulls(strict_server, reference):
    import pyarrow.dataset as ds

    from tests.serving.conftest import wait_for

    records = _json(reference.head(5), "records")
    response = httpx.post(
        f"{strict_server.url}/invocations", json={"dataframe_records": records}, timeout=30
    )
    request_id = response.headers["X-Request-ID"]
    capture = strict_server.capture / "model=iris"

    def captured():
        if not capture.exists():
            return None
        table = ds.dataset(capture, format="parquet", partitioning="hive").to_table()
        rows = table.filter(ds.field("_request_id") == request_id)
        return rows if rows.num_rows else None

    wait_for(lambda: captured() is not None)
    rows = captured().sort_by("_row")
    assert rows.schema.field("kids").type == "int64"
    assert rows.schema.field("owner").type == "bool"
    assert rows.column("kids").to_pylist() == [r["kids"] for r in records]
    assert rows.column("owner").to_pylist() == [r["owner"] for r in records]
    assert rows.column("kids").to_pylist()[0] is None


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-03-01T10:00:00+01:00", "2024-03-01T09:00:00"),
        ("2024-03-01T10:00:00Z", "2024-03-01T10:00:00"),
        ("2024-03-01 10:00:00-0530", "2024-03-01T15:30:00"),
        ("2024-03-01T10:00:00.123456789+02", "2024-03-01T08:00:00.123456789"),
        ("2024-03-01T10:00", "2024-03-01T10:00:00"),
        ("2024-03-01", "2024-03-01T00:00:00"),
        ("NaT", "NaT"),
    ],
)
def test_parse_datetime_converts_offsets_to_utc_silently(text, utc):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = parse_datetime(text)
        column = to_array(Column("t", "datetime"), [text, None])
    expected = np.datetime64(utc, "ns")
    assert parsed.dtype == column.dtype == np.dtype("datetime64[ns]")
    assert (parsed == expected or np.isnat(expected) and np.isnat(parsed)) and np.isnat(column[1])
    assert column[0] == parsed or np.isnat(column[0])


@pytest.mark.parametrize("text", ["3000-01-01", "1500-01-01T00:00:00Z", "tomorrow", "2024-13-01"])
def test_datetimes_outside_the_ns_range_or_invalid_are_refused(text):
    with pytest.raises(ValueError):
        parse_datetime(text)
