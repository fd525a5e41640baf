"""Judge a challenger's live figures against the champion's over the same window."""

from __future__ import annotations

from typing import Literal

from mlops_pipeline.rollout.admin import RouteFigures
from mlops_pipeline.rollout.settings import RolloutPolicy
from pydantic import BaseModel

Verdict = Literal["healthy", "regressed", "insufficient_traffic"]


class Comparison(BaseModel):
    """A verdict with the figures behind it and why."""

    verdict: Verdict
    reasons: list[str]
    champion: RouteFigures
    challenger: RouteFigures
    error_rate_increase: float | None = None
    p95_ratio: float | None = None
    error_regressed: bool = False  # the error rate alone is a regression (p95 may be too)


def compare(champion: RouteFigures, challenger: RouteFigures, policy: RolloutPolicy) -> Comparison:
    """Compare error rate and p95 latency of two routes over one window.

    Args:
        champion: the champion's figures (primary route) over the window.
        challenger: the challenger's figures (canary or shadow route) over the same window.
        policy: thresholds (see `RolloutPolicy`).

    The error rate counts 5xx answers, connection failures and timeouts (the proxy's `errors`)
    plus 4xx answers (its `client_errors`): both versions see the same mix of requests, so a
    higher share of either is the challenger's doing.

    Returns:
        `regressed` when the challenger's error rate is higher by more than
        `max_error_rate_increase` (judged before `min_requests` too, when its errors alone
        already exceed the allowance over `min_requests` requests), or its p95 is above both
        `max_p95_ratio` times and `min_p95_increase_ms` more than the champion's with 95 %
        confidence: the challenger's lower bound against the champion's upper bound (the
        proxy's order-statistic bounds; a canary's p95 often rests on a few dozen requests,
        and a ratio of point estimates calls their noise a regression), or against the
        champion's point estimate when it has too few requests (under 59) for an upper bound;
        `insufficient_traffic` when either side has fewer than `min_requests` requests and
        nothing is conclusive; else `healthy`.
    """
    need = policy.min_requests
    base_rate = champion.failure_rate or 0.0
    enough = challenger.requests >= need and champion.requests >= need
    reasons: list[str] = []
    # failures so far are conclusive when they exceed the allowance even had every request up
    # to min_requests succeeded
    rate = challenger.failures / max(challenger.requests, need)
    increase = (challenger.failure_rate or 0.0) - base_rate if challenger.requests else None
    error_regressed = regressed = rate - base_rate > policy.max_error_rate_increase
    if regressed:
        reasons.append(
            f"error rate {challenger.failures}/{challenger.requests} vs champion "
            f"{champion.failures}/{champion.requests}: up by more than "
            f"{policy.max_error_rate_increase}"
        )
    ratio = None
    if challenger.p95_ms is not None and champion.p95_ms:
        ratio = challenger.p95_ms / champion.p95_ms
        slow, fast = _p95_bounds(challenger)[0], _p95_bounds(champion)[1]
        # under 59 requests the champion's p95 has no upper bound: its point estimate then,
        # still against the challenger's lower bound (no bound must not mean "not slower")
        bounded = fast is not None
        fast = fast if bounded else champion.p95_ms
        if (
            enough
            and slow is not None
            and fast is not None
            and slow > policy.max_p95_ratio * fast
            and slow - fast > policy.min_p95_increase_ms
        ):
            regressed = True
            side = f"at most {fast:.1f}" if bounded else "too few requests for an upper bound"
            reasons.append(
                f"p95 {challenger.p95_ms:.1f} ms (at least {slow:.1f}) vs champion "
                f"{champion.p95_ms:.1f} ms ({side}), 95 % confidence: "
                f"{slow / fast:.2f}x > {policy.max_p95_ratio}x"
            )
    if regressed:
        verdict: Verdict = "regressed"
    elif not enough:
        verdict = "insufficient_traffic"
        reasons.append(
            f"too few requests to judge: challenger {challenger.requests}, champion "
            f"{champion.requests} (need {need} each)"
        )
    else:
        verdict = "healthy"
        reasons.append(
            f"error rate {challenger.failure_rate:.4f} vs {base_rate:.4f}, p95 "
            f"{challenger.p95_ms or 0:.1f} ms vs {champion.p95_ms or 0:.1f} ms"
        )
    return Comparison(
        verdict=verdict,
        reasons=reasons,
        champion=champion,
        challenger=challenger,
        error_rate_increase=increase,
        p95_ratio=ratio,
        error_regressed=error_regressed,
    )


def _p95_bounds(figures: RouteFigures) -> tuple[float | None, float | None]:
    """The p95's (lower, upper) 95 % confidence bounds, or the point estimate twice for figures
    from a proxy that reports no bounds (an image built before them)."""
    if "p95_low_ms" in figures.model_fields_set:
        return figures.p95_low_ms, figures.p95_high_ms
    return figures.p95_ms, figures.p95_ms
