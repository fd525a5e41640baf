"""Check record batches against the model signature with the scoring service's own rules.

The rules are the ones `/invocations` applies (`mlops_pipeline.serving.schema.check_columns`,
`csv_columns` and `values.to_array`), not a copy of them: the service's functions decide what
a cell may hold, what it becomes and what the message says. They work on Python lists, which is
too slow for millions of rows, so Arrow columns whose type already guarantees what the service
would accept (a Parquet double column for a `double` input, an integer column within range for
a `long` one, ...) are converted in bulk, and only the cells the bulk checks cannot vouch for
(nulls in a required integer column, integers out of range, floats with a fraction for an
integer input, text where numbers are expected, ...) go through the service's functions one by
one. A row with any failing cell is rejected with the service's message; the others are scored.

Whole-file problems raise instead: a required column that is missing, and a column whose
values in the first chunk all fail (a column of the wrong type).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.serving.errors import ServingError
from mlops_pipeline.serving.schema import Column, check_columns, csv_columns, to_array

_ARROW = {
    "double": pa.float64(),
    "float": pa.float32(),
    "long": pa.int64(),
    "integer": pa.int32(),
    "boolean": pa.bool_(),
}
_NUMBER_TYPES = ("double", "float")
_INT64 = np.iinfo(np.int64)
_INTEGER_TYPES = ("long", "integer")


@dataclass
class CheckedChunk:
    """One record batch checked: the model input for its good rows, and why the others failed.

    `valid` is a boolean mask over the batch's rows (None when every row passed); `features`
    holds one array per signature column for the good rows only, as the service builds them;
    `reasons` maps a rejected row (index in the batch) to (column, error code, message).
    """

    valid: np.ndarray | None
    features: dict[str, Any]
    reasons: dict[int, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return len(self.reasons)


def check_file_columns(names: list[str], columns: list[Column], file_uri: str) -> None:
    """Raise InvalidInputError (exit 2) naming FILE and the column when a required signature
    column is missing, by the service's own rule and message."""
    try:
        check_columns({name: [None] for name in names}, columns, reject_extra=False, max_rows=1)
    except ServingError as exc:
        if exc.code == "missing_column":
            raise InvalidInputError(
                f"Input file '{file_uri}': {exc.message}",
                hint="Add the column to the file, or score it with the model it was made for.",
                file=file_uri,
                column=exc.details.get("column"),
            ) from None
        # other codes are about values (e.g. null in a required column): checked per row


def _cell_problem(column: Column, value: Any) -> ServingError | None:
    """What the service says about VALUE in COLUMN (None: it is accepted)."""
    try:
        check_columns({column.name: [value]}, [column], reject_extra=False, max_rows=1)
    except ServingError as exc:
        return exc
    return None


def _csv_cell(column: Column, text: str | None) -> tuple[Any, ServingError | None]:
    """A CSV cell typed by the service's CSV reader: (value, None) or (None, its error)."""
    out = io.StringIO()
    # a second column keeps an empty cell from being read as a blank line, which is skipped
    csv.writer(out).writerows([[column.name, "_"], [text or "", "_"]])
    try:
        return csv_columns(out.getvalue(), [column])[column.name][0], None
    except ServingError as exc:
        return None, exc


_SHOWN_CHARS = 40


def _shown(value: Any) -> str:
    """VALUE as a reason shows it: repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _message(exc: ServingError, row: int, value: Any = None) -> str:
    # the service checked one cell, so it says "row 0"; name the row of the file instead
    message = exc.message.replace(" row 0:", f" row {row}:", 1)
    got = message.find(", got ")
    end = message.find(".", got + 1) if got >= 0 else -1
    if value is None or end < 0:
        return message
    # the service's words plus the cell itself: "got a value that is not one ('x')."
    return f"{message[:end]} ({_shown(value)}){message[end:]}"


def _base_type(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        return arr.dictionary_decode()
    return arr


def _from_csv_text(column: Column, arr: pa.Array, bad: dict[int, ServingError]) -> pa.Array:
    """A CSV text column typed as the service's CSV reader types it; bad cells become null."""
    if column.type in ("string", "binary", "datetime"):
        return arr  # the service reads these as text too
    target = _ARROW[column.type]
    wide = pa.int64() if column.type in _INTEGER_TYPES else target
    try:
        return pc.cast(arr, wide)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = []
    for i, text in enumerate(arr.to_pylist()):
        value, problem = _csv_cell(column, text)
        if problem is None and type(value) is int and not _INT64.min <= value <= _INT64.max:
            problem = _cell_problem(column, value)  # beyond int64: the service's range error
        if problem is not None:
            bad[i] = problem
            value = None
        values.append(value)
    return pa.array(values, type=wide)


