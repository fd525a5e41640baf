"""The applied spec of each deployment, in the ledger database beside the deployment itself.

The ledger's `deployments` row holds what the target runs (`DeployConfig`); this table holds the
rest of the spec that was applied (monitoring schedule and drift settings, redeploy policy, the
names of the key secrets) and a digest of the scoring code, so `mlops diff --spec` can compare
those too; `mlops up` serves a monitor schedule for each `monitoring.schedule`
(`scheduled_monitors`), the monitor flow reads its drift settings (`drift_settings`) and the
redeploy flow its policy (`redeploy_options`) from here. Never a key's value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from mlops_pipeline import ledger
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.spec.model import DeploymentSpec, MonitoringSpec, RedeploySpec
from pydantic import BaseModel

specs_table = ledger.deployment_specs_table


class AppliedSpec(BaseModel):
    """The spec last applied to a deployment, the file it came from and when."""

    name: str
    spec: DeploymentSpec
    source: str
    scoring_code_sha256: str | None = None
    applied_at: datetime


def find_applied(name: str) -> AppliedSpec | None:
    """The spec last applied to deployment NAME, or None (never applied from a file)."""
    with ledger.engine().connect() as conn:
        row = conn.execute(sa.select(specs_table).where(specs_table.c.name == name)).first()
    if row is None:
        return None
    data = dict(row._mapping)
    when = data["applied_at"]
    data["applied_at"] = when if when.tzinfo else when.replace(tzinfo=UTC)
    return AppliedSpec.model_validate(data)


def save_applied(
    spec: DeploymentSpec, source: str, scoring_code_sha256: str | None = None
) -> AppliedSpec:
    """Record SPEC (read from the file SOURCE) as the one applied to its deployment."""
    values = {
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        "source": source,
        "scoring_code_sha256": scoring_code_sha256,
        "applied_at": datetime.now(UTC),
    }
    with ledger.engine().begin() as conn:
        updated = conn.execute(
            sa.update(specs_table).where(specs_table.c.name == spec.name).values(**values)
        ).rowcount
        if not updated:
            conn.execute(sa.insert(specs_table).values(**values))
    return AppliedSpec.model_validate(values)


def monitoring_settings(name: str) -> MonitoringSpec | None:
    """The `monitoring` section applied to deployment NAME (None: no spec, or none in it)."""
    applied = find_applied(name)
    return applied.spec.monitoring if applied else None


def monitor_schedule_slug(name: str) -> str:
    """The slug of the monitor's schedule for deployment NAME's `monitoring.schedule`."""
    return f"spec-{name}"


def scheduled_monitors() -> dict[str, str]:
    """Deployment name -> cron (UTC) of every applied spec with a `monitoring.schedule`."""
    with ledger.engine().connect() as conn:
        rows = conn.execute(sa.select(specs_table.c.name, specs_table.c.spec)).all()
    specs = {name: DeploymentSpec.model_validate(spec) for name, spec in rows}
    return {
        name: spec.monitoring.schedule
        for name, spec in sorted(specs.items())
        if spec.monitoring and spec.monitoring.schedule
    }


def drift_settings(name: str) -> DriftConfig | None:
    """The drift settings of deployment NAME's applied spec (None: the monitor's defaults)."""
    monitoring = monitoring_settings(name)
    return monitoring.drift if monitoring else None


def redeploy_settings(name: str) -> RedeploySpec | None:
    """The `redeploy` section applied to deployment NAME (None: no spec, or none in it)."""
    applied = find_applied(name)
    return applied.spec.redeploy if applied else None


def redeploy_options(
    name: str,
    metric: str | None,
    min_improvement: float | None,
    bake_seconds: float | None,
    live_gate: str | None = None,
) -> dict[str, Any]:
    """The redeploy policy's overrides for deployment NAME: each option given (a flow
    parameter, a CLI option), else its applied spec's `redeploy` value, else None (the
    MLOPS_REDEPLOY_* / MLOPS_BAKE_* setting applies)."""
    given = {
        "metric": metric,
        "min_improvement": min_improvement,
        "bake_seconds": bake_seconds,
        "live_gate": live_gate,
    }
    spec = redeploy_settings(name)
    if spec is None:
        return given
    return {key: getattr(spec, key) if value is None else value for key, value in given.items()}
