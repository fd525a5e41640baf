"""Custom scoring code (init/run) in a real scoring service: typed and untyped, its OpenAPI
schema, and user errors answered as 4xx/5xx without a trace (the trace stays in the log)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import IRIS_COLUMNS
from tests.serving.conftest import Server, start_server

TYPED_CODE = """
from pydantic import BaseModel, Field
import pandas as pd

class Flower(BaseModel):
    sepal_length: float = Field(gt=0)
    sepal_width: float
    petal_length: float
    petal_width: float

class Answer(BaseModel):
    species: int
    name: str

NAMES = ["setosa", "versicolor", "virginica"]

def init(model):
    global MODEL
    MODEL = model

def run(data: list[Flower]) -> list[Answer]:
    frame = pd.DataFrame([f.model_dump() for f in data])
    if (frame["petal_width"] > 50).any():
        raise KeyError("petal_width out of range")
    if (frame["sepal_width"] > 50).any():
        raise RuntimeError("internal detail that must stay in the log")
    return [Answer(species=int(p), name=NAMES[int(p)]) for p in MODEL.predict(frame)]
"""

UNTYPED_CODE = """
import numpy as np

def init():
    pass

def run(data, model):
    # post-processing: class probabilities are not needed, the label doubled is
    return np.asarray(model.predict(data)) * 2
"""


@pytest.fixture(scope="module")
def typed_server(
    tmp_path_factory: pytest.TempPathFactory, iris_model_dir: Path
) -> tuple[Server, Path]:
    tmp = tmp_path_factory.mktemp("typed-code")
    code = tmp / "score.py"
    code.write_text(TYPED_CODE)
    server = start_server(
        tmp,
        iris_model_dir,
        MLOPS_SERVING_SCORING_CODE=str(code),
        MLOPS_SERVING_CAPTURE_URI=str(tmp / "capture"),
    )
    yield server, tmp / "capture"
    assert server.stop() == 0


def test_typed_code_scores_validates_and_publishes_its_schema(
    typed_server: tuple[Server, Path], iris_estimator, iris_features
) -> None:
    server, _ = typed_server
    rows = iris_features.iloc[[0, 60, 120]]
    answer = httpx.post(f"{server.url}/invocations", json=rows.to_dict("records"), timeout=30)
    assert answer.status_code == 200, answer.text
    expected = [int(p) for p in iris_estimator.predict(rows)]
    names = ["setosa", "versicolor", "virginica"]
    assert answer.json() == {"predictions": [{"species": p, "name": names[p]} for p in expected]}

    invalid = httpx.post(f"{server.url}/invocations", json=[{"sepal_length": -1}], timeout=30)
    assert invalid.status_code == 400
    error = invalid.json()["error"]
    assert error["code"] == "invalid_input"
    locations = {tuple(e["loc"]) for e in error["details"]["errors"]}
    assert ("0", "sepal_length") in locations and ("0", "petal_width") in locations

    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    post = schema["paths"]["/invocations"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"type": "array", "items": {"$ref": "#/components/schemas/Flower"}}
    flower = schema["components"]["schemas"]["Flower"]
    assert set(flower["properties"]) == set(IRIS_COLUMNS)
    assert flower["properties"]["sepal_length"]["exclusiveMinimum"] == 0
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["properties"]["predictions"]["items"] == {"$ref": "#/components/schemas/Answer"}
    version = httpx.get(f"{server.url}/version", timeout=30).json()
    assert version["scoring_code"] == "score.py" and version["typed_input"] is True


def test_mlops_predict_sends_typed_code_its_own_json(
    typed_server: tuple[Server, Path], iris_estimator, iris_features, tmp_path: Path
) -> None:
    """`mlops predict` sends a typed run() the JSON file as it is, and CSV rows as objects."""
    import json

    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    server, _ = typed_server
    rows = iris_features.iloc[[0, 60, 120]]
    expected = [int(p) for p in iris_estimator.predict(rows)]
    as_json, as_csv = tmp_path / "rows.json", tmp_path / "rows.csv"
    as_json.write_text(json.dumps(rows.to_dict("records")))
    rows.to_csv(as_csv, index=False)
    for path in (as_json, as_csv):
        result = CliRunner().invoke(app, ["predict", server.url, "--input", str(path), "--json"])
        assert result.exit_code == 0, result.output
        assert [p["species"] for p in json.loads(result.stdout)["predictions"]] == expected
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"sepal_length": -1}]))
    result = CliRunner().invoke(app, ["predict", server.url, "--input", str(bad), "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["code"] == "invalid_input"


def test_user_errors_answer_by_type_without_trace(
    typed_server: tuple[Server, Path], iris_features
) -> None:
    server, _ = typed_server
    row = iris_features.iloc[0].to_dict()
    rejected = httpx.post(
        f"{server.url}/invocations", json=[{**row, "petal_width": 99.0}], timeout=30
    )
    assert rejected.status_code == 400
    assert rejected.json()["error"]["code"] == "scoring_code_rejected"
    assert "KeyError" in rejected.json()["error"]["message"]

    failed = httpx.post(
        f"{server.url}/invocations", json=[{**row, "sepal_width": 99.0}], timeout=30
    )
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "scoring_code_failed"
    for answer in (rejected, failed):
        assert "Traceback" not in answer.text and "score.py" not in answer.text
    assert "internal detail" not in failed.text

    log = server.log.read_text()
    assert "Traceback" in log and "internal detail that must stay in the log" in log
    assert 'raise KeyError("petal_width out of range")' in log


def test_untyped_code_gets_the_checked_frame_and_the_model(
    tmp_path: Path, iris_model_dir: Path, iris_estimator, iris_features
) -> None:
    code = tmp_path / "double.py"
    code.write_text(UNTYPED_CODE)
    server = start_server(tmp_path, iris_model_dir, MLOPS_SERVING_SCORING_CODE=str(code))
    try:
        rows = iris_features.iloc[[0, 100]]
        answer = httpx.post(
            f"{server.url}/invocations",
            json={"dataframe_records": rows.to_dict("records")},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [int(p) * 2 for p in iris_estimator.predict(rows)]}
        # the model's signature still checks the input before run() sees it
        wrong = httpx.post(
            f"{server.url}/invocations", json={"dataframe_records": [{"x": 1}]}, timeout=30
        )
        assert wrong.status_code == 400
    finally:
        assert server.stop() == 0
