"""The canary's steps and judgement against a scripted proxy: no processes, no sleeping."""

from __future__ import annotations

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.rollout.admin import RouteFigures, Routes, merge_figures
from mlops_pipeline.rollout.canary import parse_steps, run_canary
from mlops_pipeline.rollout.compare import compare
from mlops_pipeline.rollout.settings import RolloutPolicy, rollout_policy

CHAMPION, CHALLENGER = "http://127.0.0.1:1001", "http://127.0.0.1:1002"


class ScriptedProxy:
    """A ProxyAdmin stand-in: each stats read returns the next scripted (champion, challenger)
    figures; route changes are recorded."""

    def __init__(self, script: list[tuple[RouteFigures, RouteFigures]]) -> None:
        self.script = list(script)
        self.changes: list[dict] = []
        self.windows: list[float] = []

    def routes(self) -> Routes:
        return Routes(primary={"upstream": CHAMPION, "version": "1"})

    def set_routes(self, drain_timeout: float = 30.0, **changes) -> None:
        self.changes.append(changes)

    def figures(self, window: float, route: str, upstream: str) -> RouteFigures:
        self.windows.append(window)
        champion, challenger = self.script[0]
        if route == "canary":
            self.script.pop(0)
            return challenger.model_copy()
        return champion.model_copy()


