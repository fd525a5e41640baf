"""Bad input gets a 4xx JSON error naming the field or column, never a 5xx or its own payload."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import IRIS_COLUMNS
from tests.serving.conftest import start_server

MARKER = "zq-secret-marker-7781"
GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def records(*rows: dict) -> dict:
    return {"dataframe_records": list(rows)}


CASES = [
    # (id, body bytes, content type, status, code, details that must be present)
    (
        "missing column",
        records({k: v for k, v in GOOD.items() if k != "petal_width"}),
        None,
        400,
        "missing_column",
        {"column": "petal_width"},
    ),
    (
        "wrong type",
        records(GOOD, {**GOOD, "sepal_width": MARKER}),
        None,
        400,
        "wrong_type",
        {"column": "sepal_width", "row": 1, "got": "string"},
    ),
    (
        "bool for double",
        records({**GOOD, "petal_length": True}),
        None,
        400,
        "wrong_type",
        {"column": "petal_length", "got": "boolean"},
    ),
    (
        "extra column",
        records({**GOOD, MARKER: 1}),
        None,
        400,
        "unexpected_column",
        {"column": MARKER},
    ),
    ("empty body", b"", None, 400, "empty_body", {}),
    ("whitespace body", b"  \n", None, 400, "empty_body", {}),
    (
        "malformed json",
        b'{"dataframe_records": [' + MARKER.encode(),
        None,
        400,
        "malformed_json",
        {},
    ),
    ("not utf-8", b'{"inputs": "\xff\xfe"}', None, 400, "malformed_json", {}),
    ("no format key", {"data": [[1, 2, 3, 4]]}, None, 400, "invalid_format", {}),
    ("two format keys", {**records(GOOD), "instances": [GOOD]}, None, 400, "invalid_format", {}),
    ("a list body", [GOOD], None, 400, "invalid_format", {}),
    ("no rows", records(), None, 400, "empty_input", {}),
    (
        "wrong width",
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[1.0, 2.0]]}},
        None,
        400,
        "wrong_width",
        {"row": 0, "expected": 4, "got": 2},
    ),
    (
        "unequal columns",
        {"inputs": {c: [1.0] * (2 if c == "sepal_length" else 1) for c in IRIS_COLUMNS}},
        None,
        400,
        "length_mismatch",
        {},
    ),
    (
        "nested value",
        records({**GOOD, "sepal_length": [1.0]}),
        None,
        400,
        "wrong_type",
        {"column": "sepal_length", "got": "array"},
    ),
    (
        "huge number",
        b'{"dataframe_records": [{"sepal_length": 1e999, "sepal_width": 1, '
        b'"petal_length": 1, "petal_width": 1}]}',
        None,
        422,
        "prediction_failed",
        {},
    ),
    (
        "NaN literal",
        b'{"dataframe_records": [{"sepal_length": NaN, "sepal_width": 1, '
        b'"petal_length": 1, "petal_width": 1}]}',
        None,
        422,
        "prediction_failed",
        {},
    ),
    ("unsupported type", records(GOOD), "application/xml", 415, "unsupported_media_type", {}),
    ("no content type", records(GOOD), "", 415, "unsupported_media_type", {}),
    (
        "latin-1 charset",
        records(GOOD),
        "application/json; charset=latin-1",
        415,
        "unsupported_media_type",
        {},
    ),
    (
        "csv wrong type",
        f"{','.join(IRIS_COLUMNS)}\n1,{MARKER},3,4\n".encode(),
        "text/csv",
        400,
        "wrong_type",
        {"column": "sepal_width", "row": 0},
    ),
    ("csv missing column", b"sepal_length\n1\n", "text/csv", 400, "missing_column", {}),
    ("csv ragged", f"{','.join(IRIS_COLUMNS)}\n1,2\n".encode(), "text/csv", 400, "wrong_width", {}),
    ("csv empty", b"", "text/csv", 400, "invalid_csv", {}),
]


def _send(client: httpx.Client, body, content_type):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json" if content_type is None else content_type}
    if content_type == "":
        headers = {}
    return client.post("/invocations", content=data, headers=headers)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "details"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request_is_a_clear_4xx(http, body, content_type, status, code, details):
    response = _send(http, body, content_type)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "details"}
    assert details.items() <= error["details"].items()
    if "column" in details:
        assert details["column"] in error["message"]
    assert "Traceback" not in response.text
    if MARKER not in details.values():
        assert MARKER not in response.text  # the submitted value is never echoed
    assert response.headers["X-Request-ID"]


def test_unknown_path_and_method_are_json_errors(http):
    assert http.get("/nope").json()["error"]["code"] == "not_found"
    response = http.get("/invocations")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, iris_model_dir):
    tmp = tmp_path_factory.mktemp("limited")
    server = start_server(
        tmp,
        iris_model_dir,
        MLOPS_SERVING_MAX_BODY_BYTES="4000",
        MLOPS_SERVING_MAX_ROWS="5",
        MLOPS_SERVING_EXTRA_COLUMNS="ignore",
    )
    yield server
    assert server.stop() == 0


def test_body_over_limit_is_413(limited_server):
    body = json.dumps(records(*[GOOD] * 100)).encode()
    with httpx.Client(base_url=limited_server.url, timeout=30) as client:
        response = _send(client, body, None)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
        assert response.json()["error"]["details"]["limit"] == 4000

        def chunks():  # no Content-Length: the limit still applies while streaming
            yield body[:3000]
            yield body[3000:]

        streamed = client.post(
            "/invocations", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413


def test_too_many_rows_is_413(limited_server):
    response = httpx.post(
        f"{limited_server.url}/invocations", json=records(*[GOOD] * 6), timeout=30
    )
    assert response.status_code == 413
    assert response.json()["error"]["details"] == {"rows": 6, "limit": 5}


def test_extra_columns_can_be_ignored(limited_server):
    response = httpx.post(
        f"{limited_server.url}/invocations", json=records({**GOOD, "comment": "x"}), timeout=30
    )
    assert response.status_code == 200
    assert response.json() == {"predictions": [0]}
