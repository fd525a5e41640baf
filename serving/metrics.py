"""Prometheus metrics, registered once per process and labelled by model name and version.

With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR is set before any worker imports
prometheus_client (see serving.server), and /metrics aggregates every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LABELS = ("model_name", "model_version")

REQUESTS = Counter(
    "mlops_serving_requests_total",
    "Scoring requests answered, by HTTP status.",
    (*LABELS, "status"),
)
ERRORS = Counter(
    "mlops_serving_errors_total",
    "Scoring requests answered with an error, by status and error code.",
    (*LABELS, "status", "code"),
)
LATENCY = Histogram(
    "mlops_serving_request_latency_seconds",
    "Time from request received to response ready for /invocations.",
    LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ROWS = Counter("mlops_serving_rows_scored_total", "Input rows scored successfully.", LABELS)
CAPTURE_WRITTEN = Counter(
    "mlops_capture_rows_written_total", "Captured rows committed to the capture sink.", LABELS
)
CAPTURE_DROPPED = Counter(
    "mlops_capture_rows_dropped_total",
    "Captured rows given up on (queue full, spill limit reached, spill write failed).",
    (*LABELS, "reason"),
)
CAPTURE_QUEUED = Gauge(
    "mlops_capture_rows_queued",
    "Captured rows not yet in the sink: in memory or spilled to local disk.",
    (*LABELS, "stage"),
    multiprocess_mode="livesum",
)
CAPTURE_SINK_ERRORS = Counter(
    "mlops_capture_sink_errors_total",
    "Failed attempts to write a capture file to the sink.",
    LABELS,
)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics, merged across workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
