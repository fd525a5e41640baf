"""The thresholds a live rollout judges a challenger by: MLOPS_ROLLOUT_* variables.

* `MLOPS_ROLLOUT_MAX_ERROR_RATE_INCREASE` (0.01): largest allowed rise of the challenger's
  error rate over the champion's, absolute (0.01 = one percentage point).
* `MLOPS_ROLLOUT_MAX_P95_RATIO` (1.5): largest allowed challenger p95 / champion p95.
* `MLOPS_ROLLOUT_MIN_P95_INCREASE_MS` (5.0): a smaller p95 rise (ms) is never a regression
  (sub-millisecond p95s make ratios noisy).
* `MLOPS_ROLLOUT_MIN_REQUESTS` (50): requests each route needs in a step before its rates are
  judged.
* `MLOPS_ROLLOUT_THIN_TRAFFIC_EXTENSIONS` (2): times a step with too few requests waits one more
  interval; still too few after that, the canary rolls back (never promoted unjudged).
* `MLOPS_ROLLOUT_WARMUP_SECONDS` (5): latencies of the first step's first seconds stay out of
  its p95 (a new process warms up: imports, caches), when the step lasts over twice as long;
  its errors always count.
* `MLOPS_ROLLOUT_CAPTURE_SETTLE_SECONDS` (6): wait at a shadow's end before its captures are
  read, so the champion's last rows are flushed (MLOPS_SERVING_CAPTURE_FLUSH_SECONDS, 5 s).
"""

from __future__ import annotations

from mlops_pipeline.errors import InvalidInputError
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class RolloutPolicy(BaseSettings):
    """Canary and shadow thresholds; CLI options override single fields."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_ROLLOUT_", extra="ignore")

    max_error_rate_increase: float = Field(
        default=0.01, ge=0, le=1, description="Allowed error-rate rise, absolute."
    )
    max_p95_ratio: float = Field(default=1.5, ge=1, description="Allowed p95 ratio.")
    min_p95_increase_ms: float = Field(
        default=5.0, ge=0, description="A smaller p95 rise (ms) never counts."
    )
    min_requests: int = Field(default=50, ge=1, description="Requests per route before judging.")
    warmup_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Latencies of the challenger's first seconds stay out of the first step's "
        "p95 (a new process warms up), when the step is longer than twice this.",
    )
    capture_settle_seconds: float = Field(
        default=6.0,
        ge=0,
        description="Wait before reading captures at a shadow's end: the champion's capture "
        "writer flushes every MLOPS_SERVING_CAPTURE_FLUSH_SECONDS (5 s).",
    )
    latency_checks: int = Field(
        default=2,
        ge=1,
        description="Windows a step's p95 must be over the limits in before it rolls back: a "
        "step whose only regression is latency is watched another interval on its own, so a "
        "burst inside one window (another job, a GC pause) is not a regression; errors roll "
        "back at once.",
    )
    thin_traffic_extensions: int = Field(
        default=2, ge=0, description="Extra intervals a thin step waits before rolling back."
    )


def rollout_policy(
    max_error_rate_increase: float | None = None, max_p95_ratio: float | None = None
) -> RolloutPolicy:
    """The MLOPS_ROLLOUT_* policy with the given overrides (None keeps the setting).

    Raises:
        InvalidInputError: a setting or override out of range (names the field and value).
    """
    overrides = {
        k: v
        for k, v in (
            ("max_error_rate_increase", max_error_rate_increase),
            ("max_p95_ratio", max_p95_ratio),
        )
        if v is not None
    }
    try:
        return RolloutPolicy(**overrides)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(map(str, problem["loc"]))
        raise InvalidInputError(
            f"Rollout setting {field}={problem.get('input')!r} is invalid: {problem['msg']}.",
            hint=f"Fix --{field.replace('_', '-')} or MLOPS_ROLLOUT_{field.upper()}.",
            field=field,
            value=problem.get("input"),
        ) from exc
