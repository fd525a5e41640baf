"""The receiver as a real `mlops webhook serve` process (uvicorn) on a real Prefect server.

Every answer of the issue's table for both endpoints, the runs each starts (counted on the
Prefect server by the delivery's tag), durability of the replay store across a restart, the
503 of an endpoint without a secret, and that no secret ever reaches a log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlops_pipeline import ledger

from tests.mlops.webhooks.support import (
    MAPPING,
    apply_deployments,
    flow_runs,
    github_post,
    mlflow_body,
    mlflow_post,
    receiver,
)
from tests.servers import prefect_server

# GitHub's published test vector (docs.github.com, "Validating webhook deliveries")
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
MLFLOW_SECRET = "mlflow-" + secrets.token_hex(16)
MAX_BODY = 4096

PUSH = {
    "ref": "refs/heads/main",
    "after": "c0ffee",
    "repository": {"name": "churn", "full_name": "team/churn"},
}
VERSION = {"name": "churn", "version": "7", "source": "models:/m-1", "run_id": "r", "tags": {}}


@dataclass
class Hooks:
    api: str
    url: str
    home: Path
    tmp: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooks]:
    tmp = tmp_path_factory.mktemp("webhooks")
    (tmp / "prefect").mkdir()
    mapping = tmp / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    env = {
        "MLOPS_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "MLOPS_MLFLOW_WEBHOOK_SECRET": MLFLOW_SECRET,
        "MLOPS_WEBHOOK_MAPPING_FILE": str(mapping),
        "MLOPS_WEBHOOK_MAX_BODY_BYTES": str(MAX_BODY),
        # shared CI cores can slow the Prefect server past the default 0.8 s; the 1 s answer
        # time is measured by benchmarks/webhook_load.py, not asserted here
        "MLOPS_WEBHOOK_START_TIMEOUT": "10",
    }
    with prefect_server(tmp / "prefect") as api:
        home = tmp / "home"
        apply_deployments(api, home)
        with receiver(home, api, tmp / "receiver-1.log", **env) as url:
            yield Hooks(api, url, home, tmp, env)


def runs_of(hooks: Hooks, delivery: str) -> list[dict]:
    return flow_runs(hooks.api, f"delivery:{delivery}")


# --- GitHub ----------------------------------------------------------------------------------


def test_github_published_vector_against_the_server(hooks: Hooks) -> None:
    # the vector's body is not JSON: only a ping, which parses nothing, can carry it
    answer = github_post(hooks.url, None, "ping", b"Hello, World!", signature=GITHUB_VECTOR)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "pong"
    wrong = GITHUB_VECTOR[:-2] + "00"
    answer = github_post(hooks.url, None, "ping", b"Hello, World!", signature=wrong)
    assert answer.status_code == 401


def test_github_valid_push_starts_the_mapped_run(hooks: Hooks) -> None:
    delivery = str(uuid.uuid4())
    answer = github_post(hooks.url, GITHUB_SECRET, "push", PUSH, delivery)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "accepted"
    (run,) = runs_of(hooks, delivery)
    assert run["id"] == body["flow_run_id"]
    assert run["parameters"] == {
        "source": "/srv/models/churn/c0ffee",
        "name": "churn",
        "tags": {"git_commit": "c0ffee"},
    }
    assert run["state_type"] == "SCHEDULED"  # started at once; nothing waited for it


@pytest.mark.parametrize("signature", [None, "", "sha256=" + "0" * 64, "sha1=abc"])
def test_github_missing_or_bad_signature_is_401_and_starts_nothing(
    hooks: Hooks, signature: str | None
) -> None:
    delivery = str(uuid.uuid4())
    body = json.dumps(PUSH).encode()
    answer = github_post(hooks.url, None, "push", body, delivery, signature=signature)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    # a body signed with another secret is refused too
    answer = github_post(hooks.url, "not the secret", "push", body, delivery)
    assert answer.status_code == 401
    assert runs_of(hooks, delivery) == []
    # and the refused id was not consumed: the genuine delivery still goes through
    assert github_post(hooks.url, GITHUB_SECRET, "push", PUSH, delivery).status_code == 202


def test_github_replayed_and_redelivered_start_no_second_run(hooks: Hooks) -> None:
    delivery = str(uuid.uuid4())
    first = github_post(hooks.url, GITHUB_SECRET, "push", PUSH, delivery)
    assert first.status_code == 202
    replayed = github_post(hooks.url, GITHUB_SECRET, "push", PUSH, delivery)
    assert replayed.status_code == 409
    error = replayed.json()["error"]
    assert error["code"] == "replayed"
    assert error["details"]["flow_runs"][0]["id"] == first.json()["flow_run_id"]
    # GitHub's "Redeliver" sends the same delivery id (here with another payload, re-signed)
    other = {**PUSH, "after": "beef"}
    assert github_post(hooks.url, GITHUB_SECRET, "push", other, delivery).status_code == 409
    assert len(runs_of(hooks, delivery)) == 1


def test_github_unknown_and_unmapped_events_are_ignored(hooks: Hooks) -> None:
    for event, payload in (("issues", {"action": "opened"}), ("push", {**PUSH, "ref": "x"})):
        delivery = str(uuid.uuid4())
        answer = github_post(hooks.url, GITHUB_SECRET, event, payload, delivery)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "ignored"
        assert runs_of(hooks, delivery) == []


def test_github_release_and_unmappable_payload(hooks: Hooks) -> None:
    release = {"release": {"tag_name": "v3"}, "repository": PUSH["repository"]}
    delivery = str(uuid.uuid4())
    answer = github_post(hooks.url, GITHUB_SECRET, "release", release, delivery)
    assert answer.status_code == 202
    (run,) = runs_of(hooks, delivery)
    assert run["parameters"]["source"] == "/srv/churn/v3"
    delivery = str(uuid.uuid4())
    answer = github_post(hooks.url, GITHUB_SECRET, "release", {"repository": {}}, delivery)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "unmappable_event"
    assert runs_of(hooks, delivery) == []


# --- MLflow ----------------------------------------------------------------------------------


def test_mlflow_valid_model_version_created_starts_the_mapped_run(hooks: Hooks) -> None:
    delivery = str(uuid.uuid4())
    body = mlflow_body("model_version.created", VERSION)
    answer = mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery)
    assert answer.status_code == 202, answer.text
    (run,) = runs_of(hooks, delivery)
    assert run["id"] == answer.json()["flow_run_id"]
    assert run["parameters"]["challenger"] == "models:/churn/7"
    assert run["parameters"]["name"] == "churn"


@pytest.mark.parametrize("header", ["X-MLflow-Signature", "X-MLflow-Delivery-Id", "none"])
def test_mlflow_missing_or_bad_signature_is_401(hooks: Hooks, header: str) -> None:
    delivery = str(uuid.uuid4())
    body = mlflow_body("model_version.created", VERSION)
    if header == "none":
        answer = mlflow_post(hooks.url, "wrong-secret", body, delivery)
    else:
        answer = mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery, headers={header: None})
    assert answer.status_code == 401
    assert runs_of(hooks, delivery) == []


def test_mlflow_stale_timestamp_is_409_and_starts_nothing(hooks: Hooks) -> None:
    delivery = str(uuid.uuid4())
    body = mlflow_body("model_version.created", VERSION)
    answer = mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery, timestamp=int(time.time()) - 400)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "stale"
    assert runs_of(hooks, delivery) == []


def test_mlflow_replayed_and_redelivered_start_no_second_run(hooks: Hooks) -> None:
    delivery = str(uuid.uuid4())
    body = mlflow_body("model_version.created", VERSION)
    stamp = int(time.time())
    assert mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery, stamp).status_code == 202
    # the same request again (a replay within the tolerance)
    replayed = mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery, stamp)
    assert replayed.status_code == 409
    assert replayed.json()["error"]["code"] == "replayed"
    # MLflow's retry: same delivery id, fresh timestamp and signature
    redelivered = mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery, stamp + 5)
    assert redelivered.status_code == 409
    assert len(runs_of(hooks, delivery)) == 1


def test_mlflow_unknown_event_is_ignored(hooks: Hooks) -> None:
    delivery = str(uuid.uuid4())
    body = mlflow_body("model_version_tag.set", {"name": "churn", "version": "7", "key": "k"})
    answer = mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery)
    assert answer.status_code == 202
    assert answer.json() == {
        "status": "ignored",
        "source": "mlflow",
        "event": "model_version_tag.set",
        "delivery_id": delivery,
    }
    assert runs_of(hooks, delivery) == []


# --- both ------------------------------------------------------------------------------------


def test_bodies_over_the_limit_are_413(hooks: Hooks) -> None:
    big = {**PUSH, "padding": "x" * MAX_BODY}
    delivery = str(uuid.uuid4())
    answer = github_post(hooks.url, GITHUB_SECRET, "push", big, delivery)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    body = mlflow_body("model_version.created", {**VERSION, "description": "x" * MAX_BODY})
    assert mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery).status_code == 413
    assert runs_of(hooks, delivery) == []


def test_not_json_is_400(hooks: Hooks) -> None:
    answer = github_post(hooks.url, GITHUB_SECRET, "push", b"not json")
    assert answer.status_code == 400
    answer = mlflow_post(hooks.url, MLFLOW_SECRET, b"[1, 2]")
    assert answer.status_code == 400


def test_replays_stay_refused_after_a_restart_and_old_records_are_pruned(hooks: Hooks) -> None:
    delivery = str(uuid.uuid4())
    assert github_post(hooks.url, GITHUB_SECRET, "push", PUSH, delivery).status_code == 202
    body = mlflow_body("model_version.created", VERSION)
    stamp = int(time.time())
    assert mlflow_post(hooks.url, MLFLOW_SECRET, body, delivery, stamp).status_code == 202
    old = str(uuid.uuid4())
    assert github_post(hooks.url, GITHUB_SECRET, "push", PUSH, old).status_code == 202
    deliveries = ledger.webhook_deliveries_table
    db = sa.create_engine(f"sqlite:///{hooks.home / 'ledger.db'}")
    with db.begin() as conn:  # received 31 days ago: past the 30-day retention
        aged = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
        conn.execute(
            sa.update(deliveries).where(deliveries.c.delivery_id == old).values(received_at=aged)
        )
    # a second receiver process on the same ledger database (as after a restart)
    with receiver(hooks.home, hooks.api, hooks.tmp / "receiver-2.log", **hooks.env) as url:
        assert github_post(url, GITHUB_SECRET, "push", PUSH, delivery).status_code == 409
        assert mlflow_post(url, MLFLOW_SECRET, body, delivery, stamp).status_code == 409
    assert len(runs_of(hooks, delivery)) == 2  # one per sender
    # its first delivery pruned the record past the retention, and only that one
    with db.connect() as conn:
        kept = set(conn.execute(sa.select(deliveries.c.delivery_id)).scalars())
    db.dispose()
    assert delivery in kept and old not in kept


def test_an_endpoint_without_a_secret_refuses_everything_with_503(hooks: Hooks) -> None:
    env = {k: v for k, v in hooks.env.items() if "SECRET" not in k}
    env["MLOPS_GITHUB_WEBHOOK_SECRET"] = ""
    env["MLOPS_MLFLOW_WEBHOOK_SECRET"] = ""
    with receiver(hooks.tmp / "home-3", hooks.api, hooks.tmp / "receiver-3.log", **env) as url:
        delivery = str(uuid.uuid4())
        for answer, variable in (
            (github_post(url, GITHUB_SECRET, "push", PUSH, delivery), "GITHUB"),
            (github_post(url, None, "push", PUSH, delivery), "GITHUB"),
            (
                mlflow_post(url, MLFLOW_SECRET, mlflow_body("model_version.created", VERSION)),
                "MLFLOW",
            ),
        ):
            assert answer.status_code == 503
            error = answer.json()["error"]
            assert error["code"] == "webhook_secret_missing"
            assert f"MLOPS_{variable}_WEBHOOK_SECRET is not set" in error["message"]
        assert runs_of(hooks, delivery) == []


def test_secrets_are_never_logged(hooks: Hooks) -> None:
    """A whole run of a receiver, every kind of request, then its complete log."""
    log = hooks.tmp / "receiver-4.log"
    with receiver(hooks.tmp / "home-4", hooks.api, log, **hooks.env) as url:
        delivery = str(uuid.uuid4())
        github_post(url, GITHUB_SECRET, "push", PUSH, delivery)
        github_post(url, GITHUB_SECRET, "push", PUSH, delivery)
        github_post(url, "wrong", "push", PUSH)
        github_post(url, GITHUB_SECRET, "issues", {})
        body = mlflow_body("model_version.created", VERSION)
        mlflow_post(url, MLFLOW_SECRET, body)
        mlflow_post(url, "wrong", body)
        mlflow_post(url, MLFLOW_SECRET, body, timestamp=int(time.time()) - 900)
    text = log.read_text()
    assert "started redeploy/redeploy" in text and "unauthorized" in text  # it did log
    for secret in (GITHUB_SECRET, MLFLOW_SECRET):
        assert secret not in text
    assert "sha256=" not in text and "v1," not in text  # nor signatures


# --- a real MLflow server delivering ---------------------------------------------------------


def test_a_real_mlflow_server_delivers_model_version_created(
    hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow server` with the environment `mlops up` gives it, the webhook registered by
    `mlops webhook register-mlflow`, then a version created through the server: the mapped
    flow run appears on the Prefect server."""
    import mlflow
    from mlflow import MlflowClient
    from mlops_pipeline.webhooks.registration import encryption_key, mlflow_server_env

    from tests.mlops.webhooks.support import MLOPS
    from tests.servers import mlflow_server

    tmp = hooks.tmp / "mlflow"
    tmp.mkdir()
    for name, value in mlflow_server_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", encryption_key(tmp))
    with mlflow_server(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts") as server:
        env = {**os.environ, "MLOPS_MLFLOW_WEBHOOK_SECRET": MLFLOW_SECRET}
        command = [MLOPS, "webhook", "register-mlflow", "--url", f"{hooks.url}/hooks/mlflow"]
        command += ["--tracking-uri", server, "--test", "--json"]
        for created in (True, False):  # registering again updates the same webhook
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            result = json.loads(done.stdout)
            assert result["created"] is created
            assert result["events"] == ["model_version.created", "model_version_alias.created"]
            assert result["test"]["success"] and result["test"]["status"] == 202, result
        assert MLFLOW_SECRET not in done.stdout + done.stderr

        client = MlflowClient(tracking_uri=server, registry_uri=server)
        mlflow.set_tracking_uri(server)
        with mlflow.start_run() as run:
            mlflow.log_text("stand-in", "model/MLmodel")
        client.create_registered_model("hooked")
        client.create_model_version("hooked", f"runs:/{run.info.run_id}/model", run.info.run_id)

        deadline = time.monotonic() + 60
        found: list[dict] = []
        while not found and time.monotonic() < deadline:
            found = [
                r
                for r in flow_runs(hooks.api, "webhook:mlflow")
                if r["parameters"].get("name") == "hooked"
            ]
            time.sleep(0.5)
    (started,) = found
    assert started["parameters"]["challenger"] == "models:/hooked/1"
    assert started["state_type"] == "SCHEDULED"
    assert any(tag.startswith("delivery:") for tag in started["tags"])


def test_secrets_from_prefect_secret_blocks(hooks: Hooks) -> None:
    """No secret variables: the keys come from Prefect Secret blocks; a missing block is exit 3."""
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.mlops.webhooks.support import MLOPS

    with temporary_settings({PREFECT_API_URL: hooks.api}):
        Secret(value=GITHUB_SECRET).save("gh-webhook", overwrite=True)
        Secret(value=MLFLOW_SECRET).save("mlflow-webhook", overwrite=True)
    env = {k: v for k, v in hooks.env.items() if "SECRET" not in k}
    env["MLOPS_WEBHOOK_GITHUB_SECRET_BLOCK"] = "gh-webhook"
    env["MLOPS_WEBHOOK_MLFLOW_SECRET_BLOCK"] = "mlflow-webhook"
    log = hooks.tmp / "receiver-5.log"
    with receiver(hooks.tmp / "home-5", hooks.api, log, **env) as url:
        delivery = str(uuid.uuid4())
        assert github_post(url, GITHUB_SECRET, "push", PUSH, delivery).status_code == 202
        body = mlflow_body("model_version.created", VERSION)
        assert mlflow_post(url, MLFLOW_SECRET, body, delivery).status_code == 202
        assert github_post(url, "wrong", "push", PUSH).status_code == 401
    assert GITHUB_SECRET not in log.read_text() and MLFLOW_SECRET not in log.read_text()

    missing = {
        **os.environ,
        **env,
        "PREFECT_API_URL": hooks.api,
        "MLOPS_HOME": str(hooks.tmp / "home-6"),
        "MLOPS_WEBHOOK_GITHUB_SECRET_BLOCK": "no-such-block",
    }
    for name in ("MLOPS_GITHUB_WEBHOOK_SECRET", "MLOPS_MLFLOW_WEBHOOK_SECRET"):
        missing.pop(name, None)
    done = subprocess.run(
        [MLOPS, "webhook", "serve"], env=missing, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stderr
    assert "No Prefect Secret block named 'no-such-block'" in done.stderr
