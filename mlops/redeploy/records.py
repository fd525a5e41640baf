"""Where redeploy decisions are kept: the ledger database and an MLflow run per decision.

The ledger's `redeploys` table has one row per redeploy. A drift episode's id is unique there,
so `claim` lets one redeploy per episode through however many `mlops.drift.detected` events
arrive (Prefect triggers have no cool-down): the first claim inserts the row, later ones find
it and are skipped. A redeploy that failed with an error, or was skipped (no challenger yet),
releases its episode when it finishes (the row keeps the id in `details`), so a later event of
the same episode may try again; promoted, rejected and rolled-back decisions keep it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa
from mlops_pipeline.errors import BackendError
from mlops_pipeline.ledger import actor, engine, redeploys_table
from mlops_pipeline.redeploy.results import RedeployDecision
from mlops_pipeline.tracking import connect, ensure_experiment
from pydantic import BaseModel

log = logging.getLogger(__name__)

REDEPLOY_EXPERIMENT = "mlops-redeploy"
RUNNING = "running"
FAILED = "failed"
RELEASING = (FAILED, "skipped")


class Claim(BaseModel):
    """The ledger row a redeploy works under, or the earlier one that already holds its episode."""

    id: int | None
    granted: bool
    held_by: dict[str, Any] | None = None  # the earlier row: run, decision, started_at


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def claim(deployment: str, episode_id: str | None, run: str | None = None) -> Claim:
    """Start a redeploy of `deployment`; with an `episode_id`, only if no other redeploy has it.

    Args:
        deployment: the deployment's name.
        episode_id: the drift episode's id (`mlops.drift.detected` payload), or None for a
            redeploy that no episode triggered (never refused).
        run: what runs the redeploy (a Prefect flow run id), recorded for the skip message.

    Returns:
        Claim(granted=True, id) with a new `running` row; or Claim(granted=False, held_by)
        naming the redeploy that already holds the episode.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    values = {
        "deployment": deployment,
        "episode_id": episode_id,
        "started_at": _now(),
        "who": actor(),
        "run": run,
        "decision": RUNNING,
    }
    query = sa.select(redeploys_table).where(redeploys_table.c.episode_id == episode_id)
    try:
        for _ in range(2):  # a second pass reads the claim that beat ours to the insert
            try:
                with engine().begin() as conn:
                    if episode_id is not None:
                        held = conn.execute(query).first()
                        if held is not None:
                            return Claim(
                                id=None,
                                granted=False,
                                held_by={
                                    "run": held.run,
                                    "decision": held.decision,
                                    "started_at": held.started_at.isoformat(),
                                },
                            )
                    insert = sa.insert(redeploys_table).values(**values)
                    return Claim(id=conn.execute(insert).inserted_primary_key[0], granted=True)
            except sa.exc.IntegrityError:
                continue
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(f"Could not record the redeploy in the ledger: {exc}") from exc
    raise BackendError(f"Could not claim drift episode {episode_id} in the ledger.")


def finish(
    claim_id: int,
    decision: RedeployDecision | None,
    error: str | None = None,
    episode_id: str | None = None,
) -> None:
    """Close the redeploy's row with its decision, or as `failed` with `error`; a failed or
    skipped redeploy gives its drift episode (`episode_id`) back for a later event.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    values: dict[str, Any] = {"finished_at": _now()}
    if decision is None:
        values |= {
            "decision": FAILED,
            "reason": (error or "")[:2000],
            "details": {"error": error, "episode_id": episode_id},
        }
    else:
        values |= {
            "decision": decision.decision,
            "reason": decision.reason,
            "champion_version": decision.champion.version,
            "challenger_version": decision.challenger.version,
            "details": decision.model_dump(mode="json"),
        }
    if values["decision"] in RELEASING:
        values["episode_id"] = None
    try:
        with engine().begin() as conn:
            conn.execute(
                sa.update(redeploys_table).where(redeploys_table.c.id == claim_id).values(**values)
            )
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(f"Could not record the redeploy decision in the ledger: {exc}") from exc


def decisions(deployment: str | None = None) -> list[dict[str, Any]]:
    """Recorded redeploys, oldest first: id, deployment, episode_id, decision, reason, versions,
    who, run, started_at, finished_at (ISO text) and the decision's JSON in `details`."""
    query = sa.select(redeploys_table).order_by(redeploys_table.c.id)
    if deployment is not None:
        query = query.where(redeploys_table.c.deployment == deployment)
    with engine().connect() as conn:
        rows = conn.execute(query).all()
    out = []
    for row in rows:
        data = dict(row._mapping)
        for key in ("started_at", "finished_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        out.append(data)
    return out


def log_decision_run(deployment: str, decision: RedeployDecision) -> str:
    """Log the decision to an MLflow run in the `mlops-redeploy` experiment; returns its id.

    Tags: deployment, decision, reason, model name, champion and challenger versions, trigger;
    metrics: both scores (`score.champion`, `score.challenger`), the improvement and the bake
    figures; the whole decision as `decision.json`. Raises BackendError when MLflow refuses.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    connect()
    tags = {
        "mlops.deployment": deployment,
        "mlops.decision": decision.decision,
        "mlops.reason": decision.reason[:5000],
        "mlops.model_name": decision.champion.name or "",
        "mlops.champion_version": decision.champion.version or "",
        "mlops.challenger_version": decision.challenger.version or "",
    }
    if decision.trigger is not None:
        tags |= {
            f"mlops.trigger.{key}": str(value)
            for key, value in decision.trigger.model_dump().items()
            if value is not None
        }
    metrics = {f"score.{role}": value for role, value in decision.scores.items()}
    if decision.bake is not None:
        for side in ("baseline", "observed"):
            figures = getattr(decision.bake, side)
            for key in ("requests", "errors", "error_rate", "p95_latency_ms"):
                value = getattr(figures, key)
                if value is not None:
                    metrics[f"bake.{side}.{key}"] = float(value)
    try:
        # by id, not set_experiment: that would leave this experiment active for the process
        experiment_id = ensure_experiment(REDEPLOY_EXPERIMENT)
        run_name = f"redeploy-{deployment}-{_now():%Y%m%dT%H%M%S}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            if decision.metric:
                mlflow.log_params(
                    {"metric": decision.metric, "min_improvement": decision.min_improvement}
                )
            if metrics:
                mlflow.log_metrics(metrics)
            mlflow.log_dict(decision.model_dump(mode="json"), "decision.json")
    except MlflowException as exc:
        raise BackendError(f"Could not log the redeploy decision to MLflow: {exc.message}") from exc
    return run.info.run_id