def _bulk_ok(column: Column, typ: pa.DataType) -> bool:
    """Whether an Arrow column of TYP holds only what the service accepts for COLUMN, apart
    from nulls, integer ranges and integral floats, which `_bulk_problems` checks."""
    if pa.types.is_null(typ):
        return True
    kind = column.type
    if kind in _NUMBER_TYPES:
        return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
    if kind in _INTEGER_TYPES:
        return pa.types.is_integer(typ) or pa.types.is_floating(typ)
    if kind == "boolean":
        return pa.types.is_boolean(typ)
    if kind == "string":
        return pa.types.is_string(typ) or pa.types.is_large_string(typ)
    if kind == "binary":
        return pa.types.is_binary(typ) or pa.types.is_large_binary(typ)
    return pa.types.is_timestamp(typ) or pa.types.is_date(typ)  # datetime


def _bulk_suspects(column: Column, arr: pa.Array) -> np.ndarray | None:
    """Rows of a bulk-compatible column the service might refuse (None: none): nulls in a
    column that takes none, and for integer inputs floats with a fraction (or NaN, inf) and
    values beyond the integer type's range."""
    suspect = np.zeros(len(arr), dtype=bool)
    if not column.nullable and arr.null_count:
        suspect |= arr.is_null().to_numpy(zero_copy_only=False)
    if column.type in _INTEGER_TYPES and len(arr) and not pa.types.is_null(arr.type):
        if pa.types.is_floating(arr.type):
            integral = pc.fill_null(pc.equal(pc.floor(arr), arr), True)
            suspect |= ~integral.to_numpy(zero_copy_only=False)
        info = np.iinfo(np.int64 if column.type == "long" else np.int32)
        bounds = pc.min_max(arr)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None and (low < info.min or high > info.max):  # rare: exact, in Python
            suspect |= np.array(
                [v is not None and not info.min <= v <= info.max for v in arr.to_pylist()]
            )
    return suspect if suspect.any() else None


def _model_array(column: Column, arr: pa.Array) -> Any:
    """A bulk-compatible Arrow column (bad rows nulled) as the array the service would build."""
    kind = column.type
    if kind in _NUMBER_TYPES:
        return pc.cast(arr, _ARROW[kind]).to_numpy(zero_copy_only=False)
    if kind in _INTEGER_TYPES or kind == "boolean":
        typed = pc.cast(arr, _ARROW[kind], safe=False)
        values = typed.fill_null(False if kind == "boolean" else 0).to_numpy(zero_copy_only=False)
        if not column.nullable:
            return values
        mask = typed.is_null().to_numpy(zero_copy_only=False)
        if kind == "boolean":
            return pd.arrays.BooleanArray(values, mask)
        return pd.arrays.IntegerArray(values, mask)
    if kind == "datetime":
        if pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
            arr = pc.cast(arr, pa.timestamp("ns", "UTC"))  # the instant, as naive UTC below
        return pc.cast(arr, pa.timestamp("ns")).to_numpy(zero_copy_only=False)
    return arr.to_numpy(zero_copy_only=False)  # string, binary: objects, None for nulls


