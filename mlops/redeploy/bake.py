"""The bake period: a new version's error rate and p95 latency from its `/metrics`, judged
against the champion's figures from before the switch.

`watch` scrapes the new version for a bounded time (figures read by `scrape`), `judge_bake`
compares them with the champion's, and the flow rolls back on `regressed`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable

import httpx
from mlops_pipeline.errors import BackendError, BackendUnavailableError, InvalidInputError
from mlops_pipeline.redeploy.results import BakeReport, ServiceFigures
from mlops_pipeline.redeploy.scrape import MetricsSnapshot, figures, parse_metrics

log = logging.getLogger(__name__)


def judge_bake(
    baseline: ServiceFigures,
    observed: ServiceFigures,
    max_error_rate_increase: float = 0.01,
    max_p95_ratio: float = 1.5,
    min_requests: int = 100,
    *,
    min_p95_increase_ms: float = 5.0,
) -> BakeReport:
    """Judge a new version's figures against the champion's.

    Args:
        baseline: the champion's figures from before the switch.
        observed: the new version's figures over the bake period.
        max_error_rate_increase: largest allowed rise of the error rate, absolute (0.01 = one
            percentage point over the baseline's rate).
        max_p95_ratio: largest allowed observed p95 / baseline p95 (>= 1).
        min_requests: requests the bake needs before its rates are judged.
        min_p95_increase_ms: a p95 rise smaller than this (ms) never counts as a regression,
            however large the ratio (sub-millisecond baselines make ratios noisy).

    Returns:
        BakeReport: `regressed` when the error rate rose by more than allowed (judged before
        `min_requests` too when the errors alone already exceed the allowance over
        `min_requests` requests) or p95 rose beyond both limits; `insufficient_traffic` when
        fewer than `min_requests` requests came and nothing is conclusive yet; else `healthy`.

    Raises:
        InvalidInputError: a threshold out of range.
    """
    limits = (max_error_rate_increase, max_p95_ratio, min_requests, min_p95_increase_ms)
    if not (limits[0] >= 0 and limits[1] >= 1 and limits[2] >= 1 and limits[3] >= 0):
        raise InvalidInputError(
            "Bake thresholds out of range: need max_error_rate_increase >= 0, max_p95_ratio >= 1, "
            f"min_requests >= 1 and min_p95_increase_ms >= 0 (got {', '.join(map(str, limits))})."
        )
    base_rate = baseline.error_rate or 0.0
    reasons: list[str] = []
    if baseline.requests < min_requests:
        reasons.append(f"baseline has only {baseline.requests} requests (< {min_requests})")
    enough = observed.requests >= min_requests
    # with too few requests, the errors so far are conclusive if they exceed the allowance
    # even had every request up to min_requests succeeded
    rate = (observed.error_rate or 0.0) if enough else observed.errors / min_requests
    increase = (observed.error_rate or 0.0) - base_rate if observed.requests else None
    regressed = rate - base_rate > max_error_rate_increase
    if regressed:
        reasons.append(
            f"error rate {observed.errors}/{observed.requests} vs baseline {base_rate:.4f}: "
            f"up by more than {max_error_rate_increase}"
        )
    ratio = None
    if observed.p95_latency_ms is not None and baseline.p95_latency_ms:
        ratio = observed.p95_latency_ms / baseline.p95_latency_ms
        rise = observed.p95_latency_ms - baseline.p95_latency_ms
        if enough and ratio > max_p95_ratio and rise > min_p95_increase_ms:
            regressed = True
            reasons.append(
                f"p95 latency {observed.p95_latency_ms:.1f} ms vs baseline "
                f"{baseline.p95_latency_ms:.1f} ms: {ratio:.2f}x > {max_p95_ratio}x"
            )
    elif baseline.p95_latency_ms is None:
        reasons.append("baseline has no latency observations; p95 not judged")
    if regressed:
        verdict = "regressed"
    elif not enough:
        verdict = "insufficient_traffic"
        reasons.append(f"only {observed.requests} requests during the bake (< {min_requests})")
    else:
        verdict = "healthy"
        reasons.append(
            f"error rate {observed.error_rate:.4f} (baseline {base_rate:.4f}), p95 "
            f"{observed.p95_latency_ms or 0:.1f} ms (baseline {baseline.p95_latency_ms or 0:.1f})"
        )
    return BakeReport(
        verdict=verdict,
        reasons=reasons,
        baseline=baseline,
        observed=observed,
        max_error_rate_increase=max_error_rate_increase,
        max_p95_ratio=max_p95_ratio,
        min_requests=min_requests,
        p95_ratio=ratio,
        error_rate_increase=increase,
    )


def watch(
    fetch: Callable[[], str],
    seconds: float,
    interval: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: Callable[[ServiceFigures], bool] | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    warmup: float = 0.0,
    sustain: int = 0,
) -> list[ServiceFigures]:
    """Scrape /metrics every `interval` seconds for `seconds`; figures since the first scrape.

    Args:
        fetch: returns the /metrics text (e.g. `metrics_fetcher(url)`); its errors propagate
            (an unreachable new version is for the caller to treat as a regression).
        seconds: length of the watch (> 0); interval: seconds between scrapes (> 0).
        clock, sleep: injectable for tests (monotonic seconds; sleep in seconds).
        stop: called with the figures after each scrape; True ends the watch early, e.g.
            `lambda f: judge_bake(baseline, f, ...).verdict == "regressed"`.
        model_name, model_version: count only this version's samples.
        warmup: seconds from the start whose latencies stay out of p95 (a new process's first
            requests are slow: imports, caches), so p95 covers requests from the first scrape
            at or after `warmup` (None until then); requests and errors always count from the
            start.
        sustain: with N > 0, each p95 is the lowest of the p95s of the last N intervals between
            scrapes after the warm-up, so a slowdown must last N scrapes to show and a burst
            inside one interval (another process on the machine, a GC pause) does not: the
            failure threshold of Flagger's analysis. Until N such intervals passed it is None,
            except on the last scrape, which takes the intervals it has. 0: the p95 of every
            request since the warm-up.

    Returns:
        One ServiceFigures per scrape after the first, each covering the time from the first
        scrape to that one (the last covers the whole watch). It stops when `seconds` have
        passed on `clock` (the last sleep is shortened to end on time), early when `stop`
        returns True, and in any case after ceil(seconds / interval) + 1 further scrapes.

    Raises:
        InvalidInputError: seconds or interval not positive.
        BackendError: a scrape is not the scoring service's /metrics (and fetch's own errors).
    """
    if not (seconds > 0 and interval > 0):
        raise InvalidInputError(f"Bake seconds and interval must be > 0 ({seconds}, {interval}).")
    start = clock()
    deadline = start + seconds
    first = parse_metrics(
        fetch(), model_name=model_name, model_version=model_version, taken_at=start
    )
    warm: MetricsSnapshot | None = first if warmup <= 0 else None
    previous = first
    recent: deque[float] = deque(maxlen=max(sustain, 1))  # p95s of the last intervals, ms
    out: list[ServiceFigures] = []
    scrapes = math.ceil(seconds / interval) + 1
    for scrape in range(scrapes):
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(interval, remaining))
        text = fetch()
        snap = parse_metrics(
            text, model_name=model_name, model_version=model_version, taken_at=clock()
        )
        since_start = figures(snap, first)
        latency = None
        if warm is not None and sustain > 0:
            if (interval_p95 := figures(snap, previous).p95_latency_ms) is not None:
                recent.append(interval_p95)
            last = clock() >= deadline or scrape == scrapes - 1
            latency = min(recent) if recent and (len(recent) >= sustain or last) else None
        elif warm is not None:
            latency = figures(snap, warm).p95_latency_ms
        out.append(since_start.model_copy(update={"p95_latency_ms": latency}))
        if warm is None and (snap.taken_at or 0.0) - start >= warmup:
            warm = snap
        previous = snap
        if stop is not None and stop(out[-1]):
            log.info("bake watch stopped early after %.1f s", out[-1].seconds or 0.0)
            break
    return out


def metrics_fetcher(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> Callable[[], str]:
    """A `fetch` for `watch`: GET `<url>/metrics` (url = the service's base URL).

    The returned callable raises BackendUnavailableError when the service cannot be reached and
    BackendError on a non-200 answer.
    """
    target = url.rstrip("/") + "/metrics"

    def fetch() -> str:
        try:
            response = httpx.get(target, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                f"Cannot scrape {target} ({type(exc).__name__}).", url=target
            ) from exc
        if response.status_code != 200:
            raise BackendError(
                f"Scraping {target} answered HTTP {response.status_code}.", url=target
            )
        return response.text

    return fetch
