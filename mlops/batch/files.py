"""One run's state (`BatchRun`) and how one input file is scored into its outputs (`FileScorer`).

A file is read chunk by chunk; each chunk is checked (`checks`), its good rows scored through the
scoring service's model wrapper and written to the file's part (input or id columns, the
prediction columns, model name and version, `scored_at`), its bad rows to the rejects file with
their reasons, and, with a capture URI, inputs and predictions to a capture file in the
service's layout. The part, rejects and capture files appear only when the file is done.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from mlops_pipeline.batch.checks import CheckedChunk, check_chunk, check_file_columns
from mlops_pipeline.batch.output import OutputFolder, TableWriter, capture_writer
from mlops_pipeline.batch.results import BatchResult, FileResult
from mlops_pipeline.batch.sources import FileReader, InputFile
from mlops_pipeline.errors import InvalidInputError, ValidationFailedError
from mlops_pipeline.serving.contract import (
    LATENCY_MS,
    REQUEST_ID,
    ROW,
    STATUS,
    TS,
    capture_file_path,
)
from mlops_pipeline.serving.errors import ServingError
from mlops_pipeline.serving.model import Parsed, Runtime, prediction_columns
from threadpoolctl import threadpool_limits

MODEL_NAME, MODEL_VERSION, SCORED_AT = "model_name", "model_version", "scored_at"
REJECT_COLUMNS = ("_source_file", "_row", "_column", "_code", "_reason")
_TS = pa.timestamp("us", tz="UTC")

Progress = Callable[[int], None]
_listeners: list[Progress] = []


@contextmanager
def progress_listener(callback: Progress) -> Iterator[None]:
    """Within the block, every `score_batch` in this process calls CALLBACK(rows) after each
    chunk (rows read, scored or rejected); the CLI draws its progress bar from it."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


def _report(rows: int) -> None:
    for callback in list(_listeners):
        callback(rows)


