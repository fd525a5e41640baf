"""Bake period: quantiles from buckets, interval figures, verdicts, a bounded watch."""

from __future__ import annotations

import math

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.redeploy.bake import judge_bake, watch
from mlops_pipeline.redeploy.results import ServiceFigures
from mlops_pipeline.redeploy.scrape import (
    MetricsSnapshot,
    figures,
    histogram_quantile,
    parse_metrics,
)
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # rank 95 falls in (0.1, 0.2] holding 50: 0.1 + 0.1 * 45/50
        (0.95, ((0.1, 50), (0.2, 100), (INF, 100)), 0.19),
        # first bucket interpolates from 0
        (0.5, ((0.1, 100), (0.2, 100), (INF, 100)), 0.05),
        # rank in the +Inf bucket: the highest finite bound
        (0.95, ((0.1, 10), (0.2, 20), (INF, 100)), 0.2),
        (0.95, ((0.1, 0), (INF, 0)), None),  # no observations
        (0.95, ((INF, 5),), None),  # no finite bucket
        (0.95, ((0.1, 5), (0.2, 5)), None),  # no +Inf bucket
    ],
)
def test_histogram_quantile_follows_prometheus(q, buckets, expected):
    got = histogram_quantile(q, buckets)
    assert got == (None if expected is None else pytest.approx(expected))


def test_interval_figures_and_counter_resets():
    early = MetricsSnapshot({"200": 10, "400": 2}, ((0.01, 8), (0.1, 12), (INF, 12)), 100.0)
    late = MetricsSnapshot(
        {"200": 100, "400": 2, "500": 8}, ((0.01, 8), (0.1, 100), (INF, 110)), 130.0
    )
    between = figures(late, early)
    assert (between.requests, between.errors, between.seconds) == (98, 8, 30.0)
    assert between.errors_by_status == {"500": 8}
    assert between.error_rate == pytest.approx(8 / 98)
    # rank 0.95 * 98 = 93.1 > the 88 observations up to 0.1 s: in +Inf, so the bound 0.1 s
    assert between.p95_latency_ms == pytest.approx(100.0)
    restarted = MetricsSnapshot({"200": 5}, ((0.01, 5), (0.1, 5), (INF, 5)), 140.0)
    assert figures(restarted, late).requests == 5  # counted from the restart
    # a restarted process that has already answered more requests, none of them failing
    grown = MetricsSnapshot({"200": 200}, ((0.01, 150), (0.1, 200), (INF, 200)), 150.0)
    assert figures(grown, late).requests == 200
    empty = figures(MetricsSnapshot())
    assert (empty.requests, empty.error_rate, empty.p95_latency_ms) == (0, None, None)


def fig(requests: int, errors: int, p95: float | None) -> ServiceFigures:
    return ServiceFigures(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        p95_latency_ms=p95,
    )


BASELINE = fig(1000, 5, 20.0)


@pytest.mark.parametrize(
    ("observed", "verdict", "why"),
    [
        (fig(200, 2, 25.0), "healthy", "error rate 0.0100"),
        (fig(200, 4, 25.0), "regressed", "error rate 4/200"),  # +1.5 points > 1
        (fig(200, 1, 31.0), "regressed", "p95 latency 31.0 ms"),  # 1.55x and +11 ms
        (fig(200, 1, 29.0), "healthy", "p95 29.0"),  # 1.45x
        (fig(40, 0, 90.0), "insufficient_traffic", "only 40 requests"),  # p95 not judged yet
        (
            fig(40, 2, 20.0),
            "regressed",
            "error rate 2/40",
        ),  # 2 errors / 100 needed requests - 0.5% > 1 point
        (fig(0, 0, None), "insufficient_traffic", "only 0 requests"),
    ],
)
def test_judge_bake_verdicts(observed, verdict, why):
    report = judge_bake(BASELINE, observed, 0.01, 1.5, 100)
    assert report.verdict == verdict
    assert any(why in r for r in report.reasons), report.reasons
    assert report.baseline == BASELINE and report.observed == observed


def test_small_p95_rises_are_not_regressions():
    fast = fig(1000, 0, 1.0)
    assert judge_bake(fast, fig(500, 0, 4.0), 0.01, 1.5, 100).verdict == "healthy"  # +3 ms
    report = judge_bake(fast, fig(500, 0, 4.0), 0.01, 1.5, 100, min_p95_increase_ms=0)
    assert report.verdict == "regressed" and report.p95_ratio == pytest.approx(4.0)


def test_without_baseline_traffic_errors_are_judged_against_zero():
    report = judge_bake(fig(0, 0, None), fig(150, 3, 50.0), 0.01, 1.5, 100)
    assert report.verdict == "regressed"
    assert any("baseline has no latency" in r for r in report.reasons)


