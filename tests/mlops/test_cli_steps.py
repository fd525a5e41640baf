"""The stack's step runner and the CLI's side of it: what is handed over, and how it answers.

The whole path (a cold `mlops register` in another shell handed to a running stack) is in
`test_cli_up.py`; these run the runner's app in-process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlops_pipeline.cli.step_runner import create_app
from mlops_pipeline.cli.steps import CLI_MLFLOW_ENV, _error_from, fingerprint
from mlops_pipeline.cli.up import prefect_profile_api
from mlops_pipeline.errors import InUseError, MLOpsError, NotFoundError
from mlops_pipeline.settings import get_settings

TOKEN = "t0ken"


@pytest.fixture
def runner(mlops_home: Path) -> TestClient:
    return TestClient(create_app(TOKEN, "fp"))


def step(runner: TestClient, cwd: Path, token: str = TOKEN, **body):
    body = {"flow": "register-model", "cwd": str(cwd), **body}
    return runner.post("/steps", json=body, headers={"Authorization": f"Bearer {token}"})


def test_the_runner_wants_its_token_a_known_step_and_a_directory(runner, tmp_path) -> None:
    health = runner.get("/health").json()
    assert health == {"status": "ok", "fingerprint": "fp", "flows": ["register-model"]}
    params = {"source": "x.pkl", "name": "iris"}
    refused = step(runner, tmp_path, token="guess", params=params)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    unknown = step(runner, tmp_path, flow="deploy", params=params)
    assert unknown.status_code == 400
    assert "Known steps: register-model" in unknown.json()["error"]["message"]
    assert step(runner, tmp_path / "gone", params=params).status_code == 400
    assert step(runner, tmp_path, params="source=x.pkl").status_code == 400


def test_steps_run_in_the_callers_directory_with_its_warnings_and_error_codes(
    runner, iris_pickle: Path, tmp_path: Path
) -> None:
    before = os.getcwd()
    done = step(runner, iris_pickle.parent, params={"source": iris_pickle.name, "name": "iris"})
    assert done.status_code == 200, done.text
    answer = done.json()
    assert answer["result"]["version"] == "1"
    assert any("pickles run code when loaded" in line for line in answer["warnings"])
    # a relative path that exists only where the runner started is not the caller's
    (tmp_path / iris_pickle.name).write_bytes(b"not this one")
    missing = step(runner, tmp_path / "empty", params={"source": "x.pkl", "name": "iris"})
    assert missing.status_code == 400  # no such directory: nothing ran
    (tmp_path / "empty").mkdir()
    missing = step(runner, tmp_path / "empty", params={"source": "x.pkl", "name": "iris"})
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "not_found" and "'x.pkl'" in error["message"]
    assert "Traceback" not in missing.text
    assert os.getcwd() == before


def test_the_cli_rebuilds_the_runners_error_with_its_exit_code() -> None:
    in_use = _error_from({"code": "in_use", "message": "Version 1 serves prod."})
    assert isinstance(in_use, InUseError) and in_use.exit_code == 4
    assert str(in_use) == "Version 1 serves prod."
    assert isinstance(_error_from({"code": "not_found", "message": "x"}), NotFoundError)
    assert type(_error_from({"code": "from-a-newer-runner", "message": "x"})) is MLOpsError


def test_the_fingerprint_follows_settings_and_mlflow_environment(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = fingerprint(get_settings())
    monkeypatch.chdir(mlops_home.parent)
    monkeypatch.setenv("MLOPS_HOME", mlops_home.name)  # the same home, relative
    get_settings.cache_clear()
    assert fingerprint(get_settings()) == base
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    assert fingerprint(get_settings()) != base
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.setenv("MLOPS_REDEPLOY_METRIC", "f1")
    get_settings.cache_clear()
    assert fingerprint(get_settings()) != base


def test_the_active_prefect_profiles_api_is_read_without_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    assert prefect_profile_api() is None  # no file
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.team:4200/api"\n'
        "[profiles.ephemeral]\n"
    )
    assert prefect_profile_api() == "http://prefect.team:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")
    assert prefect_profile_api() is None
    (tmp_path / "profiles.toml").write_text("active = [")
    assert prefect_profile_api() is None


@pytest.fixture
def recorded_runner(mlops_home: Path, monkeypatch: pytest.MonkeyPatch):
    """A state file naming this process as the stack's Prefect server and step runner, with
    `httpx.get` answering the runner's health check with this process's fingerprint."""
    import json

    import httpx
    import psutil
    from mlops_pipeline import stack
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.mlops.stack_support import record

    home = mlops_home.resolve()
    me = psutil.Process()
    record(home, "steps", me.pid, me.create_time(), "http://127.0.0.1:9")
    steps = json.loads(stack.state_path(home).read_text())["components"]["steps"]
    record(home, "prefect", me.pid, me.create_time(), "http://127.0.0.1:4321")
    state = json.loads(stack.state_path(home).read_text())
    state["components"]["steps"] = steps
    stack.state_path(home).write_text(json.dumps(state))
    (stack.stack_dir(home) / "steps.token").write_text(TOKEN)
    for name, value in CLI_MLFLOW_ENV.items():  # as every `mlops` command sets them
        monkeypatch.setenv(name, value)
    health = {"status": "ok", "fingerprint": fingerprint(get_settings())}
    request = httpx.Request("GET", "http://127.0.0.1:9/health")
    monkeypatch.setattr(
        httpx, "get", lambda *a, **k: httpx.Response(200, json=health, request=request)
    )
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4321/api"}):
        yield


def test_a_runner_that_never_got_the_step_leaves_it_to_the_cli(recorded_runner, monkeypatch):
    import httpx
    from mlops_pipeline.cli.steps import _hand_over

    tried: list[str] = []

    def refused(url, **kwargs):
        tried.append(url)
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(httpx, "post", refused)
    assert _hand_over("register-model", {"source": "x.pkl", "name": "iris"}) is None
    assert tried == ["http://127.0.0.1:9/steps"]


def test_a_runner_lost_during_the_step_is_an_error_not_a_second_run(recorded_runner, monkeypatch):
    import httpx
    from mlops_pipeline.cli.steps import _hand_over
    from mlops_pipeline.errors import BackendError

    def dropped(*args, **kwargs):
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    monkeypatch.setattr(httpx, "post", dropped)
    with pytest.raises(BackendError, match="stopped answering during the step") as raised:
        _hand_over("register-model", {"source": "x.pkl", "name": "iris"})
    assert raised.value.exit_code == 5 and "mlops models list" in str(raised.value)
