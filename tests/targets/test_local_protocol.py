"""The local target's files and control API as typed models, without starting any deployment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from mlops_pipeline.targets.base import DeployConfig, DeploymentStatus, ModelRef
from mlops_pipeline.targets.local_protocol import (
    ControlEndpoint,
    DeploymentFiles,
    DeploymentSpec,
    ServedModel,
    SupervisorState,
    last_error,
    read_model,
    write_model,
)
from mlops_pipeline.targets.local_supervisor import Supervisor

TOKEN = "control-token"


def spec(port: int = 8123) -> DeploymentSpec:
    return DeploymentSpec(
        name="iris-prod",
        target_uri="local:",
        port=port,
        model=ServedModel.of(ModelRef("iris", "3")),
        config=DeployConfig(capture_uri="/data/capture", sample_rate=0.5),
        tracking_uri="sqlite:///mlflow.db",
        registry_uri="sqlite:///mlflow.db",
        created_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    )


def test_files_round_trip_through_the_models(tmp_path: Path) -> None:
    files = DeploymentFiles(tmp_path)
    assert files.read_spec() is None and files.read_control() is None
    assert files.read_state() == SupervisorState()  # nothing written yet: creating

    write_model(files.spec, spec())
    write_model(files.control, ControlEndpoint(pid=1, port=2, token=TOKEN), mode=0o600)

    assert files.read_spec() == spec()
    assert files.read_spec().model.ref == ModelRef("iris", "3")
    assert files.read_control().token == TOKEN
    assert files.control.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.tmp"))  # written by rename, nothing left over
    # the JSON keeps the shape other processes and tools read
    raw = json.loads(files.spec.read_text())
    assert raw["model"] == {
        "model_name": "iris",
        "model_version": "3",
        "model_uri": "models:/iris/3",
    }
    assert raw["config"]["capture_uri"] == "/data/capture"


def test_a_file_that_is_not_a_valid_model_reads_as_missing(tmp_path: Path) -> None:
    files = DeploymentFiles(tmp_path)
    files.state.write_text('{"status": "exploded"}')
    files.spec.write_text("{not json")
    assert read_model(files.state, SupervisorState) is None
    assert files.read_spec() is None


def test_last_error_prefers_the_exception_line(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    assert last_error(log) == "(no output)"
    log.write_text("starting\nTraceback (most recent call last):\nValueError: bad model\nbye\n")
    assert last_error(log) == "ValueError: bad model"


@pytest.fixture
def control(tmp_path: Path) -> Iterator[str]:
    """The control API of a supervisor that has started no children."""
    files = DeploymentFiles(tmp_path)
    files.logs.mkdir()
    supervisor = Supervisor(files, spec(), TOKEN)
    server = supervisor.serve_control()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_control_api_checks_the_token_and_the_request(control: str) -> None:
    assert httpx.post(f"{control}/update", json={}).status_code == 401
    headers = {"X-Token": TOKEN}
    bad = httpx.post(f"{control}/update", json={"model": {"model_name": "iris"}}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("invalid update request")
    unknown = httpx.post(f"{control}/nope", headers=headers)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown path"})


def test_supervisor_state_is_typed_and_names_its_process(tmp_path: Path) -> None:
    supervisor = Supervisor(DeploymentFiles(tmp_path), spec(), TOKEN)
    state = supervisor.state()
    assert state.status == DeploymentStatus.CREATING and state.supervisor_pid == os.getpid()
    assert state.active is None and state.updated_at is not None
