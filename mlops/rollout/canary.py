"""The canary steps: shift a share of live traffic to the challenger, judge, go on or roll back.

`run_canary` drives the proxy admin API only; starting the challenger before and promoting or
stopping it after are the flow's (through the target). At each step it sets the canary
percent, waits the interval (logging progress), and compares the challenger's error rate and p95
latency with the champion's over that same window, from the proxy's per-route, per-version stats
(errors there: 5xx answers, connection failures and timeouts, plus 4xx answers such as the 422
of a model that raises; the proxy counts both, on every target).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.rollout.admin import CANARY, PRIMARY, ProxyAdmin, RouteFigures
from mlops_pipeline.rollout.compare import Comparison, compare
from mlops_pipeline.rollout.settings import RolloutPolicy
from mlops_pipeline.serving.proxy import InvalidInput, parse_sticky_header
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

# the latency figures taken from after a new process's warm-up, together
LATENCY_FIELDS = frozenset({"p50_ms", "p95_ms", "p95_low_ms", "p95_high_ms"})

PROGRESS_SECONDS = 5.0  # how often a waiting step logs its progress


class CanaryStep(BaseModel):
    """One step: the percent sent to the challenger, how long it was watched, the verdict."""

    percent: float
    seconds: float
    comparison: Comparison


class CanaryResult(BaseModel):
    """What the steps decided: `promote` (every step healthy; the flow then promotes) or
    `rolled_back` (all traffic is back on the champion), with each step's figures."""

    outcome: Literal["promote", "rolled_back"]
    reason: str
    steps: list[CanaryStep] = Field(default_factory=list)


