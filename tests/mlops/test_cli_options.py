"""Global options (`--tracking-uri`, `--debug`) reach the settings without touching os.environ,
and `mlops serve` hands the service its configuration explicitly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlops_pipeline.cli import app
from mlops_pipeline.settings import get_settings, override_settings
from typer.testing import CliRunner

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def mlops_variables() -> dict[str, str]:
    """Our own variables in this process's environment (MLflow exports its own URIs itself)."""
    return {k: v for k, v in os.environ.items() if k.startswith("MLOPS_")}


def test_override_settings_lays_values_over_the_environment_and_restores(mlops_home):
    from_env = get_settings()
    with override_settings(tracking_uri="sqlite:////tmp/elsewhere.db", debug=True):
        inside = get_settings()
        assert inside.resolved_tracking_uri == "sqlite:////tmp/elsewhere.db" and inside.debug
        assert inside.resolved_home == from_env.resolved_home  # the rest still from MLOPS_*
        with override_settings(debug=False):
            assert not get_settings().debug
            assert get_settings().tracking_uri == "sqlite:////tmp/elsewhere.db"
        assert get_settings().debug
    assert get_settings() == from_env
    assert "MLOPS_TRACKING_URI" not in os.environ and "MLOPS_DEBUG" not in os.environ


def test_override_settings_refuses_unknown_names_and_reports_bad_values(mlops_home):
    from mlops_pipeline.errors import InvalidInputError

    with pytest.raises(TypeError, match="trackin_uri"), override_settings(trackin_uri="x"):
        pass
    invalid = pytest.raises(InvalidInputError, match="Setting orchestrate='sometimes'")
    with override_settings(orchestrate="sometimes"), invalid:
        get_settings()
    assert get_settings().orchestrate == "auto"


def test_tracking_uri_option_selects_the_registry_for_that_command_only(
    mlops_home, tmp_path, iris_model_dir
):
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    (tmp_path / "other").mkdir()
    before = mlops_variables()
    registered = invoke(
        "--tracking-uri", other, "register", str(iris_model_dir), "--name", "elsewhere", "--json"
    )
    assert registered.exit_code == 0, registered.output
    assert mlops_variables() == before  # nothing written, nothing for children to inherit
    there = invoke("--tracking-uri", other, "models", "list", "--json")
    assert [v["name"] for v in json.loads(there.stdout)] == ["elsewhere"]
    # without the option, MLOPS_HOME's own registry: the override ended with the command
    assert json.loads(invoke("models", "list", "--json").stdout) == []
    assert get_settings().resolved_tracking_uri == f"sqlite:///{mlops_home / 'mlflow.db'}"


def test_debug_option_shows_the_traceback_without_setting_mlops_debug(mlops_home, monkeypatch):
    quiet = invoke("models", "show", "ghost")
    assert quiet.exit_code == 3 and quiet.exception.__class__ is SystemExit
    assert "Traceback" not in quiet.stderr
    loud = invoke("--debug", "models", "show", "ghost")
    # the traceback, and the same exit code and error line as without --debug
    assert loud.exit_code == 3
    assert "Traceback" in loud.stderr and "NotFoundError" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("error: Model 'ghost'")
    assert "MLOPS_DEBUG" not in os.environ and not get_settings().debug
    # a setting that fails to load still honours --debug
    monkeypatch.setenv("MLOPS_ORCHESTRATE", "sometimes")
    assert invoke("models", "list").exit_code == 2
    broken = invoke("--debug", "models", "list")
    assert broken.exit_code == 2 and "Traceback" in broken.stderr
    assert "MLOPS_ORCHESTRATE='sometimes' is invalid" in broken.stderr


def test_serve_hands_the_service_its_settings_and_registry(
    mlops_home, tmp_path, iris_model_dir, monkeypatch
):
    """`mlops serve` replaces itself with the service, whose environment carries the settings
    and the registry URI; the CLI's own environment is left as it was."""
    from mlops_pipeline.serving.contract import free_port

    started: dict = {}

    def fake_execve(path, args, env):
        started.update(path=path, args=args, env=env)
        raise SystemExit(0)  # what the service's clean exit would give

    monkeypatch.setattr(os, "execve", fake_execve)
    other = f"sqlite:///{tmp_path / 'reg.db'}"
    port = free_port()
    before = dict(os.environ)
    result = invoke(
        "--tracking-uri", other, "serve", str(iris_model_dir), "--port", str(port),
        "--workers", "2", "--capture-dir", str(tmp_path / "cap"), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["url"] == f"http://127.0.0.1:{port}"
    assert started["args"][1:] == ["-m", "mlops_pipeline.serving"]
    env = started["env"]
    assert env["MLFLOW_TRACKING_URI"] == other and env["MLFLOW_REGISTRY_URI"] == other
    assert env["MLOPS_SERVING_MODEL_URI"] == str(iris_model_dir)
    assert (env["MLOPS_SERVING_PORT"], env["MLOPS_SERVING_WORKERS"]) == (str(port), "2")
    assert Path(env["MLOPS_SERVING_CAPTURE_URI"]) == (tmp_path / "cap").resolve()
    assert dict(os.environ) == before


def test_serve_refuses_a_port_in_use_and_a_bad_model_uri(mlops_home, iris_model_dir):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = invoke("serve", str(iris_model_dir), "--port", str(port), "--json")
    assert taken.exit_code == 4
    assert json.loads(taken.stdout)["error"]["code"] == "conflict"
    assert f"Cannot listen on 127.0.0.1:{port}" in taken.stderr
    bad = invoke("serve", "models:/iris/one")
    assert bad.exit_code == 2 and "'one'" in bad.stderr


def test_error_lines_are_text_not_markup(capsys) -> None:
    """A hint such as an install command with an extra keeps its brackets on the terminal."""
    from mlops_pipeline.cli._output import print_error

    print_error("Install the extra: pip install 'mlops-pipeline[iotedge]' [bold]or[/] not.")
    assert capsys.readouterr().err.strip() == (
        "error: Install the extra: pip install 'mlops-pipeline[iotedge]' [bold]or[/] not."
    )