def _check_column(
    column: Column, arr: pa.Array | None, n: int, from_csv: bool
) -> tuple[Any, dict[int, ServingError]]:
    """(full-length model array, {row: problem}) for one signature column of a batch."""
    bad: dict[int, ServingError] = {}
    if arr is None:  # an optional column the file leaves out: all null, as the service does
        return to_array(column, [None] * n), bad
    arr = _base_type(arr)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if from_csv and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = _from_csv_text(column, arr, bad)
    if _bulk_ok(column, arr.type):
        suspects = _bulk_suspects(column, arr)
        if suspects is not None:
            values = arr.to_pylist()
            for i in np.flatnonzero(suspects):
                # a CSV cell that failed to parse is null by now: keep its own reason
                if int(i) not in bad and (problem := _cell_problem(column, values[i])) is not None:
                    bad[int(i)] = problem
        if bad:
            nulled = np.zeros(n, dtype=bool)
            nulled[list(bad)] = True
            arr = pc.if_else(pa.array(nulled), pa.nulls(n, arr.type), arr)
        return _model_array(column, arr), bad
    # any other type: every cell through the service's check, as /invocations would see it
    values = arr.to_pylist()
    try:
        return to_array(column, values), bad
    except ServingError:
        pass
    placeholder = None
    for i, value in enumerate(values):
        if i in bad:
            continue
        if (problem := _cell_problem(column, value)) is not None:
            bad[i] = problem
        elif placeholder is None:
            placeholder = value
    if len(bad) == n:
        return np.empty(n, dtype=object), bad
    return to_array(column, [placeholder if i in bad else v for i, v in enumerate(values)]), bad


def _raise_if_wrong_type(
    column: Column,
    arr: pa.Array | pa.ChunkedArray,
    bad: dict[int, ServingError],
    file_uri: str,
    first_row: int,
    from_csv: bool,
) -> None:
    """Raise when no present value of ARR converts to COLUMN's type: the column as a whole is
    of the wrong type, in CSV (text) as in Parquet. Missing cells do not count either way;
    one good value makes the bad ones row rejects."""
    failed = [i for i, e in bad.items() if e.details.get("got") != "null"]
    present = len(arr) - arr.null_count
    if not present or len(failed) < present:
        return
    row = min(failed)
    typ = "text" if from_csv else str(_base_type(arr).type)
    raise InvalidInputError(
        f"Input file '{file_uri}': column '{column.name}' is of the wrong type ({typ}): the "
        f"model signature expects {column.type}, e.g. row {first_row + row} holds "
        f"{_shown(arr[row].as_py())}.",
        hint=f"Write '{column.name}' as {column.type} values.",
        file=file_uri,
        column=column.name,
    )


def check_chunk(
    batch: pa.RecordBatch,
    columns: list[Column],
    *,
    file_uri: str,
    first_row: int,
    from_csv: bool,
    first_chunk: bool,
) -> CheckedChunk:
    """Check one record batch of FILE against the signature COLUMNS.

    Args:
        batch: rows of the input file (any columns; those outside the signature are ignored).
        columns: the model's input signature (`serving.signature.signature_columns`).
        file_uri: the file, for messages.
        first_row: the file row number (0-based) of the batch's first row, for messages.
        from_csv: the batch was read from CSV with the signature's columns as text.
        first_chunk: the file's first batch; a column whose non-null values all fail there is
            a column of the wrong type.

    Returns:
        The checked chunk (see `CheckedChunk`).

    Raises:
        InvalidInputError: a column of the wrong type (exit 2), naming the file and column.
    """
    n = batch.num_rows
    features: dict[str, Any] = {}
    reasons: dict[int, tuple[str, str, str]] = {}
    names = batch.schema.names
    for column in columns:
        arr = batch.column(names.index(column.name)) if column.name in names else None
        values, bad = _check_column(column, arr, n, from_csv)
        if first_chunk and arr is not None:
            _raise_if_wrong_type(column, arr, bad, file_uri, first_row, from_csv)
        features[column.name] = values
        for i, problem in sorted(bad.items()):
            if i not in reasons:
                missing = arr is None or problem.details.get("got") == "null"
                value = None if missing else arr[i].as_py()
                reasons[i] = (column.name, problem.code, _message(problem, first_row + i, value))
    if not reasons:
        return CheckedChunk(None, features)
    valid = np.ones(n, dtype=bool)
    valid[list(reasons)] = False
    features = {name: values[valid] for name, values in features.items()}
    return CheckedChunk(valid, features, reasons)
