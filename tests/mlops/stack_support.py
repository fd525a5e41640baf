"""Helpers for the `mlops up` tests: the served-flows command, ports taken, processes gone.

`python -m mlops_pipeline.flows.deployments` is what the stack serves. Until that module (and
every flow it serves) imports, `served_flows()` points the stack at this module instead, which
serves one real flow through the same `prefect.serve` (`python -m tests.mlops.stack_support`).
"""

from __future__ import annotations

import importlib
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from mlops_pipeline import stack
from prefect import flow, serve

ROOT = Path(__file__).resolve().parents[2]
STANDIN_DEPLOYMENT = "stack-standin"


def served_flows(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The deployment names the flows component will serve (patching in the stand-in if needed)."""
    try:
        served = importlib.import_module(stack.FLOWS_MODULE)
    except ImportError:
        pass  # not in the tree yet, or the flows it serves are not
    else:
        return {d.name for d in served.served_deployments()}
    monkeypatch.setattr(stack, "FLOWS_MODULE", "tests.mlops.stack_support")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the stack's children import tests.*
    return {STANDIN_DEPLOYMENT}


def record(home: Path, name: str, pid: int, create_time: float, url: str) -> None:
    """Write a state file recording component NAME as process (PID, CREATE_TIME) at URL."""
    component = {
        "name": name,
        "title": name.title(),
        "command": [name],
        "env": {},
        "port": int(url.rsplit(":", 1)[1]),
        "url": url,
        "health_url": f"{url}/health",
        "port_hint": "",
        "pid": pid,
        "create_time": create_time,
        "log_file": str(stack.stack_dir(home) / "logs" / f"{name}.log"),
        "started_at": "2026-01-01T00:00:00Z",
    }
    stack.stack_dir(home).mkdir(parents=True, exist_ok=True)
    stack.state_path(home).write_text(json.dumps({"components": {name: component}}))


def deployment_names(api_url: str) -> set[str]:
    """Names of the deployments the Prefect API at API_URL knows."""
    response = httpx.post(f"{api_url}/deployments/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    return {d["name"] for d in response.json()}


def flow_runs(api_url: str, flow_name: str) -> list[dict]:
    """The flow runs of the flow FLOW_NAME in the Prefect API at API_URL."""
    flows = httpx.post(f"{api_url}/flows/filter", json={}, timeout=30).json()
    ids = {f["id"] for f in flows if f["name"] == flow_name}
    runs = httpx.post(f"{api_url}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
    return [r for r in runs if r["flow_id"] in ids]


def gone(pid: int, timeout: float = 30) -> bool:
    """Whether PID has exited (or is a zombie nobody reaped yet) within TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@contextmanager
def port_taken() -> Iterator[int]:
    """A port something else listens on while the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@flow(name="stack-standin")
def standin() -> str:
    return "served"


if __name__ == "__main__":
    serve(standin.to_deployment(STANDIN_DEPLOYMENT))
