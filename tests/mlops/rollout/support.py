"""Challenger models for rollout tests, and clients that score through a stable endpoint.

The models are MLflow models-from-code with the iris signature: self-contained files the scoring
service loads without importing the tests.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy

from tests.targets.local_support import IRIS_ROW, register_version

# Answers like the iris model on IRIS_ROW ([0, 2]): class 2 for long petals, else 0.
_PREDICT = 'np.where(model_input["petal_length"] > 2.5, 2, 0)'
BEHAVIOURS = {
    # the same answers, as fast as the champion
    "same": f"return {_PREDICT}",
    # raises on rows with sepal_length > 6.5: IRIS_ROW's second row, so every IRIS_ROW fails
    "faulty": (
        'if (model_input["sepal_length"] > 6.5).any():\n'
        '            raise ValueError("challenger bug on long sepals")\n'
        f"        return {_PREDICT}"
    ),
    # the same answers, 80 ms late
    "slow": f"time.sleep(0.08)\n        return {_PREDICT}",
    # class 1 for every row: disagrees with the champion on IRIS_ROW's both rows
    "ones": "return np.ones(len(model_input), dtype=int)",
}

CODE = """
import time

import mlflow
import numpy as np


class Challenger(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        {body}


mlflow.models.set_model(Challenger())
"""


def register_behaviour(
    tmp_path: Path, behaviour: str, iris_features: pd.DataFrame, model: str = "iris"
) -> str:
    """Register a challenger model of `behaviour` (BEHAVIOURS) as the next version of
    `model`."""
    from mlflow.models import infer_signature

    code = tmp_path / f"{behaviour}_model.py"
    code.write_text(CODE.format(body=BEHAVIOURS[behaviour]))
    model_dir = tmp_path / f"{behaviour}-model"
    signature = infer_signature(iris_features, pd.Series([0] * len(iris_features)))
    with warnings.catch_warnings():  # MLflow asks for an input example
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(model_dir, python_model=str(code), signature=signature)
    return register_version(model_dir, name=model)


class VersionClient(threading.Thread):
    """Scores IRIS_ROW through an endpoint in a loop, recording per request the client id it
    sent (in `header`), the status, the answer and the X-Model-Version that served it.

    Bounded in count and time, so a stuck deployment cannot make a test run forever.
    """

    def __init__(
        self,
        endpoint: str,
        header: str | None = None,
        clients: int = 1,
        max_requests: int = 20_000,
        max_seconds: float = 180.0,
    ) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.header, self.clients = endpoint, header, clients
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.seen: list[tuple[str, int, str | None, object]] = []
        self.errors: list[str] = []
        self._done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        n = 0
        with httpx.Client(timeout=30) as client:
            while (
                not self._done.is_set()
                and n < self.max_requests
                and time.monotonic() - started < self.max_seconds
            ):
                who = f"client-{n % self.clients}"
                n += 1
                headers = {self.header: who} if self.header else {}
                try:
                    r = client.post(f"{self.endpoint}/invocations", json=IRIS_ROW, headers=headers)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                body = r.json() if r.status_code == 200 else r.text[:200]
                self.seen.append((who, r.status_code, r.headers.get("x-model-version"), body))

    def stop(self) -> None:
        self._done.set()
        self.join(30)

    @property
    def failures(self) -> list:
        return self.errors + [s for s in self.seen if s[1] != 200]


@pytest.fixture
def fast_rollout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge after 20 requests per route; capture files flushed every 0.5 s."""
    monkeypatch.setenv("MLOPS_ROLLOUT_MIN_REQUESTS", "20")
    monkeypatch.setenv("MLOPS_ROLLOUT_CAPTURE_SETTLE_SECONDS", "1.5")
    monkeypatch.setenv("MLOPS_SERVING_CAPTURE_FLUSH_SECONDS", "0.5")


@pytest.fixture
def iris_prod(
    registered_model: dict, mlops_home: Path, fast_rollout: None, undeploy_all: None
) -> Iterator[dict]:
    """`iris-prod` on local: serving iris v1, capturing to $MLOPS_HOME/captures/iris-prod."""
    capture = mlops_home / "captures" / "iris-prod"
    yield run_flow(
        deploy,
        model_uri="models:/iris/1",
        name="iris-prod",
        target="local:",
        capture_uri=str(capture),
        ready_timeout=90.0,
    )
