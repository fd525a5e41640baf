"""Canary and shadow routes of the stable-port proxy (a `serving.proxy` subprocess) over real
uvicorn upstreams on 127.0.0.1, and over real scoring services for the capture join."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlops_pipeline.serving.contract import free_port
from mlops_pipeline.serving.proxy import sticky_bucket

from tests.conftest import IRIS_COLUMNS
from tests.serving.conftest import (
    ThreadServer,
    read_capture,
    split_payload,
    start_server,
    wait_for,
)
from tests.serving.test_proxy import TOKEN, start_proxy

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Stub(ThreadServer):
    """An upstream on its own uvicorn thread: answers /invocations like the scoring service
    (JSON body, a fresh X-Request-ID), and records the X-Shadow-Of header of each request.

    mode "ok" answers at once, "sleep" after `delay` seconds, "error" with a 500, "refuse" with
    a 422 (what the scoring service answers when the model raises on the input).
    """

    def __init__(
        self, label: str, mode: str = "ok", ready: bool = True, delay: float = 2.0
    ) -> None:
        self.label, self.mode, self.ready, self.delay = label, mode, ready, delay
        self.received: list[str | None] = []
        super().__init__(self.app, interface="asgi3")

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = dict(scope["headers"])
        status = 200
        if scope["path"] == "/ready":
            status = 200 if self.ready else 503
        elif scope["path"] == "/invocations":
            self.received.append(headers.get(b"x-shadow-of", b"").decode() or None)
            if self.mode == "sleep":
                await asyncio.sleep(self.delay)
            elif self.mode == "error":
                status = 500
            elif self.mode == "refuse":
                status = 422
        body = json.dumps({"upstream": self.label}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-upstream", self.label.encode()),
                    (b"x-request-id", uuid.uuid4().hex.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Closer:
    """A TCP server that accepts each connection and closes it without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def blue_green() -> Iterator[tuple[Stub, Stub]]:
    stubs = (Stub("blue"), Stub("green"))
    yield stubs
    for stub in stubs:
        stub.stop()


@pytest.fixture
def proxy(blue_green, tmp_path: Path) -> Iterator[str]:
    proc, url = start_proxy(blue_green[0].url, tmp_path)
    yield url
    proc.terminate()
    assert proc.wait(15) == 0


def put_routes(url: str, body: dict) -> httpx.Response:
    return httpx.put(url + "/-/proxy/routes", json=body, headers=AUTH, timeout=30)


