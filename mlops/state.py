"""Monitor state in the ledger database: each deployment's watermark and drift episode.

Monitors on several machines (Prefect workers) must agree on which capture files were processed
and whether a drift episode already signalled, so both live beside the deployments in the
ledger database (`mlops_pipeline.ledger`: sqlite in MLOPS_HOME by default, or PostgreSQL).

Concurrency rule: every change is a read-modify-write inside one transaction that first takes
the deployment's row lock: the row is inserted if missing (`INSERT ... ON CONFLICT DO NOTHING`)
and read back with `SELECT ... FOR UPDATE`. On PostgreSQL a second monitor of the same
deployment waits at that SELECT until the first commits, then reads what it wrote; on sqlite
the INSERT takes the database's write lock, which serialises writers the same way (readers go
on). So two monitors committing at once lose neither's files, and one drift episode emits once.

Claims: a monitor first claims the files it will read (`claim_files`, under the same row lock),
and commits or releases that claim when done; a second monitor of the deployment sees the
claimed files as taken, so two monitors running at once never count one capture record twice.
A claim lapses after its lease (a monitor that died without releasing it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from mlops_pipeline.errors import BackendError
from mlops_pipeline.ledger import (
    drift_episodes_table,
    engine,
    file_claims_table,
    processed_files_table,
    watermarks_table,
)

R = TypeVar("R")
_CHUNK = 500  # rows per IN (...) / VALUES list, well under every database's parameter limit

WatermarkChange = Callable[[str | None, set[str]], tuple[str | None, set[str]]]
ClaimPick = Callable[[str | None, set[str]], list[str]]
EpisodeDecision = Callable[[dict[str, Any]], tuple[R, dict[str, Any] | None]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _insert_if_missing(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # other databases: a savepoint keeps the transaction usable after a duplicate key
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(table).values(**values))
        except sa.exc.IntegrityError:
            pass
        return
    conn.execute(insert(table).values(**values).on_conflict_do_nothing())


@contextmanager
def _locked(table: sa.Table, deployment: str) -> Iterator[tuple[sa.Connection, sa.Row]]:
    """A transaction holding `deployment`'s row of `table` locked (created if missing)."""
    try:
        with engine().begin() as conn:
            _insert_if_missing(conn, table, {"deployment": deployment, "updated_at": _now()})
            row = conn.execute(
                sa.select(table).where(table.c.deployment == deployment).with_for_update()
            ).one()
            yield conn, row
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The monitor state of '{deployment}' could not be updated in the ledger "
            f"database: {exc.__class__.__name__}.",
            hint="Check MLOPS_LEDGER_URI and that the database is reachable.",
        ) from exc


def _chunks(items: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == _CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _processed(conn: sa.Connection, deployment: str) -> set[str]:
    query = sa.select(processed_files_table.c.relpath).where(
        processed_files_table.c.deployment == deployment
    )
    return set(conn.execute(query).scalars())


def read_watermark(deployment: str) -> tuple[str | None, set[str]]:
    """The floor date (YYYY-MM-DD or None) and processed capture paths of `deployment`'s
    monitor; (None, empty set) before its first commit. Raises BackendError."""
    try:
        with engine().connect() as conn:
            floor = conn.execute(
                sa.select(watermarks_table.c.floor_date).where(
                    watermarks_table.c.deployment == deployment
                )
            ).scalar()
            return floor, _processed(conn, deployment)
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The watermark of '{deployment}' could not be read from the ledger database: "
            f"{exc.__class__.__name__}.",
            hint="Check MLOPS_LEDGER_URI and that the database is reachable.",
        ) from exc


