"""The stable-port proxy as shipped (a `serving.proxy` subprocess) over real upstreams."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from mlops_pipeline.serving.contract import free_port

from tests.serving.conftest import ThreadServer

TOKEN = "test-admin-token"


def upstream_app(label: str, ready: bool = True):
    """An upstream that reports its label, echoes requests and has a slow endpoint."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = 200, {"upstream": label}
        if scope["path"] == "/ready" and not ready:
            status = 503
        elif scope["path"] == "/slow":
            await asyncio.sleep(1.0)
        elif scope["path"] == "/echo":
            payload.update(
                method=scope["method"],
                query=scope["query_string"].decode(),
                body=body.decode(),
                headers={k.decode(): v.decode() for k, v in scope["headers"]},
            )
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-upstream", label.encode()),
                ],
            }
        )
        if scope["path"] == "/stream":  # no length: uvicorn sends it chunked, 0.2 s apart
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
                await asyncio.sleep(0.2)
            data = b""
        await send({"type": "http.response.body", "body": data})

    return app


class Upstream(ThreadServer):
    def __init__(self, label: str, ready: bool = True) -> None:
        super().__init__(upstream_app(label, ready))


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream, Upstream]]:
    ups = (Upstream("blue"), Upstream("green"), Upstream("broken", ready=False))
    yield ups
    for up in ups:
        up.stop()


def start_proxy(upstream: str | None, tmp_path: Path, token: str | None = TOKEN, **settings):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_SERVING_PROXY_")}
    env["MLOPS_SERVING_PROXY_STATE_FILE"] = str(tmp_path / "upstream.json")
    if token:
        env["MLOPS_SERVING_PROXY_TOKEN"] = token
    env.update(settings)
    args = [sys.executable, "-m", "mlops_pipeline.serving.proxy", "--port", str(port)]
    if upstream:
        args += ["--upstream", upstream]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/-/proxy/ping").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(proc.stderr.read().decode())


@pytest.fixture
def proxy(upstreams, tmp_path: Path) -> Iterator[str]:
    proc, url = start_proxy(upstreams[0].url, tmp_path)
    yield url
    proc.terminate()
    assert proc.wait(15) == 0


def switch(url: str, upstream: str, token: str = TOKEN, **extra) -> httpx.Response:
    return httpx.put(
        url + "/-/proxy/upstream",
        json={"upstream": upstream, **extra},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_forwards_method_path_query_body_and_headers(proxy: str) -> None:
    response = httpx.post(
        proxy + "/echo?x=1", content=b'{"a": 1}', headers={"X-Api-Key": "k", "Connection": "close"}
    )
    assert response.status_code == 200
    assert response.headers["x-upstream"] == "blue"
    echoed = response.json()
    assert echoed["method"] == "POST" and echoed["query"] == "x=1" and echoed["body"] == '{"a": 1}'
    assert echoed["headers"]["x-api-key"] == "k"
    assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echoed["headers"]["host"].startswith("127.0.0.1:")


def test_admin_api_needs_the_token(proxy: str, upstreams) -> None:
    assert switch(proxy, upstreams[1].url, token="wrong").status_code == 401
    assert httpx.get(proxy + "/-/proxy/upstream").status_code == 401
    assert httpx.get(proxy + "/echo").json()["upstream"] == "blue"


def test_switch_refuses_an_upstream_that_is_not_ready(proxy: str, upstreams) -> None:
    response = switch(proxy, upstreams[2].url)
    assert response.status_code == 409
    assert "not ready" in response.json()["error"]["message"]
    assert httpx.get(proxy + "/echo").json()["upstream"] == "blue"


def test_switch_drains_in_flight_requests_on_the_old_upstream(proxy: str, upstreams) -> None:
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(httpx.get, proxy + "/slow", timeout=10) for _ in range(3)]
        time.sleep(0.3)
        response = switch(proxy, upstreams[1].url, drain_timeout=10)
        after = httpx.get(proxy + "/echo")
        results = [f.result() for f in slow]

    body = response.json()
    assert response.status_code == 200
    assert body["previous"] == upstreams[0].url and body["upstream"] == upstreams[1].url
    assert body["drained"] is True and body["in_flight_left"] == 0
    assert 0.4 < body["drain_seconds"] < 5
    assert [r.status_code for r in results] == [200, 200, 200]
    assert {r.json()["upstream"] for r in results} == {"blue"}
    assert after.json()["upstream"] == "green"
    state = httpx.get(proxy + "/-/proxy/upstream", headers={"Authorization": f"Bearer {TOKEN}"})
    assert state.json() == {"upstream": upstreams[1].url, "in_flight": {}}


