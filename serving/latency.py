"""Latency histogram bucket bounds shared by the scoring service and the proxy.

Both expose a Prometheus latency histogram with these bounds, so one dashboard query (and the
bake's p95 from bucket counts) reads either. This module imports nothing: the proxy must not
pay for prometheus_client.
"""

from __future__ import annotations

# Seconds, about 1.25x apart up to 100 ms: a p95 interpolated within a bucket is off by at most
# a bucket's width, so the bake's latency ratio is not made up by coarse bounds.
LATENCY_BUCKETS: tuple[float, ...] = tuple(
    ms / 1000.0
    for ms in (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12.5, 15, 20, 25, 30, 40, 50, 60, 80, 100)
    + (125, 150, 200, 250, 300, 400, 500, 750, 1000, 2500, 5000, 10000)
)
