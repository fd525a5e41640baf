"""Score files with a registered model version in bounded memory: `score_batch`.

Each input file is streamed as record batches (`sources`), each batch checked against the
signature with the scoring service's rules (`checks`), scored through the same model wrapper
the service uses (`serving.model.Runtime`, so MLflow's slower schema enforcement is replaced by
the service's checks exactly as in `/invocations`), and written to the file's output part, its
rejects file and, when a capture URI is given, a capture file in the service's layout
(`serving.contract.capture_file_path`) so `mlops monitor` reads batch predictions like served
ones. Memory holds about two chunks at a time, whatever the input size.
"""

from __future__ import annotations

import datetime as dt
import logging

from mlops_pipeline.batch.files import BatchRun, FileScorer, progress_listener
from mlops_pipeline.batch.output import OutputFolder
from mlops_pipeline.batch.results import BatchResult, FileResult, Format
from mlops_pipeline.batch.sources import InputFile, list_input_files
from mlops_pipeline.errors import BackendError, InvalidInputError
from mlops_pipeline.serving.model import Runtime
from mlops_pipeline.serving.signature import signature_columns

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "check_options",
    "load_runtime",
    "progress_listener",
    "score_batch",
    "score_file",
]

DEFAULT_CHUNK_ROWS = 100_000


def load_runtime(model_uri: str, chunk_rows: int) -> Runtime:
    """Resolve MODEL_URI in the registry and load it as the scoring service does.

    Raises:
        InvalidInputError: not a `models:/` URI (exit 2).
        NotFoundError: no such model, version or alias (exit 3).
        BackendError: the model cannot be loaded (exit 5).
    """
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlops_pipeline.registry import resolve_model_uri
    from mlops_pipeline.tracking import connect

    ref = resolve_model_uri(model_uri)
    connect()
    try:
        pyfunc = mlflow.pyfunc.load_model(ref.uri)
    except (MlflowException, OSError, ImportError) as exc:
        raise BackendError(f"Model {ref.uri} could not be loaded: {exc}") from exc
    return Runtime(
        pyfunc=pyfunc,
        model_uri=ref.uri,
        name=ref.name,
        version=ref.version,
        columns=signature_columns(pyfunc.metadata.get_input_schema()),
        reject_extra=False,  # files carry ids and other columns; the model gets its own only
        max_rows=chunk_rows,
    )


def _skipped(
    input_uri: str, existing: tuple[str, int | None] | None, record: FileResult | None
) -> FileResult:
    """A file scored by an earlier run: its counts from the part's record, else (a part from
    before records) from a Parquet footer."""
    if record is not None:
        return record.model_copy(update={"input": input_uri, "skipped": True})
    uri, rows = existing or (None, None)
    return FileResult(
        input=input_uri,
        output=uri,
        rows_read=None,
        rows_scored=rows,
        rows_rejected=None,
        skipped=True,
    )


def check_options(chunk_rows: int, error_threshold: int) -> None:
    """Raise InvalidInputError (exit 2) for a chunk size below 1 or a negative threshold."""
    if chunk_rows < 1:
        raise InvalidInputError(
            f"--chunk-rows must be at least 1, got {chunk_rows}.", field="chunk_rows"
        )
    if error_threshold < 0:
        raise InvalidInputError(
            f"--error-threshold must be 0 or more, got {error_threshold}.",
            field="error_threshold",
        )


