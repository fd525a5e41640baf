"""Rollout steps over `mlops_pipeline.rollout` and the targets' live-challenger operations.

None caches: each reads or changes a live deployment. The proxy admin client
(`operations.proxy_admin`: one proxy, or every pod's proxy of a kubernetes: deployment) is
made inside the steps that need it (`canary_steps`, `shadow_traffic`), so the admin token
never becomes a task parameter that Prefect would record.
"""

from __future__ import annotations

from mlops_pipeline.rollout import canary, records, report, settings, shadow
from mlops_pipeline.rollout.admin import RouteFigures
from mlops_pipeline.rollout.canary import CanaryResult
from mlops_pipeline.rollout.settings import RolloutPolicy
from mlops_pipeline.targets import operations
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

rollout_policy = step(settings.rollout_policy, cache_policy=NO_CACHE)
parse_steps = step(canary.parse_steps, cache_policy=NO_CACHE)
parse_sticky = step(canary.parse_sticky, cache_policy=NO_CACHE)
parse_metric = step(shadow.parse_metric, cache_policy=NO_CACHE)
check_metric_fits = step(shadow.check_metric_fits, cache_policy=NO_CACHE)
start_challenger = step(operations.start_challenger, cache_policy=NO_CACHE)
stop_challenger = step(operations.stop_challenger, cache_policy=NO_CACHE, retries=1)
promote_challenger = step(operations.promote_challenger, cache_policy=NO_CACHE)
record_rollout_rollback = step(operations.record_rollout_rollback, cache_policy=NO_CACHE)
shadow_comparison = step(shadow.shadow_comparison, cache_policy=NO_CACHE)
record_decision = step(records.record_decision, cache_policy=NO_CACHE)
log_rollout_run = step(records.log_run, cache_policy=NO_CACHE, retries=2)
write_report = step(report.write_report, cache_policy=NO_CACHE)


def _canary_steps(
    name: str,
    upstream: str,
    version: str,
    steps: list[float],
    interval: float,
    policy: RolloutPolicy,
    sticky_header: str | None = None,
) -> CanaryResult:
    """`canary.run_canary` on deployment NAME's proxy (see there)."""
    admin = operations.proxy_admin(name)
    return canary.run_canary(
        admin, upstream, version, steps, interval, policy, sticky_header=sticky_header
    )


def _shadow_traffic(
    name: str, upstream: str, version: str, percent: float, duration: float
) -> list[RouteFigures]:
    """`shadow.run_shadow` on deployment NAME's proxy (see there)."""
    admin = operations.proxy_admin(name)
    return shadow.run_shadow(admin, upstream, version, percent, duration)


def _clear_routes(name: str) -> None:
    """Remove NAME's canary and shadow routes: all traffic on the champion (best effort is the
    caller's: it raises what the proxy raises)."""
    operations.proxy_admin(name).set_routes(canary=None, shadow=None)


def _proxy_routes(name: str) -> dict:
    """NAME's proxy routes as JSON (primary, canary, shadow, sticky header)."""
    return operations.proxy_admin(name).routes().model_dump()


canary_steps = step(_canary_steps, name="canary-steps", cache_policy=NO_CACHE)
shadow_traffic = step(_shadow_traffic, name="shadow-traffic", cache_policy=NO_CACHE)
clear_routes = step(_clear_routes, name="clear-routes", cache_policy=NO_CACHE, retries=2)
proxy_routes = step(_proxy_routes, name="proxy-routes", cache_policy=NO_CACHE)
