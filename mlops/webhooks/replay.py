"""The replay store: each delivery id is accepted once, durably, in the ledger database.

A delivery is *claimed* by inserting its (source, delivery id) row if absent, in one statement
(`INSERT ... ON CONFLICT DO NOTHING` on sqlite and PostgreSQL, as `mlops_pipeline.state` does):
of two requests with the same id, however close together and on however many receivers sharing
the database, exactly one inserts the row. The other, and every later one (also after a
restart), finds the id taken. A claim whose runs could not be started is released again, so the
sender's retry (same delivery id) gets another chance; Prefect's idempotency key (the delivery
id) keeps that retry from starting a run twice when the first attempt got further than it said.

Records older than the retention (`MLOPS_WEBHOOK_REPLAY_RETENTION_DAYS`) are pruned: by then no
sender can replay them. GitHub redelivers only deliveries of the past 3 days, and an MLflow
delivery is refused as stale once its signed timestamp is past the tolerance (minutes).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import sqlalchemy as sa
from mlops_pipeline.errors import BackendError
from mlops_pipeline.ledger import engine, webhook_deliveries_table
from pydantic import BaseModel

Source = Literal["github", "mlflow"]
Status = Literal["claimed", "accepted", "ignored"]

_table = webhook_deliveries_table


class DeliveryRecord(BaseModel):
    """A delivery already seen: when, which event, and the flow runs it started."""

    source: str
    delivery_id: str
    event: str
    received_at: dt.datetime
    status: str
    flow_runs: list[dict[str, Any]] | None = None


def _backend_error(action: str, exc: Exception) -> BackendError:
    return BackendError(
        f"The webhook replay store could not {action} in the ledger database: "
        f"{exc.__class__.__name__}.",
        hint="Check MLOPS_LEDGER_URI and that the database is reachable.",
    )


def _insert_if_absent(conn: sa.Connection, values: dict[str, Any]) -> bool:
    if conn.dialect.name in {"postgresql", "sqlite"}:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        result = conn.execute(insert(_table).values(**values).on_conflict_do_nothing())
        return result.rowcount == 1
    try:  # other databases: a savepoint keeps the transaction usable after a duplicate key
        with conn.begin_nested():
            conn.execute(sa.insert(_table).values(**values))
        return True
    except sa.exc.IntegrityError:
        return False


def claim(
    source: Source, delivery_id: str, event: str, status: Status = "claimed"
) -> DeliveryRecord | None:
    """Claim DELIVERY_ID of SOURCE: None when this call claimed it, else the earlier record.

    STATUS `ignored` records a delivery that starts nothing in the same single write.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    values = {
        "source": source,
        "delivery_id": delivery_id,
        "event": event,
        "received_at": dt.datetime.now(dt.UTC),
        "status": status,
    }
    try:
        with engine().begin() as conn:
            if _insert_if_absent(conn, values):
                return None
            row = conn.execute(
                sa.select(_table).where(
                    _table.c.source == source, _table.c.delivery_id == delivery_id
                )
            ).one()
    except sa.exc.SQLAlchemyError as exc:
        raise _backend_error("claim a delivery", exc) from exc
    return DeliveryRecord.model_validate(dict(row._mapping))


def finish(
    source: Source, delivery_id: str, status: Status, flow_runs: list[dict[str, Any]]
) -> None:
    """Record what a claimed delivery did: `accepted` with its flow runs, or `ignored`.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    try:
        with engine().begin() as conn:
            conn.execute(
                sa.update(_table)
                .where(_table.c.source == source, _table.c.delivery_id == delivery_id)
                .values(status=status, flow_runs=flow_runs)
            )
    except sa.exc.SQLAlchemyError as exc:
        raise _backend_error("record a delivery", exc) from exc


def release(source: Source, delivery_id: str) -> None:
    """Forget a claim whose runs could not be started, so the sender's retry is accepted.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    try:
        with engine().begin() as conn:
            conn.execute(
                sa.delete(_table).where(
                    _table.c.source == source,
                    _table.c.delivery_id == delivery_id,
                    _table.c.status == "claimed",
                )
            )
    except sa.exc.SQLAlchemyError as exc:
        raise _backend_error("release a delivery", exc) from exc


def prune(older_than: dt.datetime) -> int:
    """Delete the records of deliveries received before OLDER_THAN (aware datetime).

    Returns:
        The number of records deleted.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    try:
        with engine().begin() as conn:
            result = conn.execute(sa.delete(_table).where(_table.c.received_at < older_than))
    except sa.exc.SQLAlchemyError as exc:
        raise _backend_error("prune old deliveries", exc) from exc
    return result.rowcount