def score_file(run: BatchRun, file: InputFile, *, identity: str | None = None) -> FileResult:
    """Score FILE into RUN's output folder, or skip it when its part for this model version
    and this content exists (an earlier run scored it); RUN's totals are updated either way.

    The file's other parts (an earlier content, another model version or format) are removed
    once the new part is in place, so no input row is in the folder twice.

    Args:
        run: the run's model, output folder, options and totals.
        file: one input file.
        identity: FILE's `identity()` when the caller already has it.

    Returns:
        The file's result (`skipped` when an earlier part was kept), with `model_version` and
        `identity` set for a scored file.

    Raises:
        InvalidInputError: the file cannot be read, or lacks a column or has one of the wrong
            type (its own partial output is removed; RUN's totals keep no row of it).
        ValidationFailedError: more rejected rows than the run's threshold, or the model failed.
        BackendError: the output cannot be written.
    """
    out, version = run.out, run.runtime.version
    identity = file.identity() if identity is None else identity
    name = out.part_name(file.uri, file.stem, version, identity)
    stale = out.stale_parts(name, file.uri)
    existing = out.existing_part(name)
    if existing is not None:
        out.replaced(name, stale)  # a crash may have left the old part beside it
        record = out.read_record(name)
        if record is None:  # interrupted before its record
            record = out.rebuild_record(name, file.uri, version, identity)
        skipped = _skipped(file.uri, existing, record)
        run.result.files.append(skipped)
        run.result.files_skipped += 1
        return skipped
    scorer = FileScorer(run, file, name)
    try:
        scored = scorer.score()
    except InvalidInputError:
        # the rows read before the problem showed are not the run's: its part was removed
        run.result.rows_read -= scorer.result.rows_read or 0
        run.result.rows_scored -= scorer.result.rows_scored or 0
        run.result.rows_rejected -= scorer.result.rows_rejected or 0
        raise
    scored.model_version, scored.identity = version, identity
    out.record(name, scored)
    out.replaced(name, stale)
    run.result.files.append(scored)
    run.result.files_scored += 1
    return scored


def score_batch(
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
    """Score every CSV/Parquet file of INPUT with MODEL_URI into the folder OUTPUT.

    A file whose part for this model version and content exists is skipped, so a run that
    stopped resumes where it was; a file whose content changed is scored again and its old
    part removed.

    Args:
        model_uri: `models:/NAME/VERSION`, `models:/NAME@ALIAS` or `models:/NAME/latest`; the
            version is pinned when the run starts.
        input: a file, folder or glob (local path or fsspec URI).
        output: the output folder (created if missing; see `batch.output` for its layout).
        format: `parquet` or `csv`, for parts and rejects files.
        chunk_rows: rows per record batch (memory grows with it, not with the input).
        id_columns: input columns to keep in the output (default: all input columns).
        error_threshold: most rejected rows the run tolerates; one more fails it.
        capture_uri: also write inputs and predictions in the capture layout there.

    Returns:
        The run's `BatchResult`, also written as the `_SUCCESS` manifest.

    Raises:
        InvalidInputError: bad options, an unreadable or empty file, a missing column or one of
            the wrong type, naming the file and column (exit 2).
        NotFoundError: the input or the model does not exist (exit 3).
        ValidationFailedError: more rejected rows than `error_threshold`, or the model failed
            on a chunk (exit 8).
        BackendError: the model cannot be loaded or the output cannot be written (exit 5).
    """
    check_options(chunk_rows, error_threshold)
    files = list_input_files(input, exclude=output)
    out = OutputFolder(output, format)
    runtime = load_runtime(model_uri, chunk_rows)
    result = BatchResult(
        model_uri=runtime.model_uri,
        model_name=runtime.name,
        model_version=runtime.version,
        input=input,
        output=output,
        format=format,
        started_at=dt.datetime.now(dt.UTC),
    )
    run = BatchRun(
        runtime,
        out,
        result,
        chunk_rows=chunk_rows,
        id_columns=list(id_columns or []),
        error_threshold=error_threshold,
        capture_uri=capture_uri,
    )
    out.start()
    logger.info("Scoring %d file(s) of %s with %s", len(files), input, runtime.model_uri)
    for file in files:
        score_file(run, file)
    result.finished_at = dt.datetime.now(dt.UTC)
    out.finish(result)
    logger.info(
        "Scored %d rows (%d rejected) of %d file(s) into %s",
        result.rows_scored,
        result.rows_rejected,
        result.files_scored,
        output,
    )
    return result
