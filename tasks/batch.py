"""Batch scoring steps over `mlops_pipeline.batch`.

Scoring reads and writes files and the ledger, so nothing caches (NO_CACHE). No retries: a
failed run leaves no `_SUCCESS`, and the next run (or the next schedule) resumes by skipping
the files already scored.

A `batch:` deployment's scheduled run (`score_landing_files`) scores its landing folder file by
file, so one bad file cannot hold up the others or the BI reports that wait for `_SUCCESS`:

* a file the deployment's watermark lists is skipped;
* each other file is scored on its own (`batch.score_batch` with that file as input, so
  `error_threshold` counts per file and a failure stops only that file);
* a file that cannot be scored (unreadable, wrong or missing columns, no rows, more rejected
  rows than `error_threshold`, the model failing on it) is recorded as failed, with its reason
  and a fingerprint of its content, in `<output>/_FAILED` (JSON; BI tools skip `_` names);
  later runs skip it until the file changes (size or time), then score it again;
* the run ends by writing `_SUCCESS` (what was scored; failed files listed with `error`); the
  flow then fails while any landing file is failed (`flows.batch`), so the run state,
  `mlops status` and Prefect's notifications show it until the file is fixed or removed.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from typing import Any

from mlops_pipeline.batch import BatchResult, FileResult, watermark
from mlops_pipeline.batch import score_batch as _score_batch
from mlops_pipeline.batch.output import OutputFolder
from mlops_pipeline.batch.results import Format
from mlops_pipeline.batch.scoring import DEFAULT_CHUNK_ROWS
from mlops_pipeline.batch.sources import InputFile, list_input_files
from mlops_pipeline.errors import (
    BackendError,
    InvalidInputError,
    NotFoundError,
    ValidationFailedError,
)
from mlops_pipeline.registry import resolve_model_uri
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE

logger = logging.getLogger(__name__)

FAILED = "_FAILED"

score_files = step(_score_batch, name="score-files", cache_policy=NO_CACHE)


def _fingerprint(file: InputFile) -> str:
    """Changes when the file's content does (fsspec's key: size and time, or the etag)."""
    try:
        return str(file.fs.ukey(file.path))
    except (OSError, NotImplementedError, ValueError):
        return ""


def _read_failed(out: OutputFolder) -> dict[str, dict[str, Any]]:
    path = f"{out.root}/{FAILED}"
    try:
        if not out.fs.exists(path):
            return {}
        with out.fs.open(path, "rb") as handle:
            found = json.loads(handle.read())
    except (OSError, ValueError) as exc:  # a damaged record only costs one more try per file
        logger.warning("Ignoring %s/%s: %s", out.uri, FAILED, exc)
        return {}
    return found if isinstance(found, dict) else {}


def _write_failed(out: OutputFolder, failed: dict[str, dict[str, Any]]) -> None:
    path = f"{out.root}/{FAILED}"
    try:
        if not failed:
            if out.fs.exists(path):
                out.fs.rm(path)
            return
        out.fs.makedirs(out.root, exist_ok=True)
        tmp = f"{out.root}/.{FAILED}.tmp"
        with out.fs.open(tmp, "wb") as handle:
            handle.write(json.dumps(failed, indent=2, sort_keys=True).encode())
        out.fs.mv(tmp, path)
    except OSError as exc:
        raise BackendError(
            f"The failed-files record {out.uri}/{FAILED} cannot be written: {exc}.",
            hint="Check the output folder's permissions.",
        ) from exc


def score_landing_files(
    deployment: str,
    model_uri: str,
    input: str,
    output: str,
    *,
    format: Format = "parquet",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    id_columns: list[str] | None = None,
    error_threshold: int = 0,
    capture_uri: str | None = None,
) -> BatchResult:
    """One scheduled run of batch deployment DEPLOYMENT, file by file (see the module doc).

    Args:
        deployment: the batch deployment's name (its watermark's key).
        model_uri, input, output, format, chunk_rows, id_columns, capture_uri: as
            `batch.score_batch` takes them.
        error_threshold: most rejected rows one file may have; one more fails that file.

    Returns:
        The run's result, also in `_SUCCESS`: scored, skipped and failed files
        (`files_failed` counts new and earlier failures; their `error` says why).

    Raises:
        NotFoundError, BackendError: the model cannot be found or loaded, or the output folder
            or the ledger cannot be written (no `_SUCCESS` then).
    """
    try:
        files = list_input_files(input)
    except NotFoundError:  # an empty landing folder: nothing to do yet
        files = []
    model = resolve_model_uri(model_uri)  # pinned once: every file of the run gets one version
    out = OutputFolder(output, format)
    done = watermark.scored_files(deployment)
    failed_before = _read_failed(out)
    result = BatchResult(
        model_uri=model.uri,
        model_name=model.name,
        model_version=model.version,
        input=input,
        output=output,
        format=format,
        started_at=dt.datetime.now(dt.UTC),
    )
    failed: dict[str, dict[str, Any]] = {}
    record = functools.partial(watermark.record_scored_file, deployment)
    logger.info("Landing %s: %d file(s), %d scored before", input, len(files), len(done))
    for file in files:
        if file.uri in done:
            result.files.append(FileResult(input=file.uri, skipped=True, rows_read=None,
                                           rows_scored=None, rows_rejected=None))  # fmt: skip
            result.files_skipped += 1
            continue
        fingerprint = _fingerprint(file)
        before = failed_before.get(file.uri)
        if before is not None and fingerprint and before.get("fingerprint") == fingerprint:
            failed[file.uri] = before  # unchanged since it failed: not tried again
            result.files.append(FileResult(input=file.uri, error=before.get("error"), skipped=True))
            result.files_failed += 1
            continue
        try:
            # one file per call: its own threshold, and its failure stops nothing else
            one = _score_batch(
                model.uri,
                file.uri,
                output,
                format=format,
                chunk_rows=chunk_rows,
                id_columns=id_columns,
                error_threshold=error_threshold,
                capture_uri=capture_uri,
                on_file_scored=record,
            )
        except (InvalidInputError, ValidationFailedError) as exc:
            reason = " ".join(exc.message.split())
            failed[file.uri] = {
                "error": reason,
                "fingerprint": fingerprint,
                "model_version": model.version,
                "failed_at": dt.datetime.now(dt.UTC).isoformat(),
            }
            result.files.append(FileResult(input=file.uri, error=reason))
            result.files_failed += 1
            logger.warning("Landing file %s failed; skipped until it changes: %s",
                           file.uri, reason)  # fmt: skip
            continue
        result.rows_read += one.rows_read
        result.rows_scored += one.rows_scored
        result.rows_rejected += one.rows_rejected
        result.files_scored += one.files_scored
        result.files_skipped += one.files_skipped
        result.files.extend(one.files)
    result.finished_at = dt.datetime.now(dt.UTC)
    _write_failed(out, failed)
    out.start()
    out.finish(result)  # the whole run, failed files included, whichever file came last
    logger.info(
        "Scored %d rows (%d rejected) of %d file(s) into %s; %d file(s) failed",
        result.rows_scored,
        result.rows_rejected,
        result.files_scored,
        output,
        result.files_failed,
    )
    return result


score_landing = step(score_landing_files, name="score-landing-files", cache_policy=NO_CACHE)
