"""Deployment-spec steps over `mlops_pipeline.spec` (Prefect-free logic) and the targets.

The ledger, the registry, the secrets and the Prefect API are read on every call, so nothing
caches (NO_CACHE).
"""

from __future__ import annotations

import logging
from typing import Literal

import httpx
from mlops_pipeline.errors import BackendError, InvalidInputError
from mlops_pipeline.spec import plan as spec_plan
from mlops_pipeline.spec import store
from mlops_pipeline.spec.load import LoadedSpec
from mlops_pipeline.spec.plan import Desired, Plan
from mlops_pipeline.targets.base import get_target
from mlops_pipeline.tasks.orchestration import prefect_api_configured, step
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound

logger = logging.getLogger(__name__)

ScheduleChange = Literal["created", "updated", "deleted", "none", "deferred"]


def canonical_target_uri(loaded: LoadedSpec) -> str:
    """The spec's target URI as the ledger records it; an unknown target points at its line.

    Raises:
        InvalidInputError: a malformed or unknown target URI (exit 2), at `target.uri`.
    """
    try:
        return get_target(loaded.spec.target.uri).target_uri
    except InvalidInputError as exc:
        raise loaded.error("target.uri", str(exc)) from exc


def plan_for(loaded: LoadedSpec) -> tuple[Plan, Desired]:
    """What applying LOADED would change now (`mlops_pipeline.spec.plan.plan_spec`)."""
    return spec_plan.plan_spec(loaded, canonical_target_uri(loaded))


def install_api_keys(loaded: LoadedSpec) -> str | None:
    """Read the keys the spec's `auth` names and write the deployment's key file; returns its
    path (None without `auth`). The keys never leave this step (not even as its result)."""
    keys = spec_plan.read_api_keys(loaded)
    return str(spec_plan.write_key_file(loaded.spec.name, keys)) if keys is not None else None


def sync_schedule(name: str, cron: str | None, monitor_deployment: str) -> ScheduleChange:
    """Make the served monitor deployment MONITOR_DEPLOYMENT ("flow/deployment") run for
    deployment NAME on CRON (UTC), as its schedule with slug `spec-<name>`: created, updated,
    deleted (CRON None) or left alone when it already matches (so applying twice changes
    nothing). Without a Prefect API or that deployment it only logs and returns `deferred`:
    `mlops up` serves the schedule from the ledger when it starts.

    Raises:
        BackendError: the Prefect API failed or is unreachable (exit 5).
    """
    slug = store.monitor_schedule_slug(name)
    if not prefect_api_configured():
        logger.info("monitoring.schedule of %s applies when `mlops up` serves the monitor", name)
        return "deferred"
    parameters = {"deployment": name}
    try:
        with get_client(sync_client=True) as client:
            try:
                deployment = client.read_deployment_by_name(monitor_deployment)
            except ObjectNotFound:
                logger.info(
                    "monitoring.schedule of %s applies when `mlops up` serves the monitor "
                    "(no deployment %s on the Prefect API yet)",
                    name,
                    monitor_deployment,
                )
                return "deferred"
            schedules = client.read_deployment_schedules(deployment.id)
            existing = next((s for s in schedules if s.slug == slug), None)
            if cron is None:
                if existing is None:
                    return "none"
                client.delete_deployment_schedule(deployment.id, existing.id)
                logger.info("monitor schedule %s removed", slug)
                return "deleted"
            wanted = CronSchedule(cron=cron, timezone="UTC")
            if existing is None:
                create = DeploymentScheduleCreate(
                    schedule=wanted, active=True, slug=slug, parameters=parameters
                )
                client.create_deployment_schedules(deployment.id, [create])
                logger.info("monitor schedule %s created: %s UTC", slug, cron)
                return "created"
            if (
                existing.schedule == wanted
                and existing.active
                and existing.parameters == parameters
            ):
                return "none"
            client.update_deployment_schedule(
                deployment.id, existing.id, active=True, schedule=wanted, parameters=parameters
            )
            logger.info("monitor schedule %s updated: %s UTC", slug, cron)
            return "updated"
    except ObjectNotFound as exc:  # the deployment went away between the calls
        raise BackendError(
            f"The monitor deployment {monitor_deployment} vanished while its schedule {slug} "
            "was set: apply the spec again."
        ) from exc
    except httpx.HTTPError as exc:  # refused, timed out, or an error status
        raise BackendError(
            f"The Prefect API failed while setting the monitor schedule {slug}: "
            f"{exc.__class__.__name__}: {exc}. Check PREFECT_API_URL, then apply the spec again."
        ) from exc


plan_spec = step(plan_for, name="plan-spec", cache_policy=NO_CACHE)
install_keys = step(install_api_keys, name="install-api-keys", cache_policy=NO_CACHE)
save_applied_spec = step(store.save_applied, cache_policy=NO_CACHE)
sync_monitor_schedule = step(sync_schedule, name="sync-monitor-schedule", cache_policy=NO_CACHE)
