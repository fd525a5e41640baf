"""Real servers started by tests: an MLflow tracking server and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from mlops_pipeline.serving.contract import free_port


def wait_for_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200, failing early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts: Path,
    app_name: str | None = None,
    artifacts_destination: str | None = None,
) -> Iterator[str]:
    """A real `mlflow server` process on 127.0.0.1; yields its URL. Artifacts go under the
    local dir `artifacts` (which also holds the log), or to `artifacts_destination` (e.g.
    s3://bucket/prefix, proxied by the server as mlflow-artifacts:) when given."""
    port = free_port()
    command = [
        Path(sys.executable).with_name("mlflow").as_posix(),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        artifacts_destination or artifacts.as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    if app_name:
        command += ["--app-name", app_name]
    url = f"http://127.0.0.1:{port}"
    log = artifacts.parent / f"mlflow-server-{port}.log"
    with running(command, dict(os.environ), log, f"{url}/health", timeout=300):
        yield url


@contextmanager
def running(
    command: list[str], env: dict[str, str], log_path: Path, health_url: str, timeout: float
) -> Iterator[None]:
    """Run a server process until the block ends, once `health_url` answers; log to a file."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(health_url, timeout=timeout, process=process)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root, so root runs it as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields its SQLAlchemy URI."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        raise RuntimeError("PostgreSQL's initdb/pg_ctl are not on PATH (.ci/run installs them)")
    data = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(["initdb", "-D", str(data / "db"), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(
        _as_postgres(
            [
                "pg_ctl",
                "-D",
                str(data / "db"),
                "-l",
                str(data / "log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(data / "db"), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME; yields its API URL."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [
        Path(sys.executable).with_name("prefect").as_posix(),
        *("server", "start", "--host", "127.0.0.1", "--port", str(port)),
    ]
    api = f"http://127.0.0.1:{port}/api"
    with running(command, env, home / "prefect-server.log", f"{api}/health", timeout=120):
        try:
            yield api
        finally:
            flush_prefect_services()  # while the server still runs


def flush_prefect_services(timeout: float = 15) -> None:
    """Flush Prefect's process-wide log and event workers, waiting at most `timeout` seconds.

    Each worker holds its queue for the API it started against: the log worker retries its
    backlog against a server a test has since stopped, and the events worker keeps sending to
    its first API. Left alone they leak into later tests of the same process, and `drain_all`
    (over every service of the process) then waited for minutes. Drained services are made
    again on next use, for the API configured then.
    """
    if "prefect" in sys.modules:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout)
