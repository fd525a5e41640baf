"""The local target with real processes: supervisor, proxy and scoring services."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlops_pipeline.errors import ConflictError, DeploymentError, NotFoundError
from mlops_pipeline.targets import DeployConfig, DeploymentStatus, ModelRef, get_target
from mlops_pipeline.targets.local import LocalTarget
from mlops_pipeline.targets.local_protocol import DeploymentFiles, SupervisorState, pid_alive
from mlops_pipeline.targets.local_supervisor import LIVENESS_PERIOD

from tests.targets.local_support import IRIS_ROW, break_version, register_version, served_version

FAST = DeployConfig(ready_timeout=90, drain_timeout=10)


@pytest.fixture
def target(mlops_home: Path):
    target = get_target("local:")
    yield target
    for deployment in target.list():
        target.delete(deployment.name)


def state(target: LocalTarget, name: str) -> dict:
    return json.loads((target.root / name / "state.json").read_text())


def all_pids(target: LocalTarget, name: str) -> list[int]:
    current = state(target, name)
    control = json.loads((target.root / name / "control.json").read_text())
    return [control["pid"], current["proxy"]["pid"], current["active"]["pid"]]


def environ_of(pid: int) -> dict[str, str]:
    """The environment a running process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:  # a refused or slow probe means "not yet"
            pass
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_lifecycle_create_predict_restart_update_delete(
    target: LocalTarget, registered_model: dict, iris_model_dir: Path, mlops_home: Path
) -> None:
    v2 = register_version(iris_model_dir)
    created = target.create("iris-prod", ModelRef("iris", "1"), FAST)

    assert created.status == DeploymentStatus.READY
    assert created.model_uri == "models:/iris/1"
    endpoint = created.endpoint_url
    assert target.predict("iris-prod", IRIS_ROW) == {"predictions": [0, 2]}
    assert served_version(endpoint) == "1"
    assert [d.name for d in target.list()] == ["iris-prod"]
    assert "ready" in target.logs("iris-prod")

    # another process sees the same deployment through the state under MLOPS_HOME
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mlops_pipeline.targets.local import LocalTarget; "
            "print(LocalTarget().get('iris-prod').model_dump_json())",
        ],
        capture_output=True,
        text=True,
        env=os.environ,
        check=True,
    )
    seen = json.loads(other.stdout)
    assert seen["endpoint_url"] == endpoint and seen["status"] == "ready"

    # a crashed scoring service is restarted on its port, behind the same endpoint
    crashed = state(target, "iris-prod")["active"]["pid"]
    os.kill(crashed, signal.SIGKILL)
    wait_until(lambda: state(target, "iris-prod")["active"]["restarts"] == 1)
    wait_until(lambda: httpx.get(f"{endpoint}/ready", timeout=5).status_code == 200, 120)
    assert state(target, "iris-prod")["active"]["pid"] != crashed

    # children get their own settings, and never the supervisor's control token
    files = DeploymentFiles(target.root / "iris-prod")
    recorded = files.read_state()
    assert isinstance(recorded, SupervisorState) and recorded.active.model_uri == "models:/iris/1"
    service_env, proxy_env = environ_of(recorded.active.pid), environ_of(recorded.proxy.pid)
    assert service_env["MLOPS_SERVING_MODEL_URI"] == "models:/iris/1"
    assert service_env["MLOPS_SERVING_PORT"] == str(recorded.active.port)
    assert proxy_env["MLOPS_SERVING_PROXY_PORT"] == endpoint.rsplit(":", 1)[1]
    assert "MLOPS_SUPERVISOR_TOKEN" not in service_env | proxy_env
    assert files.read_control().token not in json.dumps(service_env | proxy_env)

    # the stable endpoint's liveness is the proxy's own: it answers, whatever the upstream does
    live = httpx.get(f"{endpoint}/health/live", timeout=5)
    assert (live.status_code, live.text) == (200, "ok")

    # a hung service (running, answering nothing) is killed and restarted like a crashed one
    time.sleep(LIVENESS_PERIOD + 1)  # one probe has seen the restarted service answer
    hung = state(target, "iris-prod")["active"]["pid"]
    os.kill(hung, signal.SIGSTOP)
    wait_until(lambda: state(target, "iris-prod")["active"]["restarts"] == 2, 120)
    wait_until(lambda: httpx.get(f"{endpoint}/ready", timeout=5).status_code == 200, 120)
    assert not pid_alive(hung)
    assert target.predict("iris-prod", IRIS_ROW) == {"predictions": [0, 2]}

    old_pid = state(target, "iris-prod")["active"]["pid"]
    updated = target.update("iris-prod", ModelRef("iris", v2), FAST)

    assert updated.endpoint_url == endpoint
    assert updated.model_version == v2
    assert served_version(endpoint) == v2
    assert not pid_alive(old_pid)

    pids = all_pids(target, "iris-prod")
    target.delete("iris-prod")

    assert not (target.root / "iris-prod").exists()
    assert not any(pid_alive(pid) for pid in pids)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{endpoint}/ping")
    target.delete("iris-prod")  # idempotent
    with pytest.raises(NotFoundError, match="No local deployment named 'iris-prod'"):
        target.get("iris-prod")


def test_failures_leave_nothing_half_deployed(
    target: LocalTarget, registered_model: dict, iris_model_dir: Path
) -> None:
    broken = register_version(iris_model_dir)
    break_version("iris", broken)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(ConflictError, match=f"Port {taken} is already in use"):
            target.create(
                "iris-prod", ModelRef("iris", "1"), FAST.model_copy(update={"port": taken})
            )
    assert not (target.root / "iris-prod").exists()

    with pytest.raises(DeploymentError, match="could not load the model"):
        target.create("iris-bad", ModelRef("iris", broken), FAST)
    assert not (target.root / "iris-bad").exists()
    assert target.list() == []

    created = target.create("iris-prod", ModelRef("iris", "1"), FAST)
    with pytest.raises(ConflictError, match="already exists"):
        target.create("iris-prod", ModelRef("iris", "1"), FAST)
    before = state(target, "iris-prod")

    with pytest.raises(DeploymentError, match="previous version keeps serving"):
        target.update("iris-prod", ModelRef("iris", broken), FAST)

    after = state(target, "iris-prod")
    assert after["active"]["pid"] == before["active"]["pid"] and after["pending"] is None
    assert served_version(created.endpoint_url) == "1"
    assert target.get("iris-prod").model_version == "1"
    services = list((target.root / "iris-prod" / "logs").glob(f"service-v{broken}-*.log"))
    assert len(services) == 1
