"""The OpenAPI document carries the model signature: column names, types, required."""

from __future__ import annotations

from tests.conftest import IRIS_COLUMNS


def test_request_schema_comes_from_the_signature(http):
    doc = http.get("/openapi.json").json()
    row = doc["components"]["schemas"]["ScoringRow"]
    assert list(row["properties"]) == IRIS_COLUMNS
    assert all(
        p["type"] == "number" and p["format"] == "double" for p in row["properties"].values()
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
