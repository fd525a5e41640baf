"""The canary's latency judgement on the proxy's p95 confidence bounds: a few dozen canary
requests from the same distribution as the champion's are not a regression; a slower version is."""

from __future__ import annotations

import random

from mlops_pipeline.rollout.admin import RouteFigures
from mlops_pipeline.rollout.compare import compare
from mlops_pipeline.rollout.settings import RolloutPolicy
from mlops_pipeline.serving.proxy import RouteStats

POLICY = RolloutPolicy()  # the shipped thresholds: 1.5x and 5 ms more, 50 requests


def figures(route: str, latencies_ms: list[float], *, bounds: bool = True) -> RouteFigures:
    """What the proxy reports for these requests (all inside the window)."""
    stats = RouteStats(samples=10_000)
    for ms in latencies_ms:
        stats.add(finished=100.0, seconds=ms / 1000, error=False, client_error=False)
    summary = stats.summary(window=60, now=100.0)
    if not bounds:  # a proxy older than the bounds
        summary = {k: v for k, v in summary.items() if k not in ("p95_low_ms", "p95_high_ms")}
    return RouteFigures.model_validate({"route": route, **summary})


def loaded_machine(rng: random.Random, n: int, scale: float = 1.0) -> list[float]:
    """Latencies of a busy 2-core machine: ~8 ms of service, a long tail of CPU waits."""
    return [scale * (6.0 + rng.lognormvariate(0.5, 1.0)) for _ in range(n)]


def verdicts(trials: int, canary_requests: int, scale: float, bounds: bool) -> int:
    """How many of `trials` 10 % canary steps regress on latency."""
    rng = random.Random(11)
    regressed = 0
    for _ in range(trials):
        champion = figures("primary", loaded_machine(rng, 9 * canary_requests), bounds=bounds)
        challenger = figures("canary", loaded_machine(rng, canary_requests, scale), bounds=bounds)
        regressed += compare(champion, challenger, POLICY).verdict == "regressed"
    return regressed


def test_an_equal_canary_is_seldom_called_slow_where_point_estimates_often_were() -> None:
    with_bounds = verdicts(300, canary_requests=60, scale=1.0, bounds=True)
    point_estimates = verdicts(300, canary_requests=60, scale=1.0, bounds=False)
    # each bound holds with 95 % confidence, so both must fail together: well under 5 %
    assert with_bounds <= 6, with_bounds
    assert point_estimates >= 4 * max(with_bounds, 1), (point_estimates, with_bounds)


def test_a_version_three_times_slower_is_caught_from_60_requests() -> None:
    assert verdicts(100, canary_requests=60, scale=3.0, bounds=True) >= 95


def test_the_reason_names_both_bounds() -> None:
    rng = random.Random(3)
    champion = figures("primary", loaded_machine(rng, 900))
    challenger = figures("canary", loaded_machine(rng, 100, scale=3.0))
    comparison = compare(champion, challenger, POLICY)
    assert comparison.verdict == "regressed"
    [reason] = comparison.reasons
    assert f"(at least {challenger.p95_low_ms:.1f})" in reason
    assert f"(at most {champion.p95_high_ms:.1f}), 95 % confidence" in reason
    assert challenger.p95_low_ms < challenger.p95_ms and champion.p95_ms < champion.p95_high_ms


def test_a_champion_too_thin_for_an_upper_bound_is_judged_on_its_point_estimate() -> None:
    # a 50 % step of a few seconds: 20-58 champion requests have no upper bound for the p95;
    # that must not let an 80 ms slower challenger through (it did, and was promoted)
    policy = RolloutPolicy(min_requests=20)
    rng = random.Random(5)
    champion = figures("primary", [5.0 + rng.random() * 3 for _ in range(30)])
    slow = figures("canary", [85.0 + rng.random() * 3 for _ in range(30)])
    equal = figures("canary", [5.0 + rng.random() * 3 for _ in range(30)])
    assert champion.p95_high_ms is None and slow.p95_low_ms is not None

    comparison = compare(champion, slow, policy)
    assert comparison.verdict == "regressed"
    assert "too few requests for an upper bound" in comparison.reasons[0]
    assert compare(champion, equal, policy).verdict == "healthy"
