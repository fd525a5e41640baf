"""One scheduled run of a `batch:` deployment over its landing folder: `score_landing`.

The landing folder is scored file by file, so one bad file cannot hold up the others or the BI
reports that wait for `_SUCCESS`:

* a file the deployment's watermark lists with the same content (`InputFile.identity`) is
  skipped; a file whose content changed since is scored again with the version the deployment
  serves now, and its earlier part removed (`scoring.score_file`), so no input row is in the
  folder twice;
* each other file is scored on its own (`scoring.score_file`, so `error_threshold` counts per
  file and a failure stops only that file) with the model loaded once for the whole run;
* a file that cannot be scored (unreadable, wrong or missing columns, no rows, more rejected
  rows than `error_threshold`, the model failing on it) is recorded as failed, with its reason
  and its identity, in `<output>/_FAILED` (JSON; BI tools skip `_` names); later runs skip it
  until it changes, then score it again;
* the run ends by writing `_SUCCESS` (what was scored; failed files listed with `error`). The
  flow then fails while any landing file is failed (`flows.batch`), so the run state,
  `mlops status` and Prefect's notifications show it until the file is fixed or removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from mlops_pipeline.batch import watermark
from mlops_pipeline.batch.files import BatchRun
from mlops_pipeline.batch.output import OutputFolder
from mlops_pipeline.batch.results import BatchResult, FileResult, Format
from mlops_pipeline.batch.scoring import (
    DEFAULT_CHUNK_ROWS,
    check_options,
    load_runtime,
    score_file,
)
from mlops_pipeline.batch.sources import InputFile, list_input_files
from mlops_pipeline.errors import (
    BackendError,
    InvalidInputError,
    NotFoundError,
    ValidationFailedError,
)
from mlops_pipeline.registry import resolve_model_uri
from mlops_pipeline.serving.model import Runtime

logger = logging.getLogger(__name__)

__all__ = ["FAILED", "score_landing"]

FAILED = "_FAILED"


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


class _Landing:
    """The state of one landing run: the model (loaded on first need), output and options."""

    def __init__(self, model_uri: str, out: OutputFolder, **options: Any):
        self.model_uri = model_uri
        self.out = out
        self.options = options
        self._runtime: Runtime | None = None

    def runtime(self) -> Runtime:
        # loaded once per run, and not at all by a run with nothing new to score
        if self._runtime is None:
            self._runtime = load_runtime(self.model_uri, self.options["chunk_rows"])
        return self._runtime

    def score(self, file: InputFile, identity: str, result: BatchResult) -> FileResult:
        """Score FILE on its own (its own threshold); raises as `score_file`."""
        runtime = self.runtime()
        totals = ("rows_read", "rows_scored", "rows_rejected")
        alone = result.model_copy(update={"files": [], **dict.fromkeys(totals, 0)})
        run = BatchRun(runtime, self.out, alone, **self.options)
        scored = score_file(run, file, identity=identity)
        scored = scored.model_copy(update={"model_version": runtime.version, "identity": identity})
        for total in totals:
            setattr(result, total, getattr(result, total) + getattr(alone, total))
        return scored


def score_landing(
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
            `scoring.score_batch` takes them; an empty or missing landing folder scores nothing.
        error_threshold: most rejected rows one file may have; one more fails that file.

    Returns:
        The run's result, also in `_SUCCESS`: scored, skipped and failed files
        (`files_failed` counts new and earlier failures; their `error` says why).

    Raises:
        InvalidInputError: bad options (exit 2).
        NotFoundError, BackendError: the model cannot be found or loaded, or the output folder
            or the ledger cannot be written (no `_SUCCESS` then).
    """
    check_options(chunk_rows, error_threshold)
    try:
        files = list_input_files(input, exclude=output)
    except NotFoundError:  # an empty landing folder: nothing to do yet
        files = []
    model = resolve_model_uri(model_uri)  # pinned once: every file of the run gets one version
    out = OutputFolder(output, format)
    landing = _Landing(
        model.uri,
        out,
        chunk_rows=chunk_rows,
        id_columns=list(id_columns or []),
        error_threshold=error_threshold,
        capture_uri=capture_uri,
    )
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
    out.start()
    logger.info("Landing %s: %d file(s), %d scored before", input, len(files), len(done))
    for file in files:
        identity = file.identity()
        earlier = done.get(file.uri)
        # rows recorded before identities were kept (None) vouch for the path alone
        if earlier is not None and earlier.identity in (None, identity):
            result.files.append(FileResult(input=file.uri, output=earlier.output, skipped=True,
                                           model_version=earlier.model_version, rows_read=None,
                                           rows_scored=None, rows_rejected=None))  # fmt: skip
            result.files_skipped += 1
            continue
        before = failed_before.get(file.uri)
        if before is not None and identity and before.get("identity") == identity:
            failed[file.uri] = before  # unchanged since it failed: not tried again
            result.files.append(FileResult(input=file.uri, error=before.get("error"), skipped=True))
            result.files_failed += 1
            continue
        try:
            scored = landing.score(file, identity, result)
        except (InvalidInputError, ValidationFailedError) as exc:
            reason = " ".join(exc.message.split())
            failed[file.uri] = {
                "error": reason,
                "identity": identity,
                "model_version": model.version,
                "failed_at": dt.datetime.now(dt.UTC).isoformat(),
            }
            result.files.append(FileResult(input=file.uri, error=reason))
            result.files_failed += 1
            logger.warning("Landing file %s failed; skipped until it changes: %s",
                           file.uri, reason)  # fmt: skip
            continue
        watermark.record_scored_file(deployment, scored)
        result.files.append(scored)
        if scored.skipped:  # its part for this version and content exists (an interrupted run)
            result.files_skipped += 1
        else:
            result.files_scored += 1
    result.finished_at = dt.datetime.now(dt.UTC)
    _write_failed(out, failed)
    out.finish(result)
    logger.info(
        "Scored %d rows (%d rejected) of %d file(s) into %s; %d file(s) failed",
        result.rows_scored,
        result.rows_rejected,
        result.files_scored,
        output,
        result.files_failed,
    )
    return result