def _constant(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    return pa.nulls(n, typ).fill_null(pa.scalar(value, typ))


@functools.lru_cache(maxsize=16)
def _repeated(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    """A constant column of one run (model name, version, time), built once per chunk size:
    Arrow arrays are immutable, so every chunk shares it."""
    return _constant(value, n, typ)


def _prediction_arrays(runtime: Runtime, raw: Any, n: int) -> dict[str, pa.Array]:
    columns = prediction_columns(raw, n)
    if columns is None:
        raise ValidationFailedError(
            f"Model {runtime.model_uri} returned predictions that are not one value (or one "
            "row of values) per input row; batch output needs one row per input row."
        )
    out = {}
    for name, values in columns.items():
        try:
            out[name] = pa.array(values, type=runtime.prediction_types.get(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            out[name] = pa.array(values.astype(str))  # as the capture does for odd outputs
    return out


_PLAIN = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}


def _plain(arr: pa.Array) -> pa.Array:
    """ARR without the encodings one writer picks and another does not (pandas' large_string,
    dictionaries), so other columns agree across parts too where their values do."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    typ = _PLAIN.get(arr.type)
    return arr if typ is None else arr.cast(typ)


def _typed_features(checked: CheckedChunk, types: dict[str, pa.DataType]) -> dict[str, pa.Array]:
    """The model's input columns of the scored rows as Arrow arrays of the signature's types."""
    out = {}
    for name, values in checked.features.items():
        try:
            out[name] = pa.array(values, type=types.get(name), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            out[name] = pa.array(values, from_pandas=True)
    return out


class FileScorer:
    """Scores one input file into its part, rejects file and capture file."""

    def __init__(self, run: BatchRun, file: InputFile, name: str) -> None:
        self.run = run
        self.file = file
        self.result = FileResult(input=file.uri)
        self.part = run.out.part_writer(name)
        self.rejects = run.out.rejects_writer(name)
        self.capture: TableWriter | None = None
        if run.capture_uri:
            day = run.scored_at.date()
            relpath = capture_file_path(run.runtime.name, run.runtime.version, day)
            self.capture, self.result.capture = capture_writer(run.capture_uri, relpath)
        self.name = name
        self.request_id = f"batch-{run.run_id}-{name}"

    def score(self) -> FileResult:
        try:
            self._score_chunks()
        except BaseException as exc:
            for writer in (self.part, self.capture):
                if writer is not None:
                    writer.abort()
            # too many rejects: the rejects file stays, so the reasons can be read
            if isinstance(exc, ValidationFailedError) and self.rejects.rows:
                self.rejects.commit()
            else:
                self.rejects.abort()
            raise
        self.result.output = self.run.out.uri_of(self.part) if self.part.commit() else None
        if self.rejects.commit():
            self.result.rejects = self.run.out.uri_of(self.rejects)
        else:  # none now: one an earlier, failed attempt left would be misread as current
            self.run.out.remove_rejects(self.name)
        if self.capture is not None and self.capture.commit() is None:
            self.result.capture = None
        return self.result

    def _score_chunks(self) -> None:
        run, file = self.run, self.file
        columns = run.runtime.columns
        # one BLAS thread: a chunk is a small product, between which idle BLAS threads spin,
        # taking half of a run's CPU time from the reader and writer threads (measured)
        with (
            threadpool_limits(limits=1, user_api="blas"),
            FileReader(file, [c.name for c in columns or []], run.chunk_rows) as reader,
        ):
            first_row = self._score_reader(reader)
        if first_row == 0:
            raise InvalidInputError(
                f"Input file '{file.uri}' has no rows.",
                hint="Remove the empty file, or fill it, then run again.",
                file=file.uri,
            )

    def _score_reader(self, reader: FileReader) -> int:
        """Score every chunk of READER; returns the number of rows read."""
        run, file = self.run, self.file
        columns = run.runtime.columns
        names = reader.names
        if columns is not None:
            check_file_columns(names, columns, file.uri)
        missing = [c for c in run.id_columns if c not in names]
        if missing:
            raise InvalidInputError(
                f"Input file '{file.uri}' has no column '{missing[0]}' (--id-column).",
                hint=f"Its columns: {', '.join(names[:20])}.",
                file=file.uri,
                column=missing[0],
            )
        keep = run.id_columns or names
        clash = [c for c in keep if c in (MODEL_NAME, MODEL_VERSION, SCORED_AT, *REJECT_COLUMNS)]
        if clash or any(c == "prediction" or c.startswith("prediction.") for c in keep):
            column = (clash or [c for c in keep if c.startswith("prediction")])[0]
            raise InvalidInputError(
                f"Input file '{file.uri}' has a column '{column}', which batch output adds.",
                hint="Rename it, or keep only your key columns with --id-column.",
                file=file.uri,
                column=column,
            )
        first_row = 0
        for batch in reader:
            self._score_chunk(batch, first_row, keep)
            first_row += batch.num_rows
        return first_row

    def _score_chunk(self, batch: pa.RecordBatch, first_row: int, keep: list[str]) -> None:
        run, runtime = self.run, self.run.runtime
        n = batch.num_rows
        if runtime.columns is None:
            checked = CheckedChunk(None, {})
            frame = batch.to_pandas()
        else:
            checked = check_chunk(
                batch,
                runtime.columns,
                file_uri=self.file.uri,
                first_row=first_row,
                from_csv=self.file.format == "csv",
                first_chunk=first_row == 0,
            )
            frame = pd.DataFrame(checked.features, copy=False)
        scored = batch if checked.valid is None else batch.filter(pa.array(checked.valid))
        rows = np.arange(first_row, first_row + n)
        if checked.valid is not None:
            self._reject(batch, checked, rows)
        self.result.rows_read += n
        run.result.rows_read += n
        if scored.num_rows:
            start = time.perf_counter()
            try:
                raw = runtime.predict(Parsed(frame, scored.num_rows, None))
            except ServingError as exc:
                raise ValidationFailedError(
                    f"The model could not score rows {first_row}-{first_row + n - 1} of "
                    f"'{self.file.uri}': {exc.message}",
                    file=self.file.uri,
                ) from exc
            latency_ms = (time.perf_counter() - start) * 1000 / scored.num_rows
            predictions = _prediction_arrays(runtime, raw, scored.num_rows)
            self._write(scored, keep, predictions, checked, rows, latency_ms)
        self.result.rows_scored += scored.num_rows
        run.result.rows_scored += scored.num_rows
        _report(n)
        if run.result.rows_rejected > run.error_threshold:
            raise ValidationFailedError(
                f"{run.result.rows_rejected} rows were rejected, more than --error-threshold "
                f"{run.error_threshold}; the last in '{self.file.uri}'. The reasons are in "
                f"{run.out.uri_of(self.rejects)}.",
                hint="Fix the input rows, or raise --error-threshold to score the rest anyway.",
                file=self.file.uri,
                rejected=run.result.rows_rejected,
            )

    def _write(
        self,
        scored: pa.RecordBatch,
        keep: list[str],
        predictions: dict[str, pa.Array],
        checked: CheckedChunk,
        rows: np.ndarray,
        latency_ms: float,
    ) -> None:
        run, n = self.run, scored.num_rows
        typed = _typed_features(checked, run.runtime.feature_types)
        # signature columns as the signature types them, whatever the input format (CSV text,
        # a Parquet int32 for a long), so every part of a run has one schema for them
        out = {
            name: typed[name]
            if name in typed and scored.column(name).type != typed[name].type
            else _plain(scored.column(name))
            for name in keep
        }
        out.update(predictions)
        out[MODEL_NAME] = _repeated(run.runtime.name, n, pa.string())
        out[MODEL_VERSION] = _repeated(run.runtime.version, n, pa.string())
        out[SCORED_AT] = _repeated(run.scored_at, n, _TS)
        self.part.write(pa.table(out))
        if self.capture is None:
            return
        capture: dict[str, pa.Array] = dict(typed)
        capture.update(predictions)
        capture[REQUEST_ID] = _constant(self.request_id, n, pa.string())
        kept_rows = rows if checked.valid is None else rows[checked.valid]
        capture[ROW] = pa.array(kept_rows, type=pa.int64())
        capture[TS] = _repeated(run.scored_at, n, _TS)
        capture["_model_name"] = out[MODEL_NAME]
        capture["_model_version"] = out[MODEL_VERSION]
        capture[STATUS] = _repeated(200, n, pa.int32())
        capture["_error_code"] = pa.nulls(n, pa.string())
        capture[LATENCY_MS] = _constant(latency_ms, n, pa.float64())
        self.capture.write(pa.table(capture))

    def _reject(self, batch: pa.RecordBatch, checked: CheckedChunk, rows: np.ndarray) -> None:
        bad = np.flatnonzero(~checked.valid)
        table = pa.Table.from_batches([batch.take(pa.array(bad))])
        reasons = [checked.reasons[int(i)] for i in bad]
        extra = {
            "_source_file": _constant(self.file.uri, len(bad), pa.string()),
            "_row": pa.array(rows[bad], type=pa.int64()),
            "_column": pa.array([r[0] for r in reasons], type=pa.string()),
            "_code": pa.array([r[1] for r in reasons], type=pa.string()),
            "_reason": pa.array([r[2] for r in reasons], type=pa.string()),
        }
        for name, values in extra.items():
            table = table.append_column(name, values)
        self.rejects.write(table)
        self.result.rows_rejected += len(bad)
        self.run.result.rows_rejected += len(bad)


class BatchRun:
    """The state of one `score_batch` call (see there)."""

    def __init__(
        self,
        runtime: Runtime,
        out: OutputFolder,
        result: BatchResult,
        *,
        chunk_rows: int,
        id_columns: list[str],
        error_threshold: int,
        capture_uri: str | None,
    ) -> None:
        self.runtime = runtime
        self.out = out
        self.result = result
        self.chunk_rows = chunk_rows
        self.id_columns = id_columns
        self.error_threshold = error_threshold
        self.capture_uri = capture_uri
        self.scored_at = result.started_at
        self.run_id = uuid.uuid4().hex[:12]
