"""The OpenAPI document carries the model signature: column names, types, required."""

from __future__ import annotations

from tests.conftest import IRIS_COLUMNS


def test_request_schema_comes_from_the_signature(http):
    doc = http.get("/openapi.json").json()
    row = doc["components"]["schemas"]["ScoringRow"]
    assert list(row["properties"]) == IRIS_COLUMNS
    assert all(
        p["type"] == ["number", "null"] and p["format"] == "double"
        for p in row["properties"].values()
    )
    assert row["required"] == IRIS_COLUMNS
    assert row["additionalProperties"] is False
    split = doc["components"]["schemas"]["DataframeSplit"]
    assert split["properties"]["dataframe_split"]["properties"]["columns"]["items"]["enum"] == (
        IRIS_COLUMNS
    )
    inputs = doc["components"]["schemas"]["Inputs"]["properties"]["inputs"]["properties"]
    assert inputs["petal_width"]["items"]["format"] == "double"
    body = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]
    refs = [s["$ref"].rsplit("/", 1)[1] for s in body["application/json"]["schema"]["oneOf"]]
    assert refs == ["DataframeSplit", "DataframeRecords", "Instances", "Inputs"]
    assert "text/csv" in body
    responses = doc["paths"]["/invocations"]["post"]["responses"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(responses)


def test_version_reports_the_model(http):
    version = http.get("/version").json()
    assert version["model_name"] == "iris"
    assert version["model_version"] == "1"
    assert [c["name"] for c in version["columns"]] == IRIS_COLUMNS
    assert all(c["required"] for c in version["columns"])


def test_bodies_the_service_accepts_validate_against_its_openapi_31_schema(http):
    """Client generators and validators read /openapi.json as JSON Schema 2020-12 (OpenAPI
    3.1): what the service scores must validate, and what it refuses must not."""
    from jsonschema import Draft202012Validator

    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    body = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    validator = Draft202012Validator({**body["schema"], "components": doc["components"]})
    row = dict.fromkeys(IRIS_COLUMNS, 1.5)
    accepted = [
        {"dataframe_records": [row, {**row, "sepal_width": None}]},
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3, 1.4, None]]}},
        {"instances": [row]},
        {"inputs": {name: [1.0, 2] for name in IRIS_COLUMNS}},
    ]
    for payload in accepted:
        assert list(validator.iter_errors(payload)) == [], payload
        # past the service's checks (400); this model itself cannot score NaN (422)
        status = http.post("/invocations", json=payload).status_code
        assert status == (422 if "None" in str(payload) else 200), payload
    refused = [
        {"dataframe_records": [{**row, "sepal_width": "wide"}]},
        {"dataframe_records": [{**row, "colour": "red"}]},
        {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, "x", 1.4, 0.2]]}},
    ]
    for payload in refused:
        assert list(validator.iter_errors(payload)), payload
        assert http.post("/invocations", json=payload).status_code == 400, payload