def get(url: str, path: str) -> dict:
    response = httpx.get(url + path, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def stats_of(url: str, route: str, version: str | None) -> dict:
    entries = get(url, "/-/proxy/stats?window=300")["stats"]
    return next((s for s in entries if (s["route"], s["version"]) == (route, version)), {})


def send(client: httpx.Client, url: str, n: int, budget: float, **headers: str) -> list:
    """POST /invocations n times in sequence, within `budget` seconds; (response, seconds)."""
    out = []
    deadline = time.monotonic() + budget
    for _ in range(n):
        assert time.monotonic() < deadline, f"{len(out)} of {n} requests in {budget} s"
        started = time.monotonic()
        response = client.post(url + "/invocations", content=b"{}", headers=headers)
        out.append((response, time.monotonic() - started))
    return out


def wait_shadow_settled(url: str, copies: int) -> None:
    """Wait until the shadow route of version 3 has sent or dropped `copies` copies."""

    def settled() -> bool:
        s = stats_of(url, "shadow", "3")
        return s.get("total_requests", 0) + s.get("total_dropped", 0) == copies

    wait_for(settled, 30, 0.05)


def test_canary_gets_its_percent_and_every_answer_names_its_version(proxy, blue_green) -> None:
    blue, green = blue_green
    assert (
        httpx.put(
            proxy + "/-/proxy/upstream", json={"upstream": blue.url, "version": "1"}, headers=AUTH
        ).json()["version"]
        == "1"
    )
    set_canary = put_routes(
        proxy, {"canary": {"upstream": green.url, "percent": 10, "version": "2"}}
    )
    assert set_canary.status_code == 200, set_canary.text

    with httpx.Client(timeout=10) as client:
        answers = send(client, proxy, 1000, budget=120)
    versions = [r.headers["x-model-version"] for r, _ in answers]
    assert all(r.status_code == 200 for r, _ in answers)
    # the version header always names the upstream that answered
    assert all(
        (r.headers["x-upstream"], r.headers["x-model-version"]) in {("blue", "1"), ("green", "2")}
        for r, _ in answers
    )
    # Binomial(1000, 0.1): mean 100, sd sqrt(1000 * 0.1 * 0.9) = 9.5; 4 sd = 38 leaves a false
    # failure probability of about 6e-5 while a split that ignored the percent (0, or 50 %) fails.
    assert abs(versions.count("2") - 100) <= 38, versions.count("2")
    # the proxy's own per-version counts agree with what the clients saw
    assert stats_of(proxy, "primary", "1")["total_requests"] == versions.count("1")
    assert stats_of(proxy, "canary", "2")["total_requests"] == versions.count("2")


def test_sticky_routing_keeps_a_client_on_one_version_and_only_moves_it_to_the_canary(
    proxy, blue_green
) -> None:
    blue, green = blue_green
    canary = {"upstream": green.url, "percent": 10, "version": "2"}
    assert put_routes(proxy, {"canary": canary, "sticky_header": "X-Client-ID"}).status_code == 200
    clients = [f"client-{i}" for i in range(200)]

    def on_canary(budget: float) -> set[str]:
        chosen = set()
        with httpx.Client(timeout=10) as client:
            for cid in clients:
                seen = {
                    r.headers["x-upstream"]
                    for r, _ in send(client, proxy, 3, budget, **{"X-Client-ID": cid})
                }
                assert len(seen) == 1, f"{cid} was served by {seen}"
                if seen == {"green"}:
                    chosen.add(cid)
        return chosen

    at_10 = on_canary(budget=60)
    # deterministic: exactly the clients whose stable bucket is below 10 % of 10,000
    assert at_10 == {c for c in clients if sticky_bucket(c.encode()) < 1000}
    assert 0 < len(at_10) < 60
    canary["percent"] = 50
    assert put_routes(proxy, {"canary": canary}).status_code == 200
    at_50 = on_canary(budget=60)
    assert at_10 < at_50  # monotone: nobody left the canary, more joined it
    assert at_50 == {c for c in clients if sticky_bucket(c.encode()) < 5000}
    assert get(proxy, "/-/proxy/routes")["sticky_header"] == "X-Client-ID"


def test_sticky_routing_agrees_across_proxies(blue_green, tmp_path: Path) -> None:
    # kubernetes: every champion pod has its own proxy, and a client's requests land on any pod
    blue, green = blue_green
    routes = {
        "canary": {"upstream": green.url, "percent": 30, "version": "2"},
        "sticky_header": "X-Client-ID",
    }
    procs = []
    try:
        for i in range(2):
            state = tmp_path / f"pod-{i}"
            state.mkdir()
            proc, url = start_proxy(blue.url, state, MLOPS_SERVING_PROXY_ROUTES=json.dumps(routes))
            procs.append((proc, url))
        clients = [f"client-{i}" for i in range(60)]
        served: list[dict[str, str]] = []
        with httpx.Client(timeout=10) as client:
            for _, url in procs:
                answers = {cid: send(client, url, 1, 30, **{"X-Client-ID": cid}) for cid in clients}
                served.append({cid: a[0][0].headers["x-upstream"] for cid, a in answers.items()})
        assert served[0] == served[1]
        assert 0 < sum(u == "green" for u in served[0].values()) < 40
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(15)


@pytest.mark.parametrize("shadow_kind", ["sleep", "error", "close", "refused"])
def test_a_slow_failing_or_dead_shadow_never_alters_the_live_answer(
    proxy, blue_green, shadow_kind: str
) -> None:
    n = 30
    with httpx.Client(timeout=10) as client:
        send(client, proxy, 5, budget=30)  # warm the connections
        baseline = send(client, proxy, n, budget=60)
        if shadow_kind in ("sleep", "error"):
            shadow = Stub("shadow", mode=shadow_kind)
        elif shadow_kind == "close":
            shadow = Closer()
        else:
            shadow = None
        shadow_url = shadow.url if shadow else f"http://127.0.0.1:{free_port()}"
        try:
            route = {"upstream": shadow_url, "percent": 100, "version": "3"}
            response = put_routes(proxy, {"shadow": route, "check_ready": False})
            assert response.status_code == 200, response.text
            mirrored = send(client, proxy, n, budget=60)
            # every copy was tried and, failing or not, counted against the shadow
            wait_for(lambda: stats_of(proxy, "shadow", "3").get("total_requests") == n, 30, 0.05)
            counted = stats_of(proxy, "shadow", "3")
        finally:
            put_routes(proxy, {"shadow": None, "drain_timeout": 0})
            if shadow is not None:
                shadow.stop()

    assert [(r.status_code, r.json()) for r, _ in mirrored] == [
        (r.status_code, r.json()) for r, _ in baseline
    ]
    assert all(r.headers["x-upstream"] == "blue" for r, _ in mirrored)
    assert counted["total_errors"] == (0 if shadow_kind == "sleep" else n)
    if isinstance(shadow, Stub):
        assert len(shadow.received) == n
        live_ids = [r.headers["x-request-id"] for r, _ in mirrored]
        assert sorted(shadow.received) == sorted(live_ids)  # each copy names its live request
    # Live latency: a proxy that waited for the shadow would add 2 s (sleep) or a failed
    # connection per request. The margin is generous for a shared 2-core machine: the median
    # may grow by 5x + 50 ms over the baseline taken on the same connections just before.
    base = statistics.median(s for _, s in baseline)
    live = statistics.median(s for _, s in mirrored)
    assert live < 5 * base + 0.05, (base, live)
    assert max(s for _, s in mirrored) < 1.5


def test_a_full_shadow_queue_drops_copies_and_counts_them(blue_green, tmp_path: Path) -> None:
    shadow = Stub("shadow", mode="sleep", delay=5.0)
    proc, url = start_proxy(blue_green[0].url, tmp_path, MLOPS_SERVING_PROXY_SHADOW_MAX_PENDING="2")
    try:
        route = {"upstream": shadow.url, "percent": 100, "version": "3"}
        assert put_routes(url, {"shadow": route}).status_code == 200
        with httpx.Client(timeout=10) as client:
            answers = send(client, url, 10, budget=4)  # within the shadow's 5 s sleep
        assert all(r.status_code == 200 for r, _ in answers)
        wait_shadow_settled(url, 10)
        counted = stats_of(url, "shadow", "3")
        assert counted["total_requests"] == 2 and counted["total_dropped"] == 8
        assert counted["dropped"] == 8 and len(shadow.received) == 2
    finally:
        proc.terminate()
        proc.wait(15)
        shadow.stop()


def test_shadow_copies_are_bounded_by_the_bytes_they_hold(blue_green, tmp_path: Path) -> None:
    # 64 large batch bodies in flight could run a 256Mi sidecar out of memory: bytes bound too
    shadow = Stub("shadow", mode="sleep", delay=5.0)
    proc, url = start_proxy(
        blue_green[0].url, tmp_path, MLOPS_SERVING_PROXY_SHADOW_MAX_PENDING_BYTES="1024"
    )
    body = b"x" * 400  # two copies hold 800 bytes; a third would pass 1024
    try:
        route = {"upstream": shadow.url, "percent": 100, "version": "3"}
        assert put_routes(url, {"shadow": route}).status_code == 200
        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 4  # within the shadow's 5 s sleep
            for _ in range(10):
                assert time.monotonic() < deadline
                assert client.post(url + "/invocations", content=body).status_code == 200
        wait_shadow_settled(url, 10)
        counted = stats_of(url, "shadow", "3")
        assert counted["total_requests"] == 2 and counted["total_dropped"] == 8
        # the bytes are released as copies finish: a later copy is sent again
        with httpx.Client(timeout=10) as client:
            assert client.post(url + "/invocations", content=body).status_code == 200
        wait_for(lambda: stats_of(url, "shadow", "3").get("total_requests") == 3, 30, 0.05)
    finally:
        proc.terminate()
        proc.wait(15)
        shadow.stop()


def test_stats_count_requests_errors_and_latency_per_version(proxy, blue_green) -> None:
    failing = Stub("failing", mode="error")
    try:
        body = {"canary": {"upstream": failing.url, "percent": 50, "version": "2"}}
        assert put_routes(proxy, body).status_code == 200
        with httpx.Client(timeout=10) as client:
            answers = send(client, proxy, 200, budget=60)
    finally:
        failing.stop()
    failed = sum(r.status_code == 500 for r, _ in answers)
    stats = get(proxy, "/-/proxy/stats?window=120")
    assert stats["window_seconds"] == 120
    by_key = {(s["route"], s["version"]): s for s in stats["stats"]}
    primary, canary = by_key[("primary", None)], by_key[("canary", "2")]
    assert (canary["requests"], canary["errors"]) == (failed, failed)
    assert canary["error_rate"] == 1.0 and canary["upstream"] == failing.url
    assert (primary["requests"], primary["errors"], primary["error_rate"]) == (200 - failed, 0, 0)
    for entry in (primary, canary):
        assert 0 < entry["p50_ms"] <= entry["p95_ms"] < 10_000
        assert entry["complete"] is True
    # a window that ends before now counts nothing that finished earlier than its start
    time.sleep(0.3)
    recent = get(proxy, "/-/proxy/stats?window=0.2")["stats"]
    assert all(s["requests"] == 0 and s["p50_ms"] is None for s in recent)
    assert all(s["total_requests"] > 0 for s in recent)


def test_promoting_the_canary_is_a_switch_that_removes_the_canary_route(proxy, blue_green) -> None:
    blue, green = blue_green
    body = {"canary": {"upstream": green.url, "percent": 10, "version": "2"}}
    assert put_routes(proxy, body).status_code == 200
    switched = httpx.put(proxy + "/-/proxy/upstream", json={"upstream": green.url}, headers=AUTH)
    assert switched.status_code == 200
    assert switched.json()["previous"] == blue.url and switched.json()["version"] == "2"
    routes = get(proxy, "/-/proxy/routes")
    assert routes["primary"] == {"upstream": green.url, "version": "2"}
    assert routes["canary"] is None
    answer = httpx.post(proxy + "/invocations", content=b"{}")
    assert answer.headers["x-upstream"] == "green" and answer.headers["x-model-version"] == "2"
    # the switch's state keeps its shape
    assert get(proxy, "/-/proxy/upstream") == {"upstream": green.url, "in_flight": {}}


# (body, what the one-line message must contain: the field and the value)
INVALID_ROUTES = [
    ({"canary": {"upstream": "ftp://host:1", "percent": 10}}, ["canary.upstream", "ftp://"]),
    ({"canary": {"upstream": "http://127.0.0.1:1", "percent": 150}}, ["canary.percent", "150"]),
    (
        {"canary": {"upstream": "http://127.0.0.1:1", "percent": "ten"}},
        ["canary.percent", "ten"],
    ),
    ({"canary": {"upstream": "http://127.0.0.1:1"}}, ["canary.percent", "null"]),
    (
        {"canary": {"upstream": "http://127.0.0.1:1", "percent": True}},
        ["canary.percent", "true"],
    ),
    ({"canary": {"upstream": "http://127.0.0.1:1", "weight": 5}}, ["canary.weight", "unknown"]),
    (
        {"shadow": {"upstream": "http://127.0.0.1:1", "version": "a b"}},
        ["shadow.version", "a b"],
    ),
    ({"shadow": "http://127.0.0.1:1"}, ["shadow", "http://127.0.0.1:1"]),
    ({"sticky_header": "X Client"}, ["sticky_header", "X Client"]),
    ({"sticky_header": "Connection"}, ["sticky_header", "Connection"]),
    ({"canery": None}, ["canery", "unknown"]),
    ({"check_ready": "yes"}, ["check_ready", "yes"]),
    ({"drain_timeout": -1}, ["drain_timeout", "-1"]),
    ([1, 2], ["body", "[1, 2]"]),
]


def test_invalid_routes_are_a_400_naming_the_field_and_value(proxy) -> None:
    before = get(proxy, "/-/proxy/routes")
    for body, names in INVALID_ROUTES:
        response = put_routes(proxy, body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert len(error["message"].splitlines()) == 1
        assert all(name in error["message"] for name in names), error["message"]
    assert get(proxy, "/-/proxy/routes") == before


def test_other_admin_input_errors(proxy, blue_green) -> None:
    bad_version = httpx.put(
        proxy + "/-/proxy/upstream",
        json={"upstream": blue_green[1].url, "version": 5},
        headers=AUTH,
    )
    assert bad_version.status_code == 400 and "version: 5" in bad_version.json()["error"]["message"]
    bad_window = httpx.get(proxy + "/-/proxy/stats?window=soon", headers=AUTH)
    assert bad_window.status_code == 400 and "window" in bad_window.json()["error"]["message"]
    assert httpx.get(proxy + "/-/proxy/stats").status_code == 401
    assert httpx.get(proxy + "/-/proxy/routes").status_code == 401
    assert httpx.delete(proxy + "/-/proxy/routes", headers=AUTH).status_code == 405
    not_ready = Stub("not-ready", ready=False)
    try:
        body = {"canary": {"upstream": not_ready.url, "percent": 10}}
        refused = put_routes(proxy, body)
    finally:
        not_ready.stop()
    assert refused.status_code == 409
    assert "canary.upstream" in refused.json()["error"]["message"]
    assert get(proxy, "/-/proxy/routes")["canary"] is None


def test_a_restarted_proxy_keeps_its_routes(blue_green, tmp_path: Path) -> None:
    blue, green = blue_green
    proc, url = start_proxy(blue.url, tmp_path)
    body = {
        "canary": {"upstream": green.url, "percent": 25, "version": "2"},
        "shadow": {"upstream": green.url, "percent": 5, "version": "2"},
        "sticky_header": "X-Client-ID",
    }
    try:
        assert (
            httpx.put(
                url + "/-/proxy/upstream", json={"upstream": blue.url, "version": "1"}, headers=AUTH
            ).status_code
            == 200
        )
        assert put_routes(url, body).status_code == 200
        routes = get(url, "/-/proxy/routes")
    finally:
        proc.kill()
        proc.wait(15)
    assert routes == {
        "primary": {"upstream": blue.url, "version": "1"},
        "canary": {"upstream": green.url, "percent": 25.0, "version": "2"},
        "shadow": {"upstream": green.url, "percent": 5.0, "version": "2"},
        "sticky_header": "X-Client-ID",
    }
    proc, url = start_proxy(f"http://127.0.0.1:{free_port()}", tmp_path)  # the file wins
    try:
        assert get(url, "/-/proxy/routes") == routes
        on_canary = next(f"c{i}" for i in range(1000) if sticky_bucket(f"c{i}".encode()) < 2500)
        answer = httpx.post(url + "/invocations", content=b"{}", headers={"X-Client-ID": on_canary})
        assert answer.headers["x-model-version"] == "2"
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_live_request_id_is_in_the_shadow_capture(iris_model_dir, tmp_path: Path) -> None:
    live = start_server(tmp_path, iris_model_dir, MLOPS_SERVING_CAPTURE_URI=str(tmp_path / "live"))
    shadow = start_server(
        tmp_path,
        iris_model_dir,
        MLOPS_SERVING_CAPTURE_URI=str(tmp_path / "shadow"),
        MLOPS_SERVING_MODEL_VERSION="2",
    )
    proc, url = start_proxy(live.url, tmp_path)
    try:
        route = {"upstream": shadow.url, "percent": 100, "version": "2"}
        assert put_routes(url, {"shadow": route}).status_code == 200
        frame = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]
        payload = split_payload(pd.DataFrame(frame, columns=IRIS_COLUMNS))
        ids = []
        with httpx.Client(timeout=30) as client:
            for _ in range(5):
                answer = client.post(url + "/invocations", json=payload)
                assert answer.status_code == 200, answer.text
                ids.append(answer.headers["x-request-id"])
            # a client cannot choose its id through the proxy: its X-Shadow-Of is dropped
            forged = client.post(
                url + "/invocations", json=payload, headers={"X-Shadow-Of": "a" * 32}
            )
            assert forged.headers["x-request-id"] != "a" * 32
        # straight to a service, a malformed X-Shadow-Of is ignored
        direct = httpx.post(shadow.url + "/invocations", json=payload, headers={"X-Shadow-Of": "x"})
        assert direct.status_code == 200 and len(direct.headers["x-request-id"]) == 32

        wait_for(lambda: set(ids) <= set(read_capture(tmp_path / "shadow")["_request_id"]), 30)
        wait_for(lambda: set(ids) <= set(read_capture(tmp_path / "live")["_request_id"]), 30)
        shadow_rows = read_capture(tmp_path / "shadow")
        joined = shadow_rows[shadow_rows["_request_id"].isin(ids)]
        assert len(joined) == 2 * len(ids)  # both rows of each mirrored request
        assert set(joined["_model_version"]) == {"2"}
        wait_for(lambda: stats_of(url, "shadow", "2").get("total_requests") == 6, 30)
        assert stats_of(url, "shadow", "2")["total_errors"] == 0
    finally:
        proc.terminate()
        proc.wait(15)
        assert live.stop() == 0 and shadow.stop() == 0


def test_stats_count_4xx_answers_as_client_errors_apart_from_errors(proxy, blue_green) -> None:
    """A challenger whose model raises answers 422: the canary's judge must see it."""
    refusing = Stub("refusing", mode="refuse")
    try:
        body = {"canary": {"upstream": refusing.url, "percent": 50, "version": "2"}}
        assert put_routes(proxy, body).status_code == 200
        with httpx.Client(timeout=10) as client:
            answers = send(client, proxy, 100, budget=60)
    finally:
        refusing.stop()
    refused = sum(r.status_code == 422 for r, _ in answers)
    assert 0 < refused < 100
    canary, primary = stats_of(proxy, "canary", "2"), stats_of(proxy, "primary", None)
    assert (canary["requests"], canary["client_errors"], canary["errors"]) == (refused,) * 2 + (0,)
    assert canary["total_client_errors"] == refused
    assert (primary["client_errors"], primary["errors"]) == (0, 0)
