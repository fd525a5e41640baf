"""Bake figures read from a REAL scoring service's /metrics (uvicorn subprocess on 127.0.0.1)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from mlops_pipeline.errors import BackendError, BackendUnavailableError
from mlops_pipeline.redeploy.bake import metrics_fetcher
from mlops_pipeline.redeploy.scrape import figures, parse_metrics
from mlops_pipeline.serving.contract import free_port

from tests.serving.conftest import read_capture, split_payload, start_server, wait_for

BAD_BODIES = [
    ({"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}}, "application/json"),
    ("sepal_length\n1.0", "text/plain"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, iris_model_dir):
    tmp = tmp_path_factory.mktemp("bake-server")
    server = start_server(tmp, iris_model_dir, MLOPS_SERVING_CAPTURE_URI=str(tmp / "capture"))
    yield server
    assert server.stop() == 0


def send(url: str, iris_features, good: int, bad: int) -> dict[int, int]:
    """POST `good` valid and `bad` invalid requests; the statuses the client saw, counted."""
    seen: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(good + bad):
            if i % 3 == 2 and bad:
                bad -= 1
                body, kind = BAD_BODIES[bad % 2]
                content = (
                    body if isinstance(body, str) else httpx.Request("POST", "/", json=body).content
                )
                r = client.post("/invocations", content=content, headers={"Content-Type": kind})
            else:
                rows = iris_features.sample(1 + i % 5, random_state=i)
                r = client.post("/invocations", json=split_payload(rows))
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
    return seen


def test_figures_match_what_was_sent(server, iris_features):
    fetch = metrics_fetcher(server.url)
    before = parse_metrics(fetch(), model_name="iris", model_version="1")
    seen = send(server.url, iris_features, good=40, bad=12)
    after_text = fetch()
    assert seen.get(200) == 40 and sum(seen.values()) == 52

    interval = figures(parse_metrics(after_text, model_name="iris"), before)
    assert interval.requests == 52
    assert interval.errors == 12 == sum(v for s, v in seen.items() if s != 200)
    assert interval.errors_by_status == {str(s): n for s, n in seen.items() if s != 200}
    assert interval.error_rate == pytest.approx(12 / 52)

    # the p95 lies in the histogram bucket of the exact p95 of the server-side latencies
    # the service captured for the same requests (its `_latency_ms`, the same measurement)
    wait_for(lambda: read_capture(server.capture)["_request_id"].nunique() >= 52, timeout=30)
    captured = read_capture(server.capture).drop_duplicates("_request_id")
    total = parse_metrics(after_text)
    assert len(captured) == total.buckets[-1][1] == sum(total.requests_by_status.values())
    exact = np.percentile(captured["_latency_ms"] / 1000.0, 95, method="inverted_cdf")
    bounds = [b for b, _ in total.buckets]
    upper = next(b for b in bounds if b >= exact)
    lower = max([0.0, *[b for b in bounds if b < upper]])
    since_start = figures(total)
    assert lower * 1000 <= since_start.p95_latency_ms <= upper * 1000
    assert since_start.requests == 52 + before.buckets[-1][1]


def test_label_filters_select_one_version(server):
    text = metrics_fetcher(server.url)()
    assert figures(parse_metrics(text, model_version="2")).requests == 0
    assert figures(parse_metrics(text, model_version="2")).p95_latency_ms is None
    assert figures(parse_metrics(text, model_name="iris", model_version="1")) == figures(
        parse_metrics(text)
    )


def test_scrape_failures_are_backend_errors(server):
    with pytest.raises(BackendUnavailableError, match="Cannot scrape"):
        metrics_fetcher(f"http://127.0.0.1:{free_port()}", timeout=2)()
    with pytest.raises(BackendError, match="HTTP 404"):
        metrics_fetcher(f"{server.url}/nothing")()
    with pytest.raises(BackendError, match="not Prometheus text"):
        parse_metrics(httpx.get(f"{server.url}/openapi.json", timeout=10).text)
    with pytest.raises(BackendError, match="no mlops_serving_"):
        parse_metrics("# TYPE other_total counter\nother_total 3.0\n")
    with pytest.raises(BackendError, match="not Prometheus text"):
        parse_metrics("<html><body>not metrics</body></html>\n")
