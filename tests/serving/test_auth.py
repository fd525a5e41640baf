"""API keys: primary and secondary both work, via Bearer or api-key; /ping stays open."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.serving.conftest import split_payload, start_server

PRIMARY, SECONDARY = "primary-key-0123456789", "secondary-key-9876543210"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, iris_model_dir):
    tmp = tmp_path_factory.mktemp("auth")
    key_file = tmp / "keys"
    key_file.write_text(f"{PRIMARY}\n{SECONDARY}\n")
    server = start_server(tmp, iris_model_dir, MLOPS_SERVING_API_KEY_FILE=str(key_file))
    server.key_file = key_file
    yield server
    assert server.stop() == 0


@pytest.fixture
def body(iris_features) -> dict:
    return split_payload(iris_features.head(2))


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {PRIMARY}"},
        {"Authorization": f"bearer {SECONDARY}"},
        {"api-key": PRIMARY},
        {"api-key": SECONDARY},
    ],
    ids=["bearer-primary", "bearer-secondary", "api-key-primary", "api-key-secondary"],
)
def test_valid_keys_score(auth_server, body, headers):
    response = httpx.post(f"{auth_server.url}/invocations", json=body, headers=headers, timeout=30)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {PRIMARY}"},
        {"api-key": PRIMARY[:-1]},
        {"api-key": ""},
    ],
    ids=["missing", "wrong", "basic-scheme", "prefix-of-key", "empty"],
)
@pytest.mark.parametrize("path", ["/invocations", "/version", "/metrics", "/openapi.json"])
def test_missing_or_wrong_key_is_401(auth_server, body, headers, path):
    if path == "/invocations":
        response = httpx.post(f"{auth_server.url}{path}", json=body, headers=headers, timeout=30)
    else:
        response = httpx.get(f"{auth_server.url}{path}", headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_probes_stay_open(auth_server):
    assert httpx.get(f"{auth_server.url}/ping", timeout=30).text == "ok"
    assert httpx.get(f"{auth_server.url}/ready", timeout=30).status_code == 200
    assert httpx.get(f"{auth_server.url}/health/live", timeout=30).text == "ok"


def test_rejections_are_counted(auth_server, body):
    headers = {"api-key": PRIMARY}
    before = auth_server.metric("mlops_serving_requests_total", headers, status="401")
    httpx.post(f"{auth_server.url}/invocations", json=body, timeout=30)
    after = auth_server.metric("mlops_serving_requests_total", headers, status="401")
    assert after == before + 1


def test_rotating_the_key_file_needs_no_restart(auth_server, body):
    new_key = "rotated-key-555"
    auth_server.key_file.write_text(f"{new_key}\n{PRIMARY}\n")
    stat = auth_server.key_file.stat()
    os.utime(auth_server.key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            status = httpx.post(
                f"{auth_server.url}/invocations",
                json=body,
                headers={"api-key": new_key},
                timeout=30,
            ).status_code
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200
        old_secondary = httpx.post(
            f"{auth_server.url}/invocations", json=body, headers={"api-key": SECONDARY}, timeout=30
        )
        assert old_secondary.status_code == 401
    finally:
        auth_server.key_file.write_text(f"{PRIMARY}\n{SECONDARY}\n")
