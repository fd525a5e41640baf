"""Scoring code and an ensemble packaged into a real Docker image by `mlops deploy` on the
docker: target, then scored: typed input, combined prediction by hand, user errors as 4xx/5xx
without a trace (the container log keeps it), members listed and protected from deletion."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import docker
import docker.errors
import httpx
import mlflow
import numpy as np
import pytest
from mlops_pipeline.cli import app
from mlops_pipeline.targets.base import get_target
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from tests.docker_support import remove_deployment_objects
from tests.targets.local_support import register_version

NAME = "iris-code-image"
CODE = """
import numpy as np
from pydantic import BaseModel


class Flower(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


def init(model):
    global MODEL
    MODEL = model


def run(data: list[Flower]) -> list[float]:
    import pandas as pd

    if any(f.petal_width < 0 for f in data):
        raise ValueError("petal_width must not be negative")
    if any(f.sepal_width > 50 for f in data):
        raise RuntimeError("hidden internal detail")
    frame = pd.DataFrame([f.model_dump() for f in data])
    return [round(float(p), 6) for p in np.asarray(MODEL.predict(frame))]
"""


def mlops(*args: str, expect: int = 0) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == expect, result.output
    return json.loads(result.stdout)


@pytest.fixture
def images_removed(docker_engine):
    built: list[str] = []
    yield built
    remove_deployment_objects(docker_engine, NAME)
    for tag in built:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_engine.images.remove(tag, force=True, noprune=True)


@pytest.mark.e2e
@pytest.mark.docker
def test_scoring_code_and_ensemble_in_a_docker_image(
    docker_build_env,
    registered_model,
    iris_estimator,
    iris_frame,
    iris_features,
    tmp_path: Path,
    images_removed: list[str],
) -> None:
    from mlflow.models import infer_signature

    weak = LogisticRegression(C=0.01, max_iter=500).fit(iris_features, iris_frame["label"])
    signature = infer_signature(iris_features, weak.predict(iris_features))
    mlflow.sklearn.save_model(weak, tmp_path / "weak", signature=signature)
    weak_version = register_version(tmp_path / "weak", name="iris-weak")
    code = tmp_path / "score.py"
    code.write_text(CODE)

    deployed = mlops(
        "deploy", "models:/iris/1", "--target", "docker:", "--name", NAME,
        "--scoring-code", str(code), "--member", f"models:/iris-weak/{weak_version}:3",
        "--combiner", "weighted_mean",
    )  # fmt: skip
    images_removed.append(deployed["image"])
    assert deployed["image"].startswith("mlops/iris:1-")
    endpoint = deployed["endpoint_url"]

    rows = iris_features.iloc[::15]
    scored = httpx.post(f"{endpoint}/invocations", json=rows.to_dict("records"), timeout=30)
    assert scored.status_code == 200, scored.text
    by_hand = (iris_estimator.predict(rows) + 3 * weak.predict(rows)) / 4
    assert np.allclose(scored.json()["predictions"], by_hand, atol=1e-6)

    row = iris_features.iloc[0].to_dict()
    rejected = httpx.post(f"{endpoint}/invocations", json=[{**row, "petal_width": -1}])
    assert rejected.status_code == 400
    assert rejected.json()["error"]["code"] == "scoring_code_rejected"
    failed = httpx.post(f"{endpoint}/invocations", json=[{**row, "sepal_width": 99}])
    assert failed.status_code == 500 and "hidden internal detail" not in failed.text
    assert "Traceback" not in rejected.text + failed.text
    log = get_target("docker:").logs(NAME, tail=200)
    assert "Traceback" in log and "hidden internal detail" in log

    version = httpx.get(f"{endpoint}/version", timeout=30).json()
    assert version["scoring_code"] == "score.py"
    assert [(m["model_name"], m["model_version"], m["weight"]) for m in version["members"]] == [
        ("iris", "1", 1.0),
        ("iris-weak", weak_version, 3.0),
    ]
    refused = mlops("models", "delete", "iris-weak", "--version", weak_version, expect=4)
    assert refused["error"]["code"] == "in_use" and NAME in refused["error"]["message"]
    mlops("undeploy", NAME)
    assert mlops("models", "delete", "iris-weak", "--version", weak_version)["deleted_versions"]