def fig(
    route: str, requests: int, errors: int = 0, p95: float = 10.0, client_errors: int = 0
) -> RouteFigures:
    return RouteFigures(
        route=route,
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        client_errors=client_errors,
        p95_ms=p95 if requests else None,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(proxy: ScriptedProxy, steps: list[float], policy: RolloutPolicy):
    clock = Clock()
    return run_canary(
        proxy, CHALLENGER, "2", steps, 10.0, policy,
        sticky_header="X-Client", sleep=clock.sleep, clock=clock,
    )  # fmt: skip


POLICY = RolloutPolicy(min_requests=50, thin_traffic_extensions=1, warmup_seconds=0)


def test_every_step_healthy_promotes_and_100_is_judged_on_the_last_champion_figures() -> None:
    proxy = ScriptedProxy(
        [
            (fig("primary", 900, p95=10), fig("canary", 100, p95=11)),
            (fig("primary", 500, p95=12), fig("canary", 500, p95=12)),
            (fig("primary", 0), fig("canary", 1000, p95=13)),  # 100 %: the champion idles
        ]
    )
    result = run(proxy, [10, 50, 100], POLICY)

    assert result.outcome == "promote"
    assert [c["canary"]["percent"] for c in proxy.changes] == [10, 50, 100]
    assert all(c["sticky_header"] == "X-Client" for c in proxy.changes)
    last = result.steps[-1].comparison
    assert last.verdict == "healthy" and last.champion.requests == 500  # step 2's figures
    assert last.p95_ratio == pytest.approx(13 / 12)
    assert [s.seconds for s in result.steps] == [10.0, 10.0, 10.0]


def test_errors_roll_back_at_once_with_the_figures() -> None:
    proxy = ScriptedProxy([(fig("primary", 900, errors=9), fig("canary", 100, errors=3))])
    result = run(proxy, [10, 100], POLICY)

    assert result.outcome == "rolled_back"
    assert proxy.changes[-1] == {"canary": None}
    comparison = result.steps[0].comparison
    # 3 % against 1 %: up by 0.02 > 0.01
    assert comparison.verdict == "regressed"
    assert comparison.error_rate_increase == pytest.approx(0.02)
    assert result.reason.startswith("at 10%: error rate 3/100 vs champion 9/900")


def test_errors_are_conclusive_before_the_minimum_count() -> None:
    # 2 failures in 10 requests: at least 2/50 = 4 % whatever the other 40 would do
    proxy = ScriptedProxy([(fig("primary", 90), fig("canary", 10, errors=2))])
    assert run(proxy, [10, 100], POLICY).steps[0].comparison.verdict == "regressed"


def test_p95_regression_needs_the_ratio_and_the_absolute_rise() -> None:
    policy = RolloutPolicy(min_requests=10)
    slow = compare(fig("primary", 100, p95=10.0), fig("canary", 100, p95=16.0), policy)
    assert slow.verdict == "regressed" and slow.p95_ratio == pytest.approx(1.6)
    tiny = compare(fig("primary", 100, p95=1.0), fig("canary", 100, p95=3.0), policy)
    assert tiny.verdict == "healthy"  # 3x, but only 2 ms more


def test_thin_traffic_waits_longer_then_rolls_back_without_promoting() -> None:
    proxy = ScriptedProxy(
        [
            (fig("primary", 30), fig("canary", 3)),
            (fig("primary", 60), fig("canary", 6)),  # after one more interval: still thin
        ]
    )
    result = run(proxy, [10, 100], POLICY)

    assert result.outcome == "rolled_back"
    assert proxy.windows == [10.0, 10.0, 20.0, 20.0]  # the second read covers both intervals
    assert result.steps[0].comparison.verdict == "insufficient_traffic"
    assert "not enough traffic to judge" in result.reason
    assert "challenger 6, champion 60 (need 50 each)" in result.reason


def test_4xx_answers_the_proxy_counted_are_failures() -> None:
    # a challenger whose model raises answers 422: no 5xx, yet 60 of its 100 answers failed
    proxy = ScriptedProxy([(fig("primary", 900), fig("canary", 100, client_errors=60))])
    result = run(proxy, [10, 100], POLICY)
    step = result.steps[0].comparison
    assert result.outcome == "rolled_back" and proxy.changes[-1] == {"canary": None}
    assert (step.challenger.errors, step.challenger.client_errors) == (0, 60)
    assert step.error_rate_increase == pytest.approx(0.6)
    assert result.reason.startswith("at 10%: error rate 60/100 vs champion 0/900")


def test_figures_under_several_version_labels_add_their_client_errors() -> None:
    merged = merge_figures(
        "primary",
        [fig("primary", 300, errors=1, client_errors=2), fig("primary", 100, client_errors=5)],
    )
    assert (merged.requests, merged.errors, merged.client_errors) == (400, 1, 7)
    assert merged.failure_rate == pytest.approx(8 / 400)


@pytest.mark.parametrize("steps", ["", "10,x", "50,10,100", "10,50", "0,100", "10,10,100"])
def test_bad_steps_are_refused(steps: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_steps(steps)
    assert raised.value.details["field"] == "steps"


def test_policy_comes_from_the_environment_and_overrides(monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_ROLLOUT_MIN_REQUESTS", "7")
    policy = rollout_policy(max_p95_ratio=2.0)
    assert (policy.min_requests, policy.max_p95_ratio, policy.max_error_rate_increase) == (
        7, 2.0, 0.01,
    )  # fmt: skip
    with pytest.raises(InvalidInputError) as raised:
        rollout_policy(max_p95_ratio=0.5)
    assert raised.value.details["field"] == "max_p95_ratio"


class WarmingProxy(ScriptedProxy):
    """The challenger's p95 over the whole 10 s step is 300 ms (its first answers were slow);
    over the last 6 s, after the 4 s warm-up, it is 11 ms."""

    def __init__(self) -> None:
        super().__init__([])

    def figures(self, window: float, route: str, upstream: str) -> RouteFigures:
        self.windows.append(window)
        if route == "primary":
            return fig("primary", 500, p95=10.0)
        whole = window > 6
        return fig("canary", 500, p95=300.0 if whole else 11.0).model_copy(
            update={"p95_low_ms": 280.0 if whole else 10.5, "p95_high_ms": 320.0 if whole else 12.0}
        )


def test_the_first_steps_p95_leaves_the_warm_up_out() -> None:
    proxy = WarmingProxy()
    result = run(proxy, [100], RolloutPolicy(min_requests=50, warmup_seconds=4))
    assert result.outcome == "promote"
    warm = result.steps[0].comparison.challenger
    # the bounds come from the same warm window as the p95 (they were the whole window's once:
    # an upper bound below its own p95 in the JSON, and a lower bound judged on the warm-up)
    assert (warm.p95_low_ms, warm.p95_ms, warm.p95_high_ms) == (10.5, 11.0, 12.0)
    assert proxy.windows == [10.0, 10.0, 6.0, 6.0]
    # without the warm-up allowance the same step is a latency regression
    proxy = WarmingProxy()
    assert run(proxy, [100], RolloutPolicy(min_requests=50, warmup_seconds=0)).outcome == (
        "rolled_back"
    )


def test_a_p95_burst_in_one_window_is_confirmed_before_it_rolls_back() -> None:
    """Another job slows the machine for one window: the next window, alone, clears it."""
    burst = (fig("primary", 500, p95=10), fig("canary", 500, p95=40))
    proxy = ScriptedProxy([burst, (fig("primary", 500, p95=10), fig("canary", 500, p95=11))])
    result = run(proxy, [100], POLICY)
    assert result.outcome == "promote" and result.steps[0].comparison.challenger.p95_ms == 11
    assert proxy.windows == [10.0, 10.0, 10.0, 10.0] and result.steps[0].seconds == 20.0
    # a slowdown that lasts both windows rolls back; errors need no second window
    proxy = ScriptedProxy([burst, burst])
    assert run(proxy, [100], POLICY).outcome == "rolled_back" and proxy.script == []
    failing = (fig("primary", 500), fig("canary", 500, errors=50, p95=40))
    proxy = ScriptedProxy([failing, burst])
    assert run(proxy, [100], POLICY).outcome == "rolled_back" and proxy.script == [burst]
    # one window is enough where MLOPS_ROLLOUT_LATENCY_CHECKS=1
    proxy = ScriptedProxy([burst, burst])
    single = POLICY.model_copy(update={"latency_checks": 1})
    assert run(proxy, [100], single).outcome == "rolled_back" and proxy.script == [burst]


def test_figures_in_json_carry_the_failure_rate_the_verdict_judged() -> None:
    # a model that raises answers 422: client errors, not 5xx, yet the canary's failures
    dumped = fig("canary", 55, client_errors=55).model_dump(mode="json")
    assert (dumped["errors"], dumped["client_errors"]) == (0, 55)
    assert (dumped["failures"], dumped["failure_rate"]) == (55, 1.0)
    assert RouteFigures.model_validate(dumped).failures == 55  # read back from the ledger
