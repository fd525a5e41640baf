"""A real scoring service in a uvicorn subprocess, plus helpers to read what it captured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.dataset as ds
import pytest
import uvicorn
from mlops_pipeline.serving.contract import free_port
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import IRIS_COLUMNS

REPO = Path(__file__).resolve().parents[2]


class ThreadServer:
    """An ASGI app served by uvicorn on a thread, on a free 127.0.0.1 port, until `stop`."""

    def __init__(self, app, **config) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", **config)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    capture: Path | None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def metrics(self, headers: dict | None = None) -> dict[tuple[str, frozenset], float]:
        text = httpx.get(f"{self.url}/metrics", headers=headers, timeout=10).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, headers: dict | None = None, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(
            v for (n, ls), v in self.metrics(headers).items() if n == name and want <= set(ls)
        )


def start_server(
    tmp: Path, model_dir: Path, port: int | None = None, *, wait: bool = True, **env: str
) -> Server:
    """Start the scoring service on a free port and wait (bounded) until /ready is 200.

    With wait=False it returns at once, before the service answers anything.
    """
    port = port or free_port()
    log = tmp / f"server-{port}.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
        "MLOPS_SERVING_MODEL_URI": str(model_dir),
        "MLOPS_SERVING_PORT": str(port),
        "MLOPS_SERVING_MODEL_NAME": "iris",
        "MLOPS_SERVING_MODEL_VERSION": "1",
        "MLOPS_SERVING_CAPTURE_FLUSH_SECONDS": "0.2",
        "MLOPS_SERVING_CAPTURE_SPOOL_DIR": str(tmp / f"spool-{port}"),
        "MLOPS_SERVING_SHUTDOWN_TIMEOUT": "15",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_pipeline.serving"],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=out,
        )
    capture = env.get("MLOPS_SERVING_CAPTURE_URI")
    server = Server(f"http://127.0.0.1:{port}", proc, log, Path(capture) if capture else None)
    if not wait:
        return server
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready in 120 s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def iris_server(tmp_path_factory: pytest.TempPathFactory, iris_model_dir: Path) -> Iterator[Server]:
    """One capturing server shared by read-only tests (formats, validation, fuzz, metrics)."""
    tmp = tmp_path_factory.mktemp("iris-server")
    server = start_server(tmp, iris_model_dir, MLOPS_SERVING_CAPTURE_URI=str(tmp / "capture"))
    yield server
    assert server.stop() == 0


@pytest.fixture
def http(iris_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=iris_server.url, timeout=30) as client:
        yield client


def read_capture(root: Path) -> pd.DataFrame:
    """Every scored-request row the service committed under <root>/model=iris."""
    path = root / "model=iris"
    if not path.exists():
        return pd.DataFrame(columns=["_request_id", "_row", "_status"])
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()


def read_feedback(root: Path) -> pd.DataFrame:
    dataset = ds.dataset(root / "feedback" / "model=iris", format="parquet", partitioning="hive")
    return dataset.to_table().to_pandas()


def wait_for(predicate, timeout: float = 30, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except httpx.TransportError:  # a refused or slow probe means "not yet"
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def split_payload(frame: pd.DataFrame) -> dict:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


__all__ = ["IRIS_COLUMNS"]


@dataclass
class Sent:
    request_id: str | None
    status: int | None
    rows: int
    predictions: list | None


def run_load(
    url: str,
    bodies: list[tuple[bytes, int]],
    *,
    concurrency: int = 8,
    after: tuple[int, callable] | None = None,
) -> list[Sent]:
    """POST every body once from `concurrency` threads; `after=(n, fn)` calls fn after n answers."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()
    lock = threading.Lock()
    answered = [0]

    def send(item: tuple[bytes, int]) -> Sent:
        body, rows = item
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=15)
        try:
            r = client.post(
                f"{url}/invocations", content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError:
            return Sent(None, None, rows, None)
        with lock:
            answered[0] += 1
            fire = after is not None and answered[0] == after[0]
        if fire:
            after[1]()
        preds = r.json().get("predictions") if r.status_code == 200 else None
        return Sent(r.headers.get("X-Request-ID"), r.status_code, rows, preds)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(send, bodies))