@pytest.mark.parametrize(
    "args",
    [
        (-0.1, 1.5, 100, 5),
        (0.01, 0.9, 100, 5),
        (0.01, 1.5, 0, 5),
        (0.01, 1.5, 100, -1),
        (float("nan"), 1.5, 100, 5),
    ],
)
def test_bad_bake_thresholds(args):
    *positional, slack = args
    with pytest.raises(InvalidInputError, match="out of range"):
        judge_bake(BASELINE, BASELINE, *positional, min_p95_increase_ms=slack)


class FakeService:
    """A /metrics source built with prometheus_client itself; each scrape serves a step."""

    def __init__(self, steps: list[tuple[int, int, float]]) -> None:
        self.registry = CollectorRegistry()
        labels = ("model_name", "model_version")
        self.requests = Counter(
            "mlops_serving_requests", "r", (*labels, "status"), registry=self.registry
        )
        self.latency = Histogram(
            "mlops_serving_request_latency_seconds",
            "l",
            labels,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self.steps = steps
        self.scrapes = 0

    def fetch(self) -> str:
        if self.scrapes:  # traffic between the previous scrape and this one
            ok, failed, seconds = self.steps[min(self.scrapes - 1, len(self.steps) - 1)]
            for status, n in (("200", ok), ("500", failed)):
                for _ in range(n):
                    self.requests.labels("iris", "2", status).inc()
                    self.latency.labels("iris", "2").observe(seconds)
        self.scrapes += 1
        return generate_latest(self.registry).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_watch_returns_growing_windows_over_the_whole_period():
    service, clock = FakeService([(50, 0, 0.02)]), Clock()
    out = watch(service.fetch, 10, 2, clock=clock, sleep=clock.sleep)
    assert [f.requests for f in out] == [50, 100, 150, 200, 250]
    assert [f.seconds for f in out] == [2, 4, 6, 8, 10] and clock.slept == [2] * 5
    assert out[-1].errors == 0 and 10 < out[-1].p95_latency_ms <= 25
    # a sleep that does not move the clock still ends, after ceil(5 / 2) + 1 scrapes
    frozen = watch(FakeService([(1, 0, 0.02)]).fetch, 5, 2, clock=Clock(), sleep=Clock().sleep)
    assert len(frozen) == 4


def test_watch_ends_at_the_deadline_with_a_short_last_sleep():
    service, clock = FakeService([(10, 0, 0.02)]), Clock()
    out = watch(service.fetch, 5, 2, clock=clock, sleep=clock.sleep)
    assert clock.slept == [2, 2, 1] and out[-1].seconds == 5 and out[-1].requests == 30


def test_watch_stops_early_on_a_regression():
    baseline = fig(1000, 0, 20.0)
    service, clock = FakeService([(50, 0, 0.02), (40, 10, 0.02), (50, 0, 0.02)]), Clock()

    def regressed(f: ServiceFigures) -> bool:
        return judge_bake(baseline, f, 0.01, 1.5, 100).verdict == "regressed"

    out = watch(service.fetch, 60, 5, clock=clock, sleep=clock.sleep, stop=regressed)
    assert len(out) == 2 and out[-1].errors == 10 and clock.now == 1010.0


def test_watch_leaves_the_warmup_out_of_p95_but_counts_its_errors():
    # the first 4 s are slow (a new process warming up) and fail once; then fast and healthy
    steps = [(9, 1, 0.2), (10, 0, 0.2), (50, 0, 0.004), (50, 0, 0.004), (50, 0, 0.004)]
    service, clock = FakeService(steps), Clock()
    out = watch(service.fetch, 10, 2, clock=clock, sleep=clock.sleep, warmup=4)

    assert [f.requests for f in out] == [10, 20, 70, 120, 170]
    assert all(f.errors == 1 for f in out)  # the warm-up's error still counts
    # p95 only from the scrape at 4 s on: None before, then the fast requests alone
    assert [f.p95_latency_ms for f in out[:2]] == [None, None]
    assert all(f.p95_latency_ms is not None and f.p95_latency_ms <= 5 for f in out[2:])
    without = watch(FakeService(steps).fetch, 10, 2, clock=Clock(), sleep=Clock().sleep)
    assert without[-1].p95_latency_ms > 100  # the slow start dominates without a warm-up


FAST, SLOW = 0.004, 0.2  # seconds: the first histogram bucket, and one past 0.1 s


def test_watch_sustain_lets_a_burst_inside_one_interval_pass():
    """Another process hogging the CPU for a moment slows one interval: not a regression."""
    baseline = fig(1000, 0, 5.0)
    steps = [(50, 0, FAST), (50, 0, SLOW), (50, 0, FAST), (50, 0, FAST), (50, 0, FAST)]

    def regressed(f: ServiceFigures) -> bool:
        return judge_bake(baseline, f, 0.01, 1.5, 100).verdict == "regressed"

    clock = Clock()
    out = watch(FakeService(steps).fetch, 10, 2, clock=clock, sleep=clock.sleep, sustain=2)
    assert out[0].p95_latency_ms is None  # one interval so far: not yet judged
    assert all(f.p95_latency_ms <= 5.0 for f in out[1:])
    assert not any(map(regressed, out)) and clock.now == 1010.0
    # judged on every request since the start, the same burst stops the watch at 4 s
    clock = Clock()
    cumulative = watch(
        FakeService(steps).fetch, 10, 2, clock=clock, sleep=clock.sleep, stop=regressed
    )
    assert len(cumulative) == 2 and cumulative[-1].p95_latency_ms > 100


def test_watch_sustain_stops_on_a_slowdown_that_lasts():
    baseline = fig(1000, 0, 5.0)
    steps = [(50, 0, FAST), (50, 0, SLOW), (50, 0, SLOW), (50, 0, SLOW), (50, 0, SLOW)]

    def regressed(f: ServiceFigures) -> bool:
        return judge_bake(baseline, f, 0.01, 1.5, 100).verdict == "regressed"

    clock = Clock()
    out = watch(
        FakeService(steps).fetch, 10, 2, clock=clock, sleep=clock.sleep, sustain=2, stop=regressed
    )
    assert len(out) == 3 and out[-1].p95_latency_ms > 100  # two slow intervals in a row
    # errors need no second interval: they stop the watch at once
    failing = [(50, 0, FAST), (40, 10, FAST), (50, 0, FAST)]
    clock = Clock()
    out = watch(
        FakeService(failing).fetch, 10, 2, clock=clock, sleep=clock.sleep, sustain=3, stop=regressed
    )
    assert len(out) == 2 and out[-1].p95_latency_ms is None


def test_watch_sustain_judges_a_short_bake_on_the_intervals_it_has():
    clock = Clock()
    out = watch(FakeService([(50, 0, SLOW)]).fetch, 2, 2, clock=clock, sleep=clock.sleep, sustain=3)
    assert len(out) == 1 and out[0].p95_latency_ms > 100  # the last scrape: one slow interval


def test_the_baseline_is_the_champions_recent_window_when_it_has_traffic(monkeypatch):
    """Measured under the redeploy's own load, not the quieter hours since the champion
    started (and never from a window too thin to say anything)."""
    from mlops_pipeline.deployment import ModelRef
    from mlops_pipeline.redeploy import loop

    service = FakeService([(500, 0, FAST), (200, 0, SLOW), (5, 0, SLOW)])
    monkeypatch.setattr(loop, "metrics_fetcher", lambda _url: service.fetch)
    champion = ModelRef("iris", "2")
    service.fetch()  # the champion's first scrape: its traffic so far is none
    since_start = loop.champion_snapshot("http://127.0.0.1:1", champion)  # 500 fast requests
    recent = loop.champion_figures("http://127.0.0.1:1", champion, since_start, min_requests=100)
    assert recent.requests == 200 and recent.p95_latency_ms > 100
    window = loop.champion_snapshot("http://127.0.0.1:1", champion)
    thin = loop.champion_figures("http://127.0.0.1:1", champion, window, min_requests=100)
    assert thin.requests == 710  # 5 in the window: too few, so all 500 + 200 + 5 + 5


def test_a_failed_champion_scrape_gives_no_window(monkeypatch):
    from mlops_pipeline.deployment import ModelRef
    from mlops_pipeline.errors import BackendUnavailableError
    from mlops_pipeline.redeploy import loop

    def down() -> str:
        raise BackendUnavailableError("connection refused")

    monkeypatch.setattr(loop, "metrics_fetcher", lambda _url: down)
    assert loop.champion_snapshot("http://127.0.0.1:1", ModelRef("iris", "2")) is None


def test_watch_filters_by_version_and_refuses_bad_arguments():
    service, clock = FakeService([(5, 1, 0.02)]), Clock()
    out = watch(service.fetch, 4, 2, clock=clock, sleep=clock.sleep, model_version="1")
    assert [f.requests for f in out] == [0, 0]
    for seconds, interval in ((0, 1), (5, 0), (-1, 1)):
        with pytest.raises(InvalidInputError):
            watch(service.fetch, seconds, interval)


def test_parse_metrics_sums_label_sets():
    service = FakeService([(3, 1, 0.02)])
    service.fetch()
    service.requests.labels("iris", "1", "200").inc(7)
    snap = parse_metrics(service.fetch())
    assert snap.requests_by_status == {"200": 10.0, "500": 1.0}
    assert parse_metrics(
        generate_latest(service.registry).decode(), model_version="1"
    ).requests_by_status == {"200": 7.0}
