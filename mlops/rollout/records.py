"""Where rollout decisions are kept: the ledger's decision table and an MLflow run each.

A canary or shadow run is a row of the ledger's `redeploys` table (decision `promoted`,
`rolled_back` or `shadowed`, the whole `RolloutDecision` in `details` with `kind`), so
`mlops redeploys NAME` lists them beside the redeploy decisions, and an MLflow run in the
`mlops-rollout` experiment carries the figures as metrics and the decision as `decision.json`
(plus the shadow HTML report). The canary's promotion or rollback also goes to the
deployment's history (targets.operations).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import sqlalchemy as sa
from mlops_pipeline.errors import BackendError
from mlops_pipeline.ledger import actor, engine, redeploys_table
from mlops_pipeline.rollout.results import RolloutDecision
from mlops_pipeline.tracking import connect, ensure_experiment

log = logging.getLogger(__name__)

ROLLOUT_EXPERIMENT = "mlops-rollout"


def record_decision(decision: RolloutDecision) -> int:
    """Insert the decision into the ledger, finished now; returns the row id.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    now = dt.datetime.now(dt.UTC)
    values = {
        "deployment": decision.deployment,
        "started_at": decision.started_at or now,
        "finished_at": now,
        "who": actor(),
        "decision": decision.decision,
        "reason": f"{decision.kind}: {decision.reason}"[:4000],
        "champion_version": decision.champion_version,
        "challenger_version": decision.challenger_version,
        "details": decision.model_dump(mode="json"),
    }
    try:
        with engine().begin() as conn:
            return conn.execute(sa.insert(redeploys_table).values(**values)).inserted_primary_key[0]
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(f"Could not record the {decision.kind} in the ledger: {exc}") from exc


def metrics_of(decision: RolloutDecision) -> dict[str, float]:
    """The decision's figures as flat MLflow metric names (None values left out)."""
    metrics: dict[str, float] = {}
    for i, step in enumerate(decision.steps):
        comparison = step.comparison
        metrics[f"step{i}.percent"] = step.percent
        for side in ("champion", "challenger"):
            figures = getattr(comparison, side)
            for key in ("requests", "errors", "client_errors", "error_rate", "p50_ms", "p95_ms"):
                value = getattr(figures, key)
                if value is not None:
                    metrics[f"step{i}.{side}.{key}"] = float(value)
    if decision.shadow is not None:
        for key, value in decision.shadow.model_dump().items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"shadow.{key}"] = float(value)
    return metrics


def log_run(decision: RolloutDecision, report: Path | None = None) -> str:
    """Log the decision to a run of the `mlops-rollout` experiment; returns the run id.

    Raises:
        BackendError: MLflow refused.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    connect()
    tags = {
        "mlops.deployment": decision.deployment,
        "mlops.rollout": decision.kind,
        "mlops.decision": decision.decision,
        "mlops.reason": decision.reason[:5000],
        "mlops.model_name": decision.model_name,
        "mlops.champion_version": decision.champion_version,
        "mlops.challenger_version": decision.challenger_version,
    }
    try:
        experiment_id = ensure_experiment(ROLLOUT_EXPERIMENT)
        stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
        name = f"{decision.kind}-{decision.deployment}-{stamp}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            metrics = metrics_of(decision)
            if metrics:
                mlflow.log_metrics(metrics)
            mlflow.log_dict(decision.model_dump(mode="json"), "decision.json")
            if report is not None:
                mlflow.log_artifact(str(report))
    except MlflowException as exc:
        raise BackendError(f"Could not log the {decision.kind} to MLflow: {exc.message}") from exc
    return run.info.run_id