def claim_files(deployment: str, pick: ClaimPick, claim_id: str, lease: dt.timedelta) -> list[str]:
    """Claim the capture files `pick(floor_date, taken)` returns for `deployment`'s monitor, as
    `claim_id`; `taken` holds the processed paths and those under another live claim.

    Runs under the watermark row lock, so two monitors claiming at once get disjoint files.
    Claims older than `lease` are dropped first. Returns the claimed paths.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    claims = file_claims_table.c
    now = _now()
    with _locked(watermarks_table, deployment) as (conn, row):
        conn.execute(
            sa.delete(file_claims_table).where(
                claims.deployment == deployment, claims.claimed_at < now - lease
            )
        )
        claimed = conn.execute(
            sa.select(claims.relpath).where(claims.deployment == deployment)
        ).scalars()
        picked = pick(row.floor_date, _processed(conn, deployment) | set(claimed))
        for batch in _chunks(picked):
            conn.execute(
                sa.insert(file_claims_table),
                [
                    {
                        "deployment": deployment,
                        "relpath": p,
                        "claim_id": claim_id,
                        "claimed_at": now,
                    }
                    for p in batch
                ],
            )
    return picked


def release_claim(deployment: str, claim_id: str) -> None:
    """Drop the files claimed as `claim_id` (a monitor that failed): another run may take them.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    with _locked(watermarks_table, deployment) as (conn, _row):
        _drop_claim(conn, deployment, claim_id)


def _drop_claim(conn: sa.Connection, deployment: str, claim_id: str) -> None:
    claims = file_claims_table.c
    conn.execute(
        sa.delete(file_claims_table).where(
            claims.deployment == deployment, claims.claim_id == claim_id
        )
    )


def update_watermark(
    deployment: str, change: WatermarkChange, claim_id: str | None = None
) -> tuple[str | None, set[str]]:
    """Replace `deployment`'s watermark by `change(floor_date, processed)` under its row lock
    (see the module docstring), writing only the paths that differ; returns the new one.

    `change` gets the stored floor date and processed paths as they are once the lock is held,
    so a change that adds paths never loses those another monitor added meanwhile. The files
    claimed as `claim_id` (see `claim_files`) are released in the same transaction.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    with _locked(watermarks_table, deployment) as (conn, row):
        before = _processed(conn, deployment)
        floor, after = change(row.floor_date, set(before))
        files = processed_files_table.c
        for batch in _chunks(sorted(before - after)):
            conn.execute(
                sa.delete(processed_files_table).where(
                    files.deployment == deployment, files.relpath.in_(batch)
                )
            )
        for batch in _chunks(sorted(after - before)):
            conn.execute(
                sa.insert(processed_files_table),
                [{"deployment": deployment, "relpath": relpath} for relpath in batch],
            )
        conn.execute(
            sa.update(watermarks_table)
            .where(watermarks_table.c.deployment == deployment)
            .values(floor_date=floor, updated_at=_now())
        )
        if claim_id is not None:
            _drop_claim(conn, deployment, claim_id)
    return floor, after


def _episode_state(row: sa.Row) -> dict[str, Any]:
    closed = row.closed_at
    if closed is not None and closed.tzinfo is None:
        closed = closed.replace(tzinfo=dt.UTC)
    return {"episode": row.episode, "closed_at": closed.isoformat() if closed else None}


def read_drift_episode(deployment: str) -> dict[str, Any]:
    """`{"episode": {version, started_at, last_event_at, event_id} or None, "closed_at": ISO
    time or None}` of `deployment`'s monitor. Raises BackendError."""
    table = drift_episodes_table
    try:
        with engine().connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.deployment == deployment)).first()
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The drift episode of '{deployment}' could not be read from the ledger database: "
            f"{exc.__class__.__name__}.",
            hint="Check MLOPS_LEDGER_URI and that the database is reachable.",
        ) from exc
    return _episode_state(row) if row else {"episode": None, "closed_at": None}


def update_drift_episode(deployment: str, decide: EpisodeDecision[R]) -> R:
    """Run `decide(state)` under `deployment`'s row lock and store the state it returns.

    `state` is as `read_drift_episode` gives it; `decide` returns (result, new state or None to
    keep it). Whatever `decide` does (e.g. emit an event) happens while the lock is held, so two
    monitors cannot both open the same episode; if it raises, nothing is stored.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    with _locked(drift_episodes_table, deployment) as (conn, row):
        result, state = decide(_episode_state(row))
        if state is not None:
            closed = state.get("closed_at")
            conn.execute(
                sa.update(drift_episodes_table)
                .where(drift_episodes_table.c.deployment == deployment)
                .values(
                    episode=state.get("episode"),
                    closed_at=dt.datetime.fromisoformat(closed) if closed else None,
                    updated_at=_now(),
                )
            )
    return result
