"""Fuzzed requests (hypothesis): whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import IRIS_COLUMNS

FORMATS = ["dataframe_split", "dataframe_records", "instances", "inputs", "params", "data"]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
names = st.sampled_from([*IRIS_COLUMNS, "extra", ""])
row_dicts = st.dictionaries(names, values, max_size=6)
payloads = st.one_of(
    values,
    st.dictionaries(st.sampled_from(FORMATS), values, max_size=3),
    st.builds(lambda rows: {"dataframe_records": rows}, st.lists(row_dicts, max_size=5)),
    st.builds(
        lambda rows: {"instances": rows},
        st.lists(row_dicts | st.lists(values, max_size=5), max_size=5),
    ),
    st.builds(lambda cols: {"inputs": cols}, st.dictionaries(names, values, max_size=6)),
    st.builds(
        lambda cols, data: {"dataframe_split": {"columns": cols, "data": data}},
        st.lists(names, max_size=5) | values,
        st.lists(st.lists(values, max_size=5), max_size=5) | values,
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=utf-16",
        "application/json; format=pandas-split",
        "text/csv",
        "text/plain",
        "",
    ]
)


def assert_not_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"}
        assert "Traceback" not in response.text


@FUZZ
@given(payload=payloads)
def test_fuzzed_json_payloads_never_5xx(http, payload):
    body = json.dumps(payload).encode()  # allow_nan: NaN/Infinity literals as MLflow writes
    assert_not_5xx(
        http.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    )


@FUZZ
@given(
    body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode), content_type=content_types
)
def test_fuzzed_bytes_never_5xx(http, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_not_5xx(http.post("/invocations", content=body, headers=headers))


@FUZZ
@given(
    header=st.lists(st.sampled_from(IRIS_COLUMNS + ["x", ""]), max_size=6),
    rows=st.lists(
        st.lists(st.text(alphabet="0123456789.-eEnaNx,\"' ", max_size=6), max_size=6), max_size=4
    ),
)
def test_fuzzed_csv_never_5xx(http, header, rows):
    body = "\n".join([",".join(header), *(",".join(r) for r in rows)]).encode()
    assert_not_5xx(http.post("/invocations", content=body, headers={"Content-Type": "text/csv"}))


@FUZZ
@given(
    payload=values
    | st.dictionaries(st.sampled_from(["request_id", "label", "row", "feedback"]), values)
)
def test_fuzzed_feedback_never_5xx(http, payload):
    body = json.dumps(payload).encode()
    assert_not_5xx(
        http.post("/feedback", content=body, headers={"Content-Type": "application/json"})
    )
