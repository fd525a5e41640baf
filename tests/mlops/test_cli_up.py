"""`mlops up` / `mlops down` with real processes, and what other commands do while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlops_pipeline import stack
from mlops_pipeline.cli import app
from mlops_pipeline.serving.contract import free_port
from typer.testing import CliRunner

from tests.mlops.stack_support import flow_runs, gone, port_taken, record, served_flows

runner = CliRunner()
MLOPS = str(Path(sys.executable).with_name("mlops"))


@pytest.fixture(autouse=True)
def webhook_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """The stack's webhook receiver on a free port (8787 may be taken by a parallel test)."""
    port = free_port()
    monkeypatch.setenv("MLOPS_WEBHOOK_PORT", str(port))
    return port


def invoke(*args: str):
    return runner.invoke(app, list(args))


def mlops(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """The console script in a new process, as from another shell."""
    return subprocess.run(
        [MLOPS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("command", [["up"], ["down"]])
def test_up_and_down_have_help_json_and_exit_codes(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "--json" in result.output and "Exit codes" in result.output


def test_nothing_running_status_exits_3_and_down_exits_0(mlops_home: Path) -> None:
    status = invoke("up", "--status", "--json")
    assert status.exit_code == 3
    assert json.loads(status.stdout) == {
        "home": str(mlops_home.resolve()),
        "state_file": str(mlops_home.resolve() / "up" / "state.json"),
        "running": False,
        "healthy": False,
        "components": [],
    }
    down = invoke("down")
    assert down.exit_code == 0 and "Nothing to stop" in down.output


def test_a_taken_port_is_one_line_naming_it_and_exit_4(mlops_home: Path) -> None:
    with port_taken() as port:
        result = invoke("up", "--prefect-port", str(port), "--mlflow-port", str(free_port()))
        as_json = invoke("up", "--prefect-port", str(port), "--mlflow-port", "1", "--json")
    assert result.exit_code == 4
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith(f"error: Port {port} for the Prefect server is not free")
    assert "--prefect-port" in line
    assert as_json.exit_code == 4
    assert json.loads(as_json.stdout)["error"]["code"] == "conflict"
    assert not (mlops_home / "up" / "state.json").exists()


def test_commands_use_the_stacks_prefect_api_only_when_nothing_else_is_set(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_pipeline.cli.up import stack_prefect_api
    from mlops_pipeline.settings import get_settings
    from prefect.settings import get_current_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    before = get_current_settings().api.url
    with stack_prefect_api():  # no stack
        assert get_current_settings().api.url == before
    # a recorded Prefect server that runs: this test process stands in for its process
    me = psutil.Process()
    record(mlops_home.resolve(), "prefect", me.pid, me.create_time(), "http://127.0.0.1:4321")
    with stack_prefect_api():
        assert get_current_settings().api.url == "http://127.0.0.1:4321/api"
    assert get_current_settings().api.url == before
    monkeypatch.setenv("MLOPS_ORCHESTRATE", "never")
    get_settings.cache_clear()
    with stack_prefect_api():
        assert get_current_settings().api.url == before
    monkeypatch.delenv("MLOPS_ORCHESTRATE")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the user's own API wins
    get_settings.cache_clear()
    with stack_prefect_api():
        assert get_current_settings().api.url == before


def test_the_stack_runs_cli_steps_as_flow_runs_and_down_stops_only_it(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch, iris_pickle: Path, tmp_path: Path
) -> None:
    served_flows(monkeypatch)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # another shell: the same MLOPS_HOME, no PREFECT_API_URL, its own Prefect client home
    shell = {**os.environ, "PREFECT_HOME": str(tmp_path / "client-prefect")}
    unrelated = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port())]
        started = invoke("up", *ports, "--timeout", "180", "--json")
        assert started.exit_code == 0, started.output
        first = {c["name"]: c for c in json.loads(started.stdout)["components"]}
        assert {n: (c["state"], c["started"]) for n, c in first.items()} == {
            n: ("healthy", True) for n in ("prefect", "mlflow", "flows", "steps", "webhook")
        }
        api = f"{first['prefect']['url']}/api"

        # `up` again, from another shell: nothing new starts; it says where to look
        again = mlops("up", env=shell)
        assert again.returncode == 0, again.stderr
        assert f"Prefect UI: {first['prefect']['url']}" in again.stdout
        assert f"MLflow UI:  {first['mlflow']['url']}" in again.stdout
        status = mlops("up", "--status", "--json", env=shell)
        assert status.returncode == 0, status.stderr
        now = {c["name"]: c for c in json.loads(status.stdout)["components"]}
        assert {n: (c["pid"], c["state"]) for n, c in now.items()} == {
            n: (c["pid"], "healthy") for n, c in first.items()
        }

        # a CLI step in that shell is a flow run of the stack's server, run by its warm step
        # runner (a relative path is the shell's), its warnings shown in the shell ...
        steps_log = Path(first["steps"]["log_file"])
        registered = mlops(
            "register", iris_pickle.name, "--name", "stacked", "--json",
            env=shell, cwd=iris_pickle.parent,
        )  # fmt: skip
        assert registered.returncode == 0, registered.stderr
        assert json.loads(registered.stdout)["version"] == "1"
        assert "pickles run code when loaded" in registered.stderr
        [run] = flow_runs(api, "register-model")
        assert run["state_type"] == "COMPLETED" and run["parameters"]["name"] == "stacked"
        assert run["parameters"]["source"] == iris_pickle.name
        assert steps_log.read_text().count("Ran step register-model") == 1
        # ... its errors keep their exit code and one line ...
        missing = mlops("register", "missing.pkl", "--name", "stacked", env=shell)
        assert missing.returncode == 3 and "'missing.pkl'" in missing.stderr
        assert "Traceback" not in missing.stderr
        assert "Step register-model failed" in steps_log.read_text()
        # ... a shell whose settings differ runs the step itself, still on the stack's server ...
        other = mlops(
            "register", str(iris_pickle), "--name", "stacked", "--json",
            env={**shell, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"},
        )  # fmt: skip
        assert other.returncode == 0, other.stderr
        assert len(flow_runs(api, "register-model")) == 3
        assert steps_log.read_text().count("Ran step register-model") == 1
        # ... and with orchestration switched off, no flow run at all
        direct = mlops(
            "register", str(iris_pickle), "--name", "stacked", "--json",
            env={**shell, "MLOPS_ORCHESTRATE": "never"},
        )  # fmt: skip
        assert direct.returncode == 0, direct.stderr
        assert json.loads(direct.stdout)["version"] == "3"
        assert len(flow_runs(api, "register-model")) == 3

        # the MLflow server dies (workers too): status says so; `up` restarts only it
        os.killpg(first["mlflow"]["pid"], signal.SIGKILL)
        assert gone(first["mlflow"]["pid"])
        dead = mlops("up", "--status", env=shell)
        assert dead.returncode == 6 and "dead" in dead.stdout
        restarted = mlops("up", "--json", env=shell)
        assert restarted.returncode == 0, restarted.stderr
        after = {c["name"]: c for c in json.loads(restarted.stdout)["components"]}
        assert after["mlflow"]["started"] and after["mlflow"]["pid"] != first["mlflow"]["pid"]
        assert after["mlflow"]["port"] == first["mlflow"]["port"]
        assert {n: (c["pid"], c["started"]) for n, c in after.items() if n != "mlflow"} == {
            n: (c["pid"], False) for n, c in first.items() if n != "mlflow"
        }

        # `down` stops exactly the recorded processes, and leaves ours alone
        pids = [c["pid"] for c in after.values()]
        down = mlops("down", "--json", env=shell)
        assert down.returncode == 0, down.stderr
        stopped = json.loads(down.stdout)["stopped"]
        assert [(s["name"], s["pid"]) for s in stopped] == [
            (n, after[n]["pid"]) for n in ("webhook", "steps", "flows", "mlflow", "prefect")
        ]
        assert all(gone(pid) for pid in pids)
        assert psutil.Process(unrelated.pid).status() != psutil.STATUS_ZOMBIE
        assert unrelated.poll() is None
        assert mlops("up", "--status", env=shell).returncode == 3
        again_down = mlops("down", env=shell)
        assert again_down.returncode == 0 and "Nothing to stop" in again_down.stdout
    finally:
        stack.down(mlops_home.resolve(), timeout=10)
        unrelated.kill()
        unrelated.wait()


def test_status_table_keeps_every_url_whole_in_80_columns(monkeypatch) -> None:
    from mlops_pipeline.cli import _output, up

    monkeypatch.setattr(_output.console, "width", 80)
    urls = ["http://127.0.0.1:46493", "http://127.0.0.1:46493/deployments"]
    components = [
        {
            "title": title,
            "state": "healthy",
            "started": True,
            "url": url,
            "log_file": "/home/me/.mlops/up/logs/x.log",
            "started_at": "2026-11-30T19:03:13Z",
        }
        for title, url in zip(["Prefect server", "Served flows"], urls, strict=True)
    ]
    with _output.console.capture() as captured:
        up.render_status({"home": "/home/me/.mlops", "components": components})
    lines = captured.get().splitlines()
    assert max(map(len, lines)) <= 80
    assert all(any(url in line for line in lines) for url in urls)
