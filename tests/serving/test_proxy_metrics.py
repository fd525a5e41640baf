"""GET /metrics on the proxy's stable port: the champion service's own series, then the proxy's
per route and version (the shipped `serving.proxy` subprocess over stub upstreams)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlops_pipeline.serving.latency import LATENCY_BUCKETS
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.test_proxy import start_proxy
from tests.serving.test_proxy_routes import Stub, put_routes, send, wait_shadow_settled

SERVICE_METRICS = (
    "# HELP mlops_serving_requests_total Scoring requests answered.\n"
    "# TYPE mlops_serving_requests_total counter\n"
    'mlops_serving_requests_total{model_name="iris",model_version="1",status="200"} 7.0\n'
)


class ServiceStub(Stub):
    """A Stub that also answers GET /metrics as the scoring service does (text format)."""

    async def app(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            while (await receive()).get("more_body"):
                pass
            headers = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": SERVICE_METRICS.encode()})
            return
        await super().app(scope, receive, send)


@pytest.fixture
def stubs() -> Iterator[tuple[ServiceStub, ServiceStub, ServiceStub]]:
    made = (ServiceStub("blue"), ServiceStub("green", mode="error"), ServiceStub("shadow"))
    yield made
    for stub in made:
        stub.stop()


@pytest.fixture
def proxy(stubs, tmp_path: Path) -> Iterator[str]:
    proc, url = start_proxy(stubs[0].url, tmp_path, MLOPS_SERVING_PROXY_VERSION="1")
    yield url
    proc.terminate()
    assert proc.wait(15) == 0


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """GET /metrics parsed by prometheus_client's own parser (so the text must be valid):
    {sample name: {sorted label items: value}}."""
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_version(samples: dict[tuple, float], **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for key, value in samples.items() if wanted <= set(key))


def test_metrics_label_every_request_by_the_route_and_version_that_served_it(proxy, stubs) -> None:
    canary = {"upstream": stubs[1].url, "percent": 30, "version": "2"}
    shadow = {"upstream": stubs[2].url, "percent": 100, "version": "3"}
    assert put_routes(proxy, {"canary": canary, "shadow": shadow}).status_code == 200
    with httpx.Client(timeout=10) as client:
        answers = send(client, proxy, 200, 60)
        for _ in range(5):  # probes and feedback: to the primary, never split nor counted
            assert client.get(proxy + "/ready").headers["x-upstream"] == "blue"
            assert client.post(proxy + "/feedback", json={}).headers["x-upstream"] == "blue"
    wait_shadow_settled(proxy, 200)
    to_canary = sum(1 for response, _ in answers if response.headers["x-upstream"] == "green")
    assert 0 < to_canary < 200

    samples = scrape(proxy)
    # the champion service's own series come first, unchanged
    assert samples["mlops_serving_requests_total"] == {
        (("model_name", "iris"), ("model_version", "1"), ("status", "200")): 7.0
    }
    assert samples["mlops_proxy_upstream_metrics_up"] == {(): 1.0}
    requests = samples["mlops_proxy_requests_total"]
    primary = {"route": "primary", "model_version": "1"}
    canary_labels = {"route": "canary", "model_version": "2"}
    assert by_version(requests, **primary, outcome="ok") == 200 - to_canary
    assert by_version(requests, **primary, outcome="error") == 0
    # the green stub answers 500: every canary request is an error, under its version
    assert by_version(requests, **canary_labels, outcome="error") == to_canary
    assert by_version(requests, **canary_labels, outcome="ok") == 0
    assert by_version(requests, route="shadow", model_version="3") == 200

    # one histogram per route and version, its count the requests that route served
    buckets = samples["mlops_proxy_request_latency_seconds_bucket"]
    counts = samples["mlops_proxy_request_latency_seconds_count"]
    for labels, served in ((primary, 200 - to_canary), (canary_labels, to_canary)):
        key = tuple(sorted(labels.items()))
        assert counts[key] == served
        cumulative = [buckets[tuple(sorted({**labels, "le": le}.items()))] for le in _les()]
        assert cumulative == sorted(cumulative) and cumulative[-1] == served
        assert samples["mlops_proxy_request_latency_seconds_sum"][key] > 0

    percent = samples["mlops_proxy_route_percent"]
    assert by_version(percent, route="primary", model_version="1") == 70
    assert by_version(percent, route="canary", model_version="2") == 30
    assert by_version(percent, route="shadow", model_version="3") == 100
    assert samples["mlops_proxy_shadow_dropped_total"] == {(("model_version", "3"),): 0}

    # counters only grow: a second scrape after more traffic adds exactly those requests
    with httpx.Client(timeout=10) as client:
        send(client, proxy, 20, 30)
    again = scrape(proxy)["mlops_proxy_requests_total"]
    assert sum(again.values()) - sum(requests.values()) >= 20


def _les() -> list[str]:
    return [repr(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]


def test_metrics_answer_when_the_champion_service_is_down(stubs, tmp_path: Path) -> None:
    # a scrape must keep the proxy's own series while the service restarts
    blue = stubs[0]
    proc, url = start_proxy(blue.url, tmp_path, MLOPS_SERVING_PROXY_VERSION="1")
    try:
        with httpx.Client(timeout=10) as client:
            send(client, url, 5, 30)
        blue.stop()
        samples = scrape(url)
        assert "mlops_serving_requests_total" not in samples
        assert samples["mlops_proxy_upstream_metrics_up"] == {(): 0.0}
        ok = {"route": "primary", "model_version": "1", "outcome": "ok"}
        assert by_version(samples["mlops_proxy_requests_total"], **ok) == 5
    finally:
        proc.terminate()
        proc.wait(15)


def test_metrics_before_any_request_show_the_split_and_no_requests(stubs, tmp_path) -> None:
    proc, url = start_proxy(stubs[0].url, tmp_path)  # no version label: model_version=""
    try:
        samples = scrape(url)
        assert samples["mlops_proxy_route_percent"] == {
            (("model_version", ""), ("route", "primary")): 100.0
        }
        assert "mlops_proxy_requests_total" not in samples
    finally:
        proc.terminate()
        proc.wait(15)
