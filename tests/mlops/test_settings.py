"""Settings come from MLOPS_ environment variables with embedded defaults under MLOPS_HOME."""

from __future__ import annotations

import pytest
from mlops_pipeline.errors import InUseError, InvalidInputError, MLOpsError, NotFoundError
from mlops_pipeline.settings import Settings


def test_embedded_defaults_live_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MLOPS_TRACKING_URI", raising=False)
    settings = Settings()
    assert settings.resolved_tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.resolved_ledger_uri == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert settings.artifact_root == (tmp_path / "artifacts").as_uri()
    assert settings.base_image == "python:3.11-slim"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("MLOPS_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("MLOPS_ORCHESTRATE", "never")
    settings = Settings()
    assert settings.resolved_tracking_uri == "http://mlflow.internal:5000"
    assert settings.orchestrate == "never"


def test_invalid_setting_names_the_variable(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("MLOPS_ORCHESTRATE", "sometimes")
    with pytest.raises(ValidationError, match="orchestrate"):
        Settings()


@pytest.mark.parametrize(
    ("error", "exit_code", "status"),
    [(InvalidInputError, 2, 400), (NotFoundError, 3, 404), (InUseError, 4, 409)],
)
def test_errors_carry_exit_code_and_http_status(error, exit_code, status):
    exc = error("Model 'x' is broken.", hint="Fix it.", field="name", value="x", extra=None)
    assert (exc.exit_code, exc.http_status) == (exit_code, status)
    assert isinstance(exc, MLOpsError)
    assert exc.to_dict() == {
        "code": error.code,
        "message": "Model 'x' is broken. Fix it.",
        "details": {"field": "name", "value": "x"},
    }


def test_cli_reports_a_bad_setting_in_one_line(monkeypatch):
    from mlops_pipeline.cli import app
    from mlops_pipeline.settings import get_settings
    from typer.testing import CliRunner

    monkeypatch.setenv("MLOPS_ORCHESTRATE", "sometimes")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["models", "list"])
    get_settings.cache_clear()
    assert result.exit_code == 2
    assert "MLOPS_ORCHESTRATE='sometimes' is invalid" in result.stderr