def test_liveness_is_the_proxys_own_and_readiness_is_the_upstreams(proxy: str) -> None:
    live = httpx.get(proxy + "/health/live")
    assert (live.status_code, live.text) == (200, "ok")
    assert "x-upstream" not in live.headers  # answered by the proxy, never forwarded
    for path in ("/ping", "/ready"):
        assert httpx.get(proxy + path).headers["x-upstream"] == "blue"


def test_unreachable_upstream_is_a_clean_502(tmp_path: Path) -> None:
    proc, url = start_proxy(f"http://127.0.0.1:{free_port()}", tmp_path)
    try:
        response = httpx.post(url + "/invocations", json={"secret": "payload"})
        assert response.status_code == 502
        assert response.json() == {
            "error": {"code": "bad_gateway", "message": "The model service is unavailable."}
        }
        # not ready to score, yet alive: an orchestrator must not restart the proxy for it
        assert httpx.get(url + "/ping").status_code == 502
        assert httpx.get(url + "/health/live").status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_streamed_answer_goes_on_as_it_comes_and_head_has_no_body(proxy: str) -> None:
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", proxy + "/stream") as response:
            arrivals = [(part, time.monotonic()) for part in response.iter_raw()]
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.headers["x-upstream"] == "blue"
        assert b"".join(part for part, _ in arrivals) == b"one,two,three"
        assert len(arrivals) >= 2  # relayed as it came, not gathered first
        head = client.head(proxy + "/echo")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["x-upstream"] == "blue"
        # the same keep-alive connection still works after both
        assert client.get(proxy + "/echo").json()["upstream"] == "blue"


def test_an_upstream_past_the_timeout_is_a_clean_504(upstreams, tmp_path: Path) -> None:
    proc, url = start_proxy(upstreams[0].url, tmp_path, MLOPS_SERVING_PROXY_TIMEOUT="0.3")
    try:
        response = httpx.get(url + "/slow", timeout=10)
        assert response.status_code == 504
        assert response.json() == {
            "error": {"code": "upstream_timeout", "message": "The model did not answer."}
        }
        assert httpx.get(url + "/echo", timeout=10).json()["upstream"] == "blue"
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def test_without_upstream_503_and_without_token_admin_is_disabled(tmp_path: Path) -> None:
    proc, url = start_proxy(None, tmp_path, token=None)
    try:
        assert httpx.get(url + "/ready").status_code == 503
        assert httpx.get(url + "/health/live").status_code == 200
        assert switch(url, "http://127.0.0.1:1").status_code == 403
    finally:
        proc.terminate()
        proc.wait(15)


def test_restarted_proxy_keeps_the_switched_upstream(upstreams, tmp_path: Path) -> None:
    proc, url = start_proxy(upstreams[0].url, tmp_path)
    assert switch(url, upstreams[1].url).status_code == 200
    proc.kill()
    proc.wait()
    proc, url = start_proxy(upstreams[0].url, tmp_path)
    try:
        assert httpx.get(url + "/echo").json()["upstream"] == "green"
    finally:
        proc.terminate()
        proc.wait(15)


