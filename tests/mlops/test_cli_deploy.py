"""Deploy commands through typer's runner: bad input gives one line, an exit code, no changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlops_pipeline import ledger
from mlops_pipeline.cli import app
from typer.testing import CliRunner

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "command",
    [
        ["deploy"],
        ["update"],
        ["rollback"],
        ["undeploy"],
        ["status"],
        ["deployments", "list"],
        ["deployments", "show"],
        ["deployments", "history"],
    ],
)
def test_every_deploy_command_has_help_and_json(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "--json" in result.output


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["deploy", "models:/iris/9", "--name", "iris-prod"], 3, "has no version '9'"),
        (["deploy", "models:/wine/1", "--name", "iris-prod"], 3, "'wine' is not registered"),
        (["deploy", "iris", "--name", "iris-prod"], 2, "does not name a registered model"),
        (["deploy", "models:/iris/1", "--name", "Iris"], 2, "is not allowed"),
        (
            ["deploy", "models:/iris/1", "--name", "iris-prod", "--target", "nowhere:"],
            2,
            "Known targets: docker:, local:",
        ),
        (
            # the target is checked first, even when the model is unknown too
            ["deploy", "models:/ghost/1", "--name", "iris-prod", "--target", "k8s:/ns"],
            2,
            "Unknown deployment target 'k8s:'",
        ),
        (
            ["deploy", "models:/iris/1", "--name", "iris-prod", "--api-key-file", "/nope/keys"],
            2,
            "--api-key-file '/nope/keys' is not a file",
        ),
        (["update", "iris-prod", "--model", "models:/iris/1"], 3, "No deployment named"),
        (["rollback", "iris-prod"], 3, "No deployment named"),
        (["undeploy", "iris-prod"], 3, "No deployment named"),
        (["status", "iris-prod"], 3, "No deployment named"),
        (["deployments", "show", "iris-prod"], 3, "No deployment named"),
        (["deployments", "history", "iris-prod"], 3, "No history"),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    registered_model: dict, mlops_home: Path, args: list[str], exit_code: int, message: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert ledger.list_deployments() == []
    assert not (mlops_home / "local").exists() or not any((mlops_home / "local").iterdir())


def test_json_errors_and_empty_list(registered_model: dict) -> None:
    listed = invoke("deployments", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output) == []
    failed = invoke("status", "nope", "--json")
    assert failed.exit_code == 3
    error = json.loads(failed.output.splitlines()[0])["error"]
    assert error["code"] == "not_found" and "nope" in error["message"]
