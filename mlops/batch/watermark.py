"""The per-file watermark of `batch:` deployments, in the ledger database.

A scheduled batch run scores only the landing folder's files its deployment has not scored
yet, with whichever model version it serves at the time: after `mlops update` later runs use
the new version for new files, and files already scored keep their predictions. One row per
(deployment, input file) in `ledger.batch_files_table`; a row is written right after the file's
output part is renamed into place, inserted if missing (`state._insert_if_missing`, the same
dialect-aware upsert the monitor state uses), so recording a file twice is harmless. Runs of one
deployment do not overlap: its Prefect deployment has a concurrency limit of 1.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import sqlalchemy as sa
from mlops_pipeline.batch.results import BatchResult, FileResult
from mlops_pipeline.batch.scoring import score_batch
from mlops_pipeline.errors import BackendError
from mlops_pipeline.ledger import batch_files_table, engine
from mlops_pipeline.state import _insert_if_missing

_HINT = "Check MLOPS_LEDGER_URI and that the database is reachable."


def scored_files(deployment: str) -> set[str]:
    """Input file URIs DEPLOYMENT has scored. Raises BackendError."""
    table = batch_files_table
    try:
        with engine().connect() as conn:
            query = sa.select(table.c.input).where(table.c.deployment == deployment)
            return set(conn.execute(query).scalars())
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The batch watermark of '{deployment}' could not be read from the ledger database: "
            f"{exc.__class__.__name__}.",
            hint=_HINT,
        ) from exc


def record_scored_file(deployment: str, scored: FileResult, model_version: str) -> None:
    """Add one scored input file to DEPLOYMENT's watermark (idempotent). Raises BackendError."""
    values = {
        "deployment": deployment,
        "input": scored.input,
        "model_version": model_version,
        "output": scored.output,
        "rows_scored": scored.rows_scored,
        "rows_rejected": scored.rows_rejected,
        "scored_at": dt.datetime.now(dt.UTC),
    }
    try:
        with engine().begin() as conn:
            _insert_if_missing(conn, batch_files_table, values)
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


def score_new_files(
    deployment: str, model_uri: str, input: str, output: str, **options: Any
) -> BatchResult:
    """One run of batch deployment DEPLOYMENT: score INPUT's files it has not scored yet.

    Args:
        deployment: the batch deployment's name (its watermark's key).
        model_uri, input, output, options: as `score_batch` takes them (`format`, `chunk_rows`,
            `id_columns`, `error_threshold`, `capture_uri`).

    Returns:
        The run's result; files in the watermark are listed as skipped. An empty landing folder
        gives an empty result, not an error.

    Raises:
        As `score_batch`; a bad file does not stop the others (they are scored and recorded),
        the run then fails naming it (InvalidInputError) and it is tried again next run.
        BackendError when the ledger database fails.
    """
    done = scored_files(deployment)
    return score_batch(
        model_uri,
        input,
        output,
        already_scored=done.__contains__,
        on_file_scored=functools.partial(record_scored_file, deployment),
        missing_ok=True,
        keep_going=True,
        **options,
    )