def parse_steps(text: str | list[float]) -> list[float]:
    """`10,50,100` -> [10.0, 50.0, 100.0]: increasing percents in (0, 100], ending at 100,
    with at least one below 100 (the champion's figures there are the last step's baseline).

    Raises:
        InvalidInputError: anything else (the message names the value and the rule).
    """
    try:
        steps = [float(s) for s in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise InvalidInputError(
            f"--steps {text!r} is not a comma-separated list of percents.",
            hint="Write e.g. --steps 10,50,100.",
            field="steps",
            value=str(text),
        ) from exc
    ok = steps and all(math.isfinite(s) and 0 < s <= 100 for s in steps)
    if not ok or steps != sorted(set(steps)) or steps[-1] != 100:
        raise InvalidInputError(
            f"--steps {text!r} must be increasing percents in (0, 100] ending at 100.",
            hint="Write e.g. --steps 10,50,100.",
            field="steps",
            value=str(text),
        )
    if len(steps) < 2:  # i.e. only 100
        raise InvalidInputError(
            f"--steps {text!r} needs a step below 100: at 100 % the champion serves nothing, "
            "so the challenger has no champion figures to be judged against.",
            hint="Write e.g. --steps 10,50,100.",
            field="steps",
            value=str(text),
        )
    return steps


def parse_sticky(value: str | None) -> str | None:
    """The sticky header name, checked before anything starts; None keeps routing random.

    The rule is the proxy's own (`serving.proxy.parse_sticky_header`: an HTTP token of at most
    64 characters that is not hop-by-hop), so the CLI refuses exactly what the proxy would,
    instead of after the challenger has started.

    Raises:
        InvalidInputError: an empty or invalid header name (names the option and the value).
    """
    try:
        return parse_sticky_header(value)
    except InvalidInput as exc:
        raise InvalidInputError(
            f"--sticky-header {value!r} is not a header name a client can send.",
            hint="Name a header of 1-64 letters, digits or '-' that the proxy forwards, e.g. "
            "--sticky-header X-Client-ID (not Host, Connection, Content-Length or another "
            "hop-by-hop header), or leave the option out for random routing.",
            field="sticky_header",
            value=value,
        ) from exc


def run_canary(
    admin: ProxyAdmin,
    upstream: str,
    version: str,
    steps: list[float],
    interval: float,
    policy: RolloutPolicy,
    *,
    sticky_header: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> CanaryResult:
    """Walk the canary through `steps`, judging each against the champion.

    Args:
        admin: the deployment's proxy admin client.
        upstream: the challenger's base URL as the proxy reaches it (already ready).
        version: the challenger's model version (its stats label and X-Model-Version).
        steps: percents from `parse_steps`.
        interval: seconds each step is watched (> 0).
        policy: thresholds and the thin-traffic rule.
        sticky_header: a header whose value keeps one client on one version, or None.
        sleep, clock: injectable for tests (seconds).

    Returns:
        `promote` when every step was healthy (traffic stays at the last step's split: the flow
        promotes), else `rolled_back` with the canary route removed: all traffic is on the
        champion again. A step judged `insufficient_traffic` waits another interval up to
        `policy.thin_traffic_extensions` times, then rolls back: too little traffic is no
        evidence for the challenger. At 100 % the champion serves nothing, so the challenger is
        compared with the champion's figures from the last step where it had enough requests.
        A step whose only regression is p95 latency is watched for up to
        `policy.latency_checks - 1` more intervals, each judged on its own window, and rolls
        back only if every one regresses (a burst inside one window is not a regression);
        errors roll back at once.

    Raises:
        InvalidInputError: a non-positive interval.
        BackendError, ConflictError: the proxy failed or refused; the caller removes the route.
    """
    if not (interval > 0 and math.isfinite(interval)):
        raise InvalidInputError(
            f"--interval {interval!r} must be a positive number of seconds.",
            field="interval",
            value=interval,
        )
    primary = admin.routes().primary.get("upstream") or ""
    done: list[CanaryStep] = []
    baseline: RouteFigures | None = None

    def judge(champion: RouteFigures, challenger: RouteFigures) -> Comparison:
        if champion.requests < policy.min_requests and baseline is not None:
            champion = baseline  # e.g. at 100 %: the champion's last judged figures
        return compare(champion, challenger, policy)

    for percent in steps:
        route = {"upstream": upstream, "percent": percent, "version": version}
        admin.set_routes(canary=route, sticky_header=sticky_header)
        started = clock()
        for extension in range(policy.thin_traffic_extensions + 1):
            _wait(interval, percent, version, sleep, clock)
            window = clock() - started
            champion = admin.figures(window, PRIMARY, primary)
            challenger = admin.figures(window, CANARY, upstream)
            if not done and window > 2 * policy.warmup_seconds > 0:
                # a new process's first answers are slow: p95 from after the warm-up only
                warm = window - policy.warmup_seconds
                for side, route, url in (
                    (champion, PRIMARY, primary),
                    (challenger, CANARY, upstream),
                ):
                    later = admin.figures(warm, route, url)
                    # the bounds with their p95: bounds of the whole window beside a warm p95
                    # judged on the warm-up's slow answers and could sit below the p95 itself
                    for field in LATENCY_FIELDS & later.model_fields_set:
                        setattr(side, field, getattr(later, field))
            result = judge(champion, challenger)
            log.info(
                "canary v%s at %g%% after %.0f s: %s (%s)",
                version,
                percent,
                window,
                result.verdict,
                "; ".join(result.reasons),
            )
            if result.verdict != "insufficient_traffic":
                break
            if extension < policy.thin_traffic_extensions:
                log.info("canary v%s at %g%%: too few requests, waiting longer", version, percent)
        for _ in range(policy.latency_checks - 1):
            if result.verdict != "regressed" or result.error_regressed:
                break
            # p95 alone: a regression only if the next window, on its own, shows it too
            log.info("canary v%s at %g%%: p95 over the limits; confirming", version, percent)
            confirm_start = clock()
            _wait(interval, percent, version, sleep, clock)
            span = clock() - confirm_start
            confirmation = judge(
                admin.figures(span, PRIMARY, primary), admin.figures(span, CANARY, upstream)
            )
            window = clock() - started
            if confirmation.verdict == "insufficient_traffic":
                break  # no evidence either way: the regression stands
            result = confirmation
        done.append(CanaryStep(percent=percent, seconds=round(window, 3), comparison=result))
        if result.verdict != "healthy":
            admin.set_routes(canary=None)
            why = "; ".join(result.reasons)
            if result.verdict == "insufficient_traffic":
                why = f"not enough traffic to judge after {len(done)} step(s): {why}"
            log.warning("canary v%s rolled back at %g%%: %s", version, percent, why)
            return CanaryResult(outcome="rolled_back", reason=f"at {percent:g}%: {why}", steps=done)
        if result.champion.requests >= policy.min_requests:
            baseline = result.champion
    return CanaryResult(
        outcome="promote",
        reason=f"healthy at every step ({', '.join(f'{s:g}%' for s in steps)})",
        steps=done,
    )


def _wait(
    interval: float,
    percent: float,
    version: str,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> None:
    """Sleep `interval` seconds, logging progress every PROGRESS_SECONDS."""
    start = clock()
    while (left := interval - (clock() - start)) > 0:
        sleep(min(PROGRESS_SECONDS, left))
        elapsed = min(interval, clock() - start)
        log.info("canary v%s at %g%%: %.0f/%.0f s", version, percent, elapsed, interval)
