"""Models and traffic for redeploy tests: a weak champion, a better challenger, one that fails
under load, one that is slow, a trainer entry point, and a load client that mixes in rows a
model may refuse."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def weak_model(frame: pd.DataFrame) -> object:
    """A logistic regression that sees only sepal_width: about 55 % accurate on iris."""
    select = ColumnTransformer([("w", "passthrough", ["sepal_width"])])
    return make_pipeline(select, LogisticRegression(max_iter=500)).fit(
        frame[COLUMNS], frame["label"]
    )


def strong_model(frame: pd.DataFrame) -> object:
    return LogisticRegression(max_iter=500).fit(frame[COLUMNS], frame["label"])


def fragile_model(frame: pd.DataFrame) -> object:
    """Accurate on iris, but log() of a non-positive input makes its predict raise: it passes
    the gate and fails on live rows with a zero or negative measurement."""
    return make_pipeline(FunctionTransformer(np.log), LogisticRegression(max_iter=500)).fit(
        frame[COLUMNS], frame["label"]
    )


def slow_model(frame: pd.DataFrame) -> object:
    """Accurate on iris and honest, but a forest of 1,000 trees: about 90 ms a prediction where
    the logistic regressions take 1 ms. It passes the gate and regresses p95 latency."""
    return RandomForestClassifier(n_estimators=1000, max_depth=3, n_jobs=1, random_state=0).fit(
        frame[COLUMNS], frame["label"]
    )


def train(data: pd.DataFrame) -> object:
    """The MLOPS_TRAINER entry point tests use: fit the strong model on the training data."""
    return LogisticRegression(max_iter=500).fit(data[COLUMNS], data["label"])


def register_pickle(
    model: object, tmp: Path, reference_csv: Path, alias: str | None = None, name: str = "iris"
) -> str:
    """Register `model` as a pickle with labelled reference data; returns its version."""
    path = tmp / f"model-{time.monotonic_ns()}.joblib"
    joblib.dump(model, path)
    registered = run_flow(
        register_model,
        source=str(path),
        name=name,
        reference_data=str(reference_csv),
        alias=alias,
    )
    return registered["version"]


class MixedLoad(threading.Thread):
    """Single-row requests through a stable endpoint; every `bad_every`-th row has a zero
    sepal_width (valid input: a robust model scores it). Bounded in count and time.

    `failures` are requests that got no answer (connection errors); `statuses` counts answers.
    """

    def __init__(
        self,
        endpoint: str,
        bad_every: int = 0,
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
    ):
        super().__init__(daemon=True)
        self.endpoint, self.bad_every = endpoint, bad_every
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.failures: list[str] = []
        self.statuses: dict[int, int] = {}
        self._done = threading.Event()

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            while (
                not self._done.is_set()
                and self.sent < self.max_requests
                and time.monotonic() - started < self.max_seconds
            ):
                bad = self.bad_every and (self.sent % self.bad_every == 0)
                row = [5.1, 0.0 if bad else 3.5, 1.4, 0.2]
                body = {"dataframe_split": {"columns": COLUMNS, "data": [row]}}
                try:
                    response = client.post(f"{self.endpoint}/invocations", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1

    def stop(self) -> None:
        self._done.set()
        self.join(30)
