"""`mlops up`'s side of webhooks: the MLflow server's webhook environment and the receiver."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from mlops_pipeline import stack
from mlops_pipeline.settings import get_settings
from mlops_pipeline.webhooks.registration import KEY_FILE


def specs() -> dict[str, stack.ComponentSpec]:
    get_settings.cache_clear()
    return {s.name: s for s in stack.component_specs(get_settings(), 4300, 5300)}


def test_the_stacks_mlflow_server_can_deliver_to_a_local_receiver(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
        "MLFLOW_WEBHOOK_CACHE_TTL",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_WEBHOOK_PORT", "8899")
    first = specs()
    mlflow = first["mlflow"]
    assert mlflow.env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http,https"
    assert mlflow.env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert mlflow.env["MLFLOW_WEBHOOK_CACHE_TTL"] == "5"
    # a Fernet key generated once, kept in MLOPS_HOME readable by its owner only ...
    key = mlflow.secret_env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]
    Fernet(key.encode())
    path = mlops_home.resolve() / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # ... the same at every start, so stored webhook secrets survive a restart ...
    assert specs()["mlflow"].secret_env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == key
    # ... and never in the state file or a command line
    recorded = json.dumps([s.model_dump(mode="json") for s in first.values()])
    assert key not in recorded

    receiver = first["webhook"]
    assert receiver.command[-6:] == ["webhook", "serve", "--host", "127.0.0.1", "--port", "8899"]
    assert receiver.env["PREFECT_API_URL"] == "http://127.0.0.1:4300/api"
    assert receiver.health_url == "http://127.0.0.1:8899/health"


def test_values_from_the_environment_win(mlops_home: Path, monkeypatch) -> None:
    own = Fernet.generate_key().decode()
    monkeypatch.setenv("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", own)
    monkeypatch.setenv("MLFLOW_WEBHOOK_CACHE_TTL", "60")
    mlflow = specs()["mlflow"]
    assert mlflow.secret_env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == own
    assert mlflow.env["MLFLOW_WEBHOOK_CACHE_TTL"] == "60"
    assert not (mlops_home.resolve() / KEY_FILE).exists()