def test_admin_token_can_come_from_a_file(upstreams, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    proc, url = start_proxy(
        upstreams[0].url, tmp_path, token=None, MLOPS_SERVING_PROXY_TOKEN_FILE=str(token_file)
    )
    try:
        assert switch(url, upstreams[1].url, token=TOKEN).status_code == 401
        assert switch(url, upstreams[1].url, token="from-a-file").status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_rotated_token_file_takes_effect_without_a_restart(upstreams, tmp_path: Path) -> None:
    # a Kubernetes Secret volume: the file may be missing at start and is swapped on rotation
    secret = tmp_path / "secret"
    secret.mkdir()
    token_file = secret / "token"
    proc, url = start_proxy(
        upstreams[0].url, tmp_path, token=None, MLOPS_SERVING_PROXY_TOKEN_FILE=str(token_file)
    )
    try:
        assert switch(url, upstreams[1].url, token="first").status_code == 403  # admin off
        token_file.write_text("first\n")
        assert switch(url, upstreams[1].url, token="first").status_code == 200
        # the kubelet swaps a symlink: a new file, not an edit of the old one
        (secret / "next").write_text("second\n")
        (secret / "next").replace(token_file)
        assert switch(url, upstreams[0].url, token="first").status_code == 401
        assert switch(url, upstreams[0].url, token="second").status_code == 200
        token_file.unlink()
        assert switch(url, upstreams[1].url, token="second").status_code == 403
    finally:
        proc.terminate()
        proc.wait(15)
    assert "admin API off" in proc.stderr.read().decode()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLOPS_SERVING_PROXY_TIMEOUT", "soon"),
        ("MLOPS_SERVING_PROXY_TOKEN_FILE", "/nonexistent/token"),
    ],
)
def test_bad_settings_are_one_line_naming_the_variable(variable: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_SERVING_PROXY_")}
    result = subprocess.run(
        [sys.executable, "-m", "mlops_pipeline.serving.proxy", "--port", str(free_port())],
        env={**env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and variable in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_token_header_for_gateways_that_consume_authorization(proxy: str) -> None:
    # the Kubernetes API server's pod proxy keeps no Authorization header for the pod
    routes = proxy + "/-/proxy/routes"
    assert httpx.get(routes, headers={"X-MLOps-Proxy-Token": TOKEN}).status_code == 200
    assert httpx.get(routes, headers={"X-MLOps-Proxy-Token": "wrong"}).status_code == 401
    assert httpx.get(routes, headers={"X-MLOps-Proxy-Token": ""}).status_code == 401


def test_start_up_version_and_routes_come_from_the_environment(upstreams, tmp_path: Path) -> None:
    blue, green, _ = upstreams
    routes = {"canary": {"upstream": green.url, "percent": 100, "version": "2"}}
    proc, url = start_proxy(
        blue.url,
        tmp_path,
        MLOPS_SERVING_PROXY_VERSION="1",
        MLOPS_SERVING_PROXY_ROUTES=json.dumps(routes),
    )
    try:
        # only scoring calls are split: the canary takes 100 % of them
        answer = httpx.post(url + "/invocations")
        assert (answer.json()["upstream"], answer.headers["x-model-version"]) == ("green", "2")
        shown = httpx.get(url + "/-/proxy/routes", headers={"Authorization": f"Bearer {TOKEN}"})
        assert shown.json()["primary"] == {"upstream": blue.url, "version": "1"}
        assert shown.json()["canary"] == {"upstream": green.url, "percent": 100.0, "version": "2"}
    finally:
        proc.terminate()
        proc.wait(15)
    # an empty value (a routes ConfigMap without routes) is no route
    proc, url = start_proxy(blue.url, tmp_path, MLOPS_SERVING_PROXY_ROUTES="")
    try:
        assert httpx.get(url + "/echo").json()["upstream"] == "blue"
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize(
    "routes", ['{"primary": 1}', "{not json", '{"canary": {"upstream": "x", "percent": 500}}']
)
def test_bad_start_up_routes_warn_and_serve_the_primary_with_its_version(
    routes: str, upstreams, tmp_path: Path
) -> None:
    # a hand-edited routes ConfigMap must not crash-loop every new pod, nor drop its label
    blue, _, _ = upstreams
    proc, url = start_proxy(
        blue.url, tmp_path, MLOPS_SERVING_PROXY_VERSION="3", MLOPS_SERVING_PROXY_ROUTES=routes
    )
    try:
        answer = httpx.get(url + "/echo")
        assert (answer.json()["upstream"], answer.headers["x-model-version"]) == ("blue", "3")
        shown = httpx.get(url + "/-/proxy/routes", headers={"Authorization": f"Bearer {TOKEN}"})
        assert shown.json()["canary"] is None and shown.json()["shadow"] is None
    finally:
        proc.terminate()
        proc.wait(15)
    warnings = [line for line in proc.stderr.read().decode().splitlines() if "WARNING" in line]
    assert len(warnings) == 1, warnings
    assert (
        "MLOPS_SERVING_PROXY_ROUTES: " in warnings[0] and "starting without routes" in warnings[0]
    )


def test_an_admin_port_takes_the_admin_api_off_the_stable_port(upstreams, tmp_path: Path) -> None:
    # the stable port may be what a load balancer exposes: routes change on the admin port only
    blue, green, _ = upstreams
    admin_port = free_port()
    proc, url = start_proxy(blue.url, tmp_path, MLOPS_SERVING_PROXY_ADMIN_PORT=str(admin_port))
    admin = f"http://127.0.0.1:{admin_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert httpx.get(url + "/echo").json()["upstream"] == "blue"
        assert httpx.get(url + "/-/proxy/ping").status_code == 200
        for path in ("routes", "upstream", "stats"):
            refused = httpx.get(f"{url}/-/proxy/{path}", headers=auth)
            assert refused.status_code == 404, path
            assert "admin port" in refused.json()["error"]["message"]
        assert httpx.put(url + "/-/proxy/upstream", headers=auth, json={}).status_code == 404
        # the admin port: the admin API behind the token, liveness, nothing forwarded
        assert httpx.get(admin + "/-/proxy/routes").status_code == 401
        assert httpx.get(admin + "/health/live").status_code == 200
        assert httpx.get(admin + "/echo").status_code == 404
        route = {"canary": {"upstream": green.url, "percent": 100, "version": "2"}}
        assert httpx.put(admin + "/-/proxy/routes", headers=auth, json=route).status_code == 200
        assert httpx.post(url + "/invocations").json()["upstream"] == "green"
    finally:
        proc.terminate()
        proc.wait(15)
