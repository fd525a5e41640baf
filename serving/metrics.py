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

from .latency import LATENCY_BUCKETS

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
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "mlops_serving_batch_requests",
    "Requests scored by one predict call (1 when a request is scored alone).",
    LABELS,
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128),
)
BATCH_ROWS = Histogram(
    "mlops_serving_batch_rows",
    "Input rows given to one predict call.",
    LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 100000),
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
