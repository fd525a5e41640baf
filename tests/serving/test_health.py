"""Health paths: /ping and /ready mean "ready to score", /health/live only "the process serves".

MLflow's ScoringServerClient.wait_server_ready() (and SageMaker) poll /ping and then score, so
/ping must not answer 200 while the model is still loading.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from tests.serving.conftest import Server, start_server

LOAD_SECONDS = 5
SLOW_MODEL = f"""
import time

import mlflow
import pandas as pd


class SlowToLoad(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        time.sleep({LOAD_SECONDS})

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return model_input["x"] * 2


mlflow.models.set_model(SlowToLoad())
"""


@pytest.fixture
def slow_server(tmp_path) -> Iterator[Server]:
    code = tmp_path / "slow_model.py"
    code.write_text(SLOW_MODEL)
    model_dir = tmp_path / "slow"
    with warnings.catch_warnings():  # MLflow asks for an input example
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(
            model_dir,
            python_model=str(code),
            signature=ModelSignature(Schema([ColSpec("double", "x")])),
        )
    server = start_server(tmp_path, model_dir, wait=False)
    yield server
    server.stop()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def test_ping_waits_for_the_model_and_live_does_not(slow_server):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    deadline = time.monotonic() + 60
    while _status(f"{slow_server.url}/health/live") != 200:
        assert time.monotonic() < deadline, slow_server.log.read_text()
        assert slow_server.proc.poll() is None, slow_server.log.read_text()
        time.sleep(0.1)
    # the process serves HTTP, the model is still sleeping in load_context
    assert _status(f"{slow_server.url}/ping") == 503
    assert httpx.get(f"{slow_server.url}/ping").json()["error"]["code"] == "not_ready"
    assert _status(f"{slow_server.url}/ready") == 503

    port = int(slow_server.url.rsplit(":", 1)[1])
    client = ScoringServerClient("127.0.0.1", port)
    client.wait_server_ready(timeout=120, scoring_server_proc=slow_server.proc)
    result = client.invoke(pd.DataFrame({"x": [1.0, 2.5]}))
    assert result.get_predictions().iloc[:, 0].tolist() == [2.0, 5.0]
    assert _status(f"{slow_server.url}/ready") == 200
    assert _status(f"{slow_server.url}/health/live") == 200


def test_a_model_that_fails_to_load_is_never_ready_but_live(tmp_path):
    server = start_server(tmp_path, tmp_path / "no-such-model", wait=False)
    try:
        deadline = time.monotonic() + 60
        while _status(f"{server.url}/health/live") != 200:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/ping").json()["error"]["code"] != "model_load_failed":
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        assert _status(f"{server.url}/ping") == 503
        assert _status(f"{server.url}/ready") == 503
        assert _status(f"{server.url}/health/live") == 200
    finally:
        server.stop()
