"""Helpers for deploy tests: more model versions, a broken one, and a load client."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.tracking import connect

IRIS_ROW = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
    }
}


def register_version(model_dir: Path, name: str = "iris") -> str:
    """Register `model_dir` as the next version of `name`; returns the version."""
    return run_flow(register_model, source=str(model_dir), name=name)["version"]


def break_version(name: str, version: str) -> None:
    """Corrupt the stored MLmodel of a version, so a scoring service cannot load it."""
    client = connect()
    source = client.get_model_version_download_uri(name, version)
    if source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        model_dir = Path(urlparse(client.get_run(run_id).info.artifact_uri).path) / path
    else:
        assert source.startswith("file://"), source
        model_dir = Path(urlparse(source).path)
    (model_dir / "MLmodel").write_text("flavors: [not yaml\n")


def served_version(endpoint: str) -> str:
    return str(httpx.get(f"{endpoint}/version", timeout=10).json()["model_version"])


def scored_version(endpoint: str) -> str:
    """The version that answers a scoring call (its X-Model-Version): what a canary's routes
    decide, where GET /version always goes to the pod's own champion container."""
    response = httpx.post(f"{endpoint}/invocations", json=IRIS_ROW, timeout=10)
    return response.headers["x-model-version"]


class LoadClient(threading.Thread):
    """Scores continuously through a stable endpoint and counts failed requests.

    Bounded in count and in time, so a stuck deployment cannot make a test run forever.
    """

    def __init__(self, endpoint: str, max_requests: int = 20_000, max_seconds: float = 240.0):
        super().__init__(daemon=True)
        self.endpoint, self.max_requests, self.max_seconds = endpoint, max_requests, max_seconds
        self.ok = 0
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self._done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            while (
                not self._done.is_set()
                and self.ok + len(self.failures) < self.max_requests
                and time.monotonic() - started < self.max_seconds
            ):
                try:
                    response = client.post(f"{self.endpoint}/invocations", json=IRIS_ROW)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code == 200 and len(response.json()["predictions"]) == 2:
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")

    def stop(self) -> None:
        self._done.set()
        self.join(30)
