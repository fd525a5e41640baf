"""The per-file watermark of `batch:` deployments, in the ledger database.

A scheduled batch run scores only the landing folder's files its deployment has not scored
yet, or whose content changed since (`InputFile.identity`), with whichever model version it
serves at the time: after `mlops update` later runs use the new version for new and changed
files, and unchanged files keep their predictions. One row per (deployment, input file) in
`ledger.batch_files_table`, written right after the file's output part is renamed into place
(insert, or replace the earlier content's row), so recording a file twice is harmless. Runs of
one deployment do not overlap: its Prefect deployment has a concurrency limit of 1.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from mlops_pipeline.batch.results import FileResult
from mlops_pipeline.errors import BackendError
from mlops_pipeline.ledger import batch_files_table, engine
from mlops_pipeline.state import _insert_if_missing
from pydantic import BaseModel

_HINT = "Check MLOPS_LEDGER_URI and that the database is reachable."


class ScoredFile(BaseModel):
    """What a deployment's watermark holds for one input file."""

    input: str
    model_version: str
    output: str | None = None
    identity: str | None = None  # None: recorded before identities were kept (path only)


def scored_files(deployment: str) -> dict[str, ScoredFile]:
    """DEPLOYMENT's scored input files, by URI. Raises BackendError."""
    table = batch_files_table
    columns = (table.c.input, table.c.model_version, table.c.output, table.c.identity)
    try:
        with engine().connect() as conn:
            query = sa.select(*columns).where(table.c.deployment == deployment)
            rows = conn.execute(query).all()
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The batch watermark of '{deployment}' could not be read from the ledger database: "
            f"{exc.__class__.__name__}.",
            hint=_HINT,
        ) from exc
    return {row.input: ScoredFile.model_validate(row._asdict()) for row in rows}


def record_scored_file(deployment: str, scored: FileResult) -> None:
    """Set DEPLOYMENT's watermark entry for one scored input file (insert or replace).

    Args:
        deployment: the batch deployment's name.
        scored: the file's result, with `model_version`, `identity` and `output` set.

    Raises:
        BackendError: the ledger database cannot be written.
    """
    table = batch_files_table
    values = {
        "model_version": scored.model_version,
        "output": scored.output,
        "rows_scored": scored.rows_scored,
        "rows_rejected": scored.rows_rejected,
        "scored_at": dt.datetime.now(dt.UTC),
        "identity": scored.identity,
    }
    key = {"deployment": deployment, "input": scored.input}
    try:
        with engine().begin() as conn:
            _insert_if_missing(conn, table, key | values)
            conn.execute(
                sa.update(table)
                .where(table.c.deployment == deployment, table.c.input == scored.input)
                .values(**values)
            )
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The batch watermark of '{deployment}' could not be written to the ledger database: "
            f"{exc.__class__.__name__}.",
            hint=_HINT,
        ) from exc


def forget(deployment: str) -> int:
    """Remove DEPLOYMENT's watermark (when it is deleted); returns how many files it held."""
    table = batch_files_table
    try:
        with engine().begin() as conn:
            return conn.execute(sa.delete(table).where(table.c.deployment == deployment)).rowcount
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The batch watermark of '{deployment}' could not be removed from the ledger "
            f"database: {exc.__class__.__name__}.",
            hint=_HINT,
        ) from exc
