"""Every MLflow scoring format gives the same predictions as mlflow.pyfunc on the same rows."""

from __future__ import annotations

import json

import httpx
import mlflow
import pandas as pd
import pytest

from tests.conftest import IRIS_COLUMNS
from tests.serving.conftest import split_payload


@pytest.fixture(scope="module")
def rows(iris_features: pd.DataFrame) -> pd.DataFrame:
    return iris_features.iloc[::7].reset_index(drop=True)  # all three classes


@pytest.fixture(scope="module")
def expected(iris_model_dir, rows) -> list:
    return mlflow.pyfunc.load_model(str(iris_model_dir)).predict(rows).tolist()


def payloads(rows: pd.DataFrame) -> dict[str, dict]:
    records = rows.to_dict(orient="records")
    return {
        "dataframe_split": split_payload(rows),
        "dataframe_split_with_index": {"dataframe_split": rows.to_dict(orient="split")},
        "dataframe_records": {"dataframe_records": records},
        "instances_records": {"instances": records},
        "instances_rows": {"instances": rows.values.tolist()},
        "inputs_columns": {"inputs": {c: rows[c].tolist() for c in IRIS_COLUMNS}},
        "inputs_records": {"inputs": records},
        "with_params": {**split_payload(rows), "params": {}},
    }


@pytest.mark.parametrize(
    "name",
    [
        "dataframe_split",
        "dataframe_split_with_index",
        "dataframe_records",
        "instances_records",
        "instances_rows",
        "inputs_columns",
        "inputs_records",
        "with_params",
    ],
)
def test_json_formats_match_pyfunc(http, rows, expected, name):
    response = http.post("/invocations", json=payloads(rows)[name])
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    assert len(response.headers["X-Request-ID"]) == 32


def test_csv_matches_pyfunc(http, rows, expected):
    body = rows.to_csv(index=False)
    response = http.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


def test_byte_order_mark_is_ignored(http, rows, expected):
    """Spreadsheets and Windows tools start UTF-8 text with U+FEFF."""
    csv_body = "\ufeff" + rows.to_csv(index=False)
    assert csv_body.encode()[:3] == b"\xef\xbb\xbf"
    response = http.post("/invocations", content=csv_body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    json_body = b"\xef\xbb\xbf" + json.dumps(split_payload(rows)).encode()
    response = http.post(
        "/invocations", content=json_body, headers={"Content-Type": "application/json"}
    )
    assert response.json() == {"predictions": expected}


def test_charset_parameter_accepted(http, rows, expected):
    response = http.post(
        "/invocations",
        content=json.dumps(split_payload(rows)),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert response.json() == {"predictions": expected}


def test_integers_accepted_for_double_columns(http, iris_model_dir):
    row = {"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 0}
    response = http.post("/invocations", json={"dataframe_records": [row]})
    direct = mlflow.pyfunc.load_model(str(iris_model_dir)).predict(
        pd.DataFrame([row]).astype(float)
    )
    assert response.json() == {"predictions": direct.tolist()}


def test_mlflow_built_payload(iris_server, rows, expected):
    """The body MLflow itself builds for serving (convert_input_example_to_serving_input)."""
    from mlflow.models.utils import convert_input_example_to_serving_input

    response = httpx.post(
        f"{iris_server.url}/invocations",
        content=convert_input_example_to_serving_input(rows),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.json() == {"predictions": expected}
