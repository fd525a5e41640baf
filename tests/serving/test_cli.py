"""`mlops serve` (a models:/ URI from the project registry) and `mlops predict`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
from mlops_pipeline.cli import app
from mlops_pipeline.settings import get_settings
from typer.testing import CliRunner

from tests.serving.conftest import REPO, free_port

runner = CliRunner()


def test_predict_csv_and_json(iris_server, iris_features, tmp_path):
    csv_file = tmp_path / "rows.csv"
    iris_features.head(3).to_csv(csv_file, index=False)
    result = runner.invoke(app, ["predict", iris_server.url, "--input", str(csv_file), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["predictions"] == [0, 0, 0] and len(out["request_id"]) == 32

    json_file = tmp_path / "rows.json"
    json_file.write_text(json.dumps(iris_features.head(2).to_dict(orient="records")))
    result = runner.invoke(app, ["predict", iris_server.url, "--input", str(json_file), "--json"])
    assert json.loads(result.stdout)["predictions"] == [0, 0]


def test_predict_bad_rows_exit_2_with_the_column(iris_server, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"sepal_length": 1.0}]))
    result = runner.invoke(app, ["predict", iris_server.url, "--input", str(bad), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "invalid_input" and error["details"]["column"] == "sepal_width"


def test_predict_unreachable_and_missing_file(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("a\n1\n")
    url = f"http://127.0.0.1:{free_port()}"
    assert runner.invoke(app, ["predict", url, "--input", str(rows)]).exit_code == 6
    missing = runner.invoke(app, ["predict", url, "--input", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 3


def test_serve_rejects_bad_options(tmp_path, mlops_home):
    missing = runner.invoke(app, ["serve", str(tmp_path), "--json"])
    assert missing.exit_code == 3 and "MLmodel" in missing.output
    rate = runner.invoke(app, ["serve", str(tmp_path), "--sample-rate", "2"])
    assert rate.exit_code == 2
    unknown = runner.invoke(app, ["serve", "models:/does-not-exist/1"])
    assert unknown.exit_code == 3


def test_serve_registered_model(mlops_home, iris_estimator, iris_features, tmp_path):
    """`mlops serve models:/iris@champion` resolves against the project registry."""
    from mlflow.models import infer_signature

    settings = get_settings()
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    signature = infer_signature(iris_features, iris_estimator.predict(iris_features))
    mlflow.sklearn.log_model(
        iris_estimator, name="model", signature=signature, registered_model_name="iris-cli"
    )
    mlflow.MlflowClient().set_registered_model_alias("iris-cli", "champion", "1")

    port = free_port()
    capture = tmp_path / "capture"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    mlops = Path(sys.executable).parent / "mlops"
    cmd = [str(mlops), "serve", "models:/iris-cli@champion", "--port", str(port), "--json",
           "--capture-dir", str(capture)]  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        version = httpx.get(f"http://127.0.0.1:{port}/version", timeout=10).json()
        assert (version["model_name"], version["model_version"]) == ("iris-cli", "1")
        assert version["model_uri"] == "models:/iris-cli/1"
        rows = {"dataframe_records": iris_features.head(1).to_dict(orient="records")}
        scored = httpx.post(f"http://127.0.0.1:{port}/invocations", json=rows, timeout=10)
        assert scored.json() == {"predictions": [0]}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        log.close()
    assert json.loads(proc.stdout.read())["url"] == f"http://127.0.0.1:{port}"
    assert list(capture.glob("model=iris-cli/version=1/date=*/part-*.parquet"))
