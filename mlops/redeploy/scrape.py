"""The scoring service's Prometheus `/metrics`, read into service figures.

The scoring service (serving/metrics.py) exports, labelled by `model_name` and `model_version`:

* `mlops_serving_requests_total{status}`: /invocations answered, by HTTP status;
* `mlops_serving_request_latency_seconds`: a histogram of /invocations latency (every status).

Counters only grow while a process lives, so figures over an interval are differences between
two scrapes; a counter that went down means the process restarted, and then (as Prometheus'
`increase()` does) the later scrape counts from zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlops_pipeline.errors import BackendError
from mlops_pipeline.redeploy.results import ServiceFigures
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "mlops_serving_requests_total"
LATENCY_BUCKET = "mlops_serving_request_latency_seconds_bucket"


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape, summed over the selected label sets.

    requests_by_status: HTTP status -> requests answered so far.
    buckets: (upper bound in seconds, cumulative count) sorted by bound, ending with +Inf.
    taken_at: the clock's reading when scraped (seconds), if known.
    """

    requests_by_status: dict[str, float] = field(default_factory=dict)
    buckets: tuple[tuple[float, float], ...] = ()
    taken_at: float | None = None


def parse_metrics(
    text: str,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    taken_at: float | None = None,
) -> MetricsSnapshot:
    """Read the scoring service's Prometheus exposition text into a snapshot.

    Args:
        text: the body of GET /metrics (Prometheus text format 0.0.4).
        model_name, model_version: keep only samples with these labels (None = all).
        taken_at: when it was scraped, in the caller's clock's seconds.

    Raises:
        BackendError: the text is not Prometheus exposition text, or holds no
            `mlops_serving_` metric (it is not the scoring service's /metrics).
    """
    want = {k: v for k, v in (("model_name", model_name), ("model_version", model_version)) if v}
    requests: dict[str, float] = {}
    buckets: dict[float, float] = {}
    ours = False
    try:
        for family in text_string_to_metric_families(text):
            ours = ours or family.name.startswith("mlops_serving_")
            for sample in family.samples:
                if any(sample.labels.get(k) != v for k, v in want.items()):
                    continue
                if sample.name == REQUESTS:
                    status = sample.labels.get("status", "")
                    requests[status] = requests.get(status, 0.0) + sample.value
                elif sample.name == LATENCY_BUCKET:
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    except (ValueError, KeyError, IndexError) as exc:
        raise BackendError(
            f"The /metrics answer is not Prometheus text ({type(exc).__name__})."
        ) from exc
    if not ours:
        raise BackendError(
            "The /metrics answer has no mlops_serving_ metrics; is this the scoring service?"
        )
    return MetricsSnapshot(requests, tuple(sorted(buckets.items())), taken_at)


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated linearly within its bucket.

    Follows Prometheus' `histogram_quantile` (promql/quantile.go, `bucketQuantile`; documented
    at prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile): rank =
    q * total; in the first bucket whose cumulative count reaches the rank, return
    lower + (upper - lower) * (rank - count below) / (count in bucket), with lower = 0 for the
    first bucket; if the rank falls in the +Inf bucket, return the highest finite bound.

    Args:
        q: the quantile, 0 <= q <= 1.
        buckets: (upper bound, cumulative count), sorted, the last bound +Inf.

    Returns:
        The quantile in the bounds' units, or None without observations or without a +Inf
        bucket and one finite bucket.
    """
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]) or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper, count = buckets[index]
    lower, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    if index == 0 and upper <= 0:
        return upper
    return lower + (upper - lower) * ((rank - below) / (count - below))


def figures(later: MetricsSnapshot, earlier: MetricsSnapshot | None = None) -> ServiceFigures:
    """Service figures between two scrapes (or since the process started, without `earlier`).

    Errors are requests answered with a non-2xx status; p95 comes from the latency histogram
    (`histogram_quantile`), in milliseconds. If any counter went down between the scrapes the
    process restarted, and `later` alone is used.
    """
    requests = dict(later.requests_by_status)
    buckets = list(later.buckets)
    seconds = None
    if earlier is not None:
        before = dict(earlier.buckets)
        # a counter that went down (or vanished) means the process restarted
        reset = any(requests.get(s, 0.0) < v for s, v in earlier.requests_by_status.items())
        after = dict(buckets)
        reset = reset or any(after.get(b, 0.0) < c for b, c in earlier.buckets)
        if not reset:
            requests = {s: v - earlier.requests_by_status.get(s, 0.0) for s, v in requests.items()}
            buckets = [(b, c - before.get(b, 0.0)) for b, c in buckets]
        if later.taken_at is not None and earlier.taken_at is not None:
            seconds = later.taken_at - earlier.taken_at
    total = round(sum(requests.values()))
    by_status = {s: round(v) for s, v in sorted(requests.items()) if not s.startswith("2") and v}
    errors = sum(by_status.values())
    p95 = histogram_quantile(0.95, tuple(buckets))
    return ServiceFigures(
        requests=total,
        errors=errors,
        error_rate=errors / total if total else None,
        p95_latency_ms=None if p95 is None else p95 * 1000.0,
        errors_by_status=by_status,
        seconds=seconds,
    )
