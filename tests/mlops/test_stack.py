"""The local stack with real processes: a real Prefect server, served flows, an MLflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from mlops_pipeline import processes, stack
from mlops_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
)
from mlops_pipeline.serving.contract import free_port
from mlops_pipeline.settings import get_settings

from tests.mlops.stack_support import deployment_names, gone, port_taken, record, served_flows


@pytest.fixture(autouse=True)
def webhook_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """The stack's webhook receiver on a free port (8787 may be taken by a parallel test)."""
    port = free_port()
    monkeypatch.setenv("MLOPS_WEBHOOK_PORT", str(port))
    return port


def by_name(status: stack.StackStatus) -> dict[str, stack.ComponentStatus]:
    return {c.name: c for c in status.components}


def group_pids(pid: int) -> set[int]:
    found = {pid}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pid:
                found.add(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found


def test_up_status_restart_and_down_with_real_servers(mlops_home, monkeypatch):
    expected_deployments = served_flows(monkeypatch)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = get_settings()
    unrelated = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        first = by_name(
            stack.up(settings, prefect_port=free_port(), mlflow_port=free_port(), timeout=180)
        )
        assert list(first) == ["prefect", "mlflow", "flows", "steps", "webhook"]
        assert all(c.state == "healthy" and c.started for c in first.values())
        prefect_api = f"{first['prefect'].url}/api"
        assert httpx.get(f"{prefect_api}/health", timeout=10).status_code == 200
        assert httpx.get(f"{first['mlflow'].url}/health", timeout=10).text.strip() == "OK"
        # the served flows talk to the stack's server, with the stack's homes
        env = psutil.Process(first["flows"].pid).environ()
        assert env["PREFECT_API_URL"] == prefect_api
        assert env["PREFECT_HOME"] == str(mlops_home.resolve() / "prefect")
        assert env["MLOPS_HOME"] == str(mlops_home.resolve())
        assert expected_deployments <= deployment_names(prefect_api)
        # the guard app refuses deletes of in-use versions: its hook answers on the server
        assert "--app-name" in psutil.Process(first["mlflow"].pid).cmdline()

        state = json.loads(stack.state_path(mlops_home.resolve()).read_text())["components"]
        assert {n: c["pid"] for n, c in state.items()} == {n: c.pid for n, c in first.items()}
        assert all(Path(c["log_file"]).is_file() for c in state.values())
        assert stack.running_prefect_api(mlops_home.resolve()) == prefect_api

        # a second `up` finds everything running and healthy: nothing new starts
        second = by_name(stack.up(settings, timeout=60))
        assert {n: (c.pid, c.started) for n, c in second.items()} == {
            n: (c.pid, False) for n, c in first.items()
        }

        # the served flows die: status says so, and `up` restarts only them
        os.killpg(first["flows"].pid, signal.SIGKILL)
        assert gone(first["flows"].pid)
        states = {c.name: c.state for c in stack.status(mlops_home.resolve()).components}
        assert states == {
            "prefect": "healthy",
            "mlflow": "healthy",
            "flows": "dead",
            "steps": "healthy",
            "webhook": "healthy",
        }
        third = by_name(stack.up(settings, timeout=180))
        assert third["flows"].started and third["flows"].pid != first["flows"].pid
        assert third["flows"].state == "healthy"
        for name in ("prefect", "mlflow", "steps", "webhook"):
            assert (third[name].pid, third[name].started) == (first[name].pid, False)

        # `down` stops exactly what `up` started, workers included, and nothing else
        ours = set().union(*(group_pids(c.pid) for c in third.values()))
        stopped = stack.down(mlops_home.resolve(), timeout=30)
        assert [s.name for s in stopped] == ["webhook", "steps", "flows", "mlflow", "prefect"]
        assert {s.outcome for s in stopped} <= {"terminated", "killed"}
        assert all(gone(pid) for pid in ours)
        assert unrelated.poll() is None
        assert not stack.state_path(mlops_home.resolve()).exists()
        assert stack.status(mlops_home.resolve()).components == []
        assert stack.down(mlops_home.resolve()) == []  # idempotent
    finally:
        stack.down(mlops_home.resolve(), timeout=10)
        unrelated.kill()
        unrelated.wait()


def test_a_taken_port_fails_before_anything_starts(mlops_home):
    settings = get_settings()
    with port_taken() as port, pytest.raises(ConflictError) as raised:
        stack.up(settings, prefect_port=free_port(), mlflow_port=port)
    message = str(raised.value)
    assert f"Port {port} for the MLflow server" in message
    assert "--mlflow-port" in message and "MLOPS_MLFLOW_PORT" in message
    assert raised.value.exit_code == 4
    assert not stack.state_path(mlops_home.resolve()).exists()


def test_one_port_for_both_servers_is_invalid_input(mlops_home):
    port = free_port()
    with pytest.raises(InvalidInputError, match=f"cannot share port {port}") as raised:
        stack.up(get_settings(), prefect_port=port, mlflow_port=port)
    assert raised.value.exit_code == 2
    assert not stack.state_path(mlops_home.resolve()).exists()


def fake_specs(monkeypatch, *commands: tuple[str, list[str], int]) -> None:
    """Make the stack start these (name, command, health port) instead of the real servers."""
    specs = [
        stack.ComponentSpec(
            name=name,
            title=f"Component {name}",
            command=command,
            env={},
            port=port,
            url=f"http://127.0.0.1:{port}",
            health_url=f"http://127.0.0.1:{port}/",
            port_hint="choose another",
        )
        for name, command, port in commands
    ]
    monkeypatch.setattr(stack, "component_specs", lambda *args, **kwargs: specs)


def test_a_component_that_exits_fails_up_and_stops_what_this_up_started(mlops_home, monkeypatch):
    web_port = free_port()
    fake_specs(
        monkeypatch,
        ("web", [sys.executable, "-m", "http.server", str(web_port), "-b", "127.0.0.1"], web_port),
        ("broken", [sys.executable, "-c", "print('cannot start: boom'); exit(3)"], free_port()),
    )
    lines: list[str] = []
    with pytest.raises(BackendError) as raised:
        stack.up(get_settings(), timeout=60, progress=lines.append)
    assert "Component broken exited before it was ready" in str(raised.value)
    assert "cannot start: boom" in str(raised.value)
    assert raised.value.exit_code == 5
    assert any(line.startswith("Starting: Component web") for line in lines)
    assert not stack.state_path(mlops_home.resolve()).exists()
    assert processes.port_user(web_port) == ""  # the healthy one was stopped again
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{web_port}/", timeout=2)


def test_a_component_that_never_answers_times_out_and_is_stopped(mlops_home, monkeypatch):
    fake_specs(monkeypatch, ("silent", ["sleep", "120"], free_port()))
    with pytest.raises(BackendUnavailableError) as raised:
        stack.up(get_settings(), timeout=1)
    assert "Component silent did not answer" in str(raised.value)
    assert raised.value.exit_code == 6
    assert stack.read_state(mlops_home.resolve()) == {}
    assert not [p for p in psutil.Process().children() if p.name() == "sleep"]


def test_down_leaves_a_process_that_reused_a_recorded_pid_alone(mlops_home):
    other = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        home = mlops_home.resolve()
        # the process we started had this pid earlier: its start time differs
        started = psutil.Process(other.pid).create_time() - 3600
        record(home, "mlflow", other.pid, started, "http://127.0.0.1:5000")
        assert [c.state for c in stack.status(home).components] == ["dead"]
        assert [s.outcome for s in stack.down(home, timeout=1)] == ["pid_reused"]
        assert other.poll() is None
        assert not stack.state_path(home).exists()
    finally:
        other.kill()
        other.wait()


def test_store_uris_stay_out_of_the_record_and_a_remote_registry_gets_no_server(
    mlops_home, monkeypatch
):
    secret_uri = "postgresql://mlops:s3cret@db.example/mlflow"
    monkeypatch.setenv("MLOPS_TRACKING_URI", secret_uri)
    get_settings.cache_clear()
    specs = {s.name: s for s in stack.component_specs(get_settings(), 4300, 5300, 4400)}
    assert list(specs) == ["prefect", "mlflow", "flows", "steps", "webhook"]
    assert specs["webhook"].port == 4400 and specs["webhook"].command[-1] == "4400"
    assert specs["mlflow"].secret_env["MLFLOW_BACKEND_STORE_URI"] == secret_uri
    assert specs["flows"].secret_env["MLOPS_TRACKING_URI"] == secret_uri
    assert specs["steps"].secret_env["MLOPS_TRACKING_URI"] == secret_uri
    assert "mlops-guard" in specs["mlflow"].command
    assert specs["flows"].env["PREFECT_API_URL"] == "http://127.0.0.1:4300/api"
    recorded = json.dumps([spec.model_dump(mode="json") for spec in specs.values()])
    assert "s3cret" not in recorded  # what the state file and `ps` would show

    monkeypatch.setenv("MLOPS_TRACKING_URI", "http://mlflow.example:5000")
    get_settings.cache_clear()
    names = [s.name for s in stack.component_specs(get_settings())]
    assert names == ["prefect", "flows", "steps", "webhook"]


def test_the_webhook_port_comes_from_the_option_else_the_environment(mlops_home, monkeypatch):
    monkeypatch.setenv("MLOPS_WEBHOOK_PORT", "4501")
    get_settings.cache_clear()
    assert stack.component_specs(get_settings())[-1].port == 4501
    assert stack.component_specs(get_settings(), webhook_port=4502)[-1].port == 4502
