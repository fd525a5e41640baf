"""The proxy's confidence bounds of a quantile: exact ranks, coverage and the stats it reports."""

from __future__ import annotations

import math
import random

import pytest
from mlops_pipeline.serving.proxy import RouteStats, quantile_bounds
from scipy import stats


@pytest.mark.parametrize("n", [1, 20, 58, 59, 60, 150, 1000, 10_000])
def test_bounds_are_the_order_statistics_the_binomial_gives(n: int) -> None:
    ordered = [float(i) for i in range(1, n + 1)]  # rank r holds the value r
    low, high = quantile_bounds(ordered, 0.95)
    binomial = stats.binom(n, 0.95)
    # largest rank l with P(B <= l - 1) <= 0.05; smallest rank u with P(B <= u - 1) >= 0.95
    lows = [rank for rank in range(1, n + 1) if binomial.cdf(rank - 1) <= 0.05]
    highs = [rank for rank in range(1, n + 1) if binomial.cdf(rank - 1) >= 0.95]
    assert low == (float(max(lows)) if lows else None)
    assert high == (float(min(highs)) if highs else None)


def test_59_draws_are_the_fewest_with_an_upper_bound_of_the_p95() -> None:
    # all n draws fall below the p95 with probability 0.95 ** n: above 0.05 for n = 58
    assert quantile_bounds([1.0] * 58, 0.95)[1] is None
    assert quantile_bounds([1.0] * 59, 0.95)[1] == 1.0
    # the smallest draw is below it unless all n are above (0.05 ** n): a lower bound from n = 2
    assert quantile_bounds([3.0, 4.0], 0.95) == (3.0, None)


def test_each_bound_holds_in_at_least_95_percent_of_samples() -> None:
    rng = random.Random(7)
    true_p95 = -2.0 * math.log(0.05)  # exponential, mean 2
    trials, below, above = 2000, 0, 0
    for _ in range(trials):
        draws = sorted(rng.expovariate(0.5) for _ in range(100))
        low, high = quantile_bounds(draws, 0.95)
        below += low <= true_p95
        above += high is None or high >= true_p95
    # coverage 0.95 or more by construction; 2000 trials put 3 standard errors at 0.015
    assert below / trials >= 0.935 and above / trials >= 0.935


def test_route_stats_report_the_bounds_in_milliseconds() -> None:
    route = RouteStats(samples=1000)
    for i in range(200):
        route.add(finished=100.0, seconds=(i + 1) / 1000, error=False, client_error=False)
    summary = route.summary(window=60, now=100.0)
    low, high = quantile_bounds([(i + 1) / 1000 for i in range(200)], 0.95)
    assert summary["p95_low_ms"] == round(low * 1000, 3) < summary["p95_ms"]
    assert summary["p95_ms"] < summary["p95_high_ms"] == round(high * 1000, 3)
    assert RouteStats(samples=10).summary(60, 0.0)["p95_low_ms"] is None
