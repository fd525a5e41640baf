"""`mlops webhook serve` and `register-mlflow` refuse bad input before serving anything:
one line naming the variable or file, and the documented exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlops_pipeline.cli import app
from mlops_pipeline.serving.contract import free_port
from typer.testing import CliRunner

from tests.mlops.stack_support import port_taken


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def prefect_api() -> Iterator[None]:
    """A Prefect API URL in this process's Prefect settings (nothing needs to answer there)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield


@pytest.fixture
def receiver_env(mlops_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MLOPS_GITHUB_WEBHOOK_SECRET", "MLOPS_MLFLOW_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("MLOPS_WEBHOOK_PORT", str(free_port()))


@pytest.mark.parametrize(
    "command", [["webhook"], ["webhook", "serve"], ["webhook", "register-mlflow"]]
)
def test_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_serve_needs_a_prefect_api(receiver_env: None) -> None:
    result = invoke("webhook", "serve")
    assert result.exit_code == 2
    assert "PREFECT_API_URL" in result.stderr


def test_bad_settings_and_mapping_files_are_exit_2(
    receiver_env, prefect_api, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("MLOPS_WEBHOOK_TIMESTAMP_TOLERANCE", "soon")
    result = invoke("webhook", "serve")
    assert result.exit_code == 2
    assert "MLOPS_WEBHOOK_TIMESTAMP_TOLERANCE='soon' is invalid" in result.stderr
    monkeypatch.delenv("MLOPS_WEBHOOK_TIMESTAMP_TOLERANCE")
    mapping = tmp_path / "routes.yaml"
    mapping.write_text("github: {push: [{deployment: nope}]}")
    result = invoke("webhook", "serve", "--mapping", str(mapping))
    assert result.exit_code == 2
    assert f"MLOPS_WEBHOOK_MAPPING_FILE={mapping}" in result.stderr


def test_a_taken_port_is_exit_4(receiver_env: None, prefect_api: None) -> None:
    with port_taken() as port:
        result = invoke("webhook", "serve", "--port", str(port), "--json")
    assert result.exit_code == 4
    assert f"Port {port}" in result.stderr


def test_register_mlflow_needs_a_secret_and_a_server(receiver_env, monkeypatch) -> None:
    url = "http://127.0.0.1:8787/hooks/mlflow"
    result = invoke("webhook", "register-mlflow", "--url", url, "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["details"]["field"] == "MLOPS_MLFLOW_WEBHOOK_SECRET"
    monkeypatch.setenv("MLOPS_MLFLOW_WEBHOOK_SECRET", "s3cret-value")
    # the embedded sqlite registry is no server: MLflow would never deliver from it
    result = invoke("webhook", "register-mlflow", "--url", url)
    assert result.exit_code == 2
    assert "only from `mlflow server`" in result.stderr
    assert "s3cret-value" not in result.stderr + result.stdout
