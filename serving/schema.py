"""Turn MLflow scoring payloads into typed columns, checked against the model signature.

MLflow's own parsers build a DataFrame first and enforce the schema afterwards, which costs
about a millisecond per request and produces errors that echo the payload. Here each format is
read straight into per-column lists (`payload_columns` for JSON, `csv_columns` for CSV), then
`check_columns` matches them to the signature's columns and converts each to one array (see
`values` for the type checks, nulls and date-times; `signature` for the columns themselves).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from typing import Any

from .errors import ServingError, bad_input
from .signature import Column, json_type, request_schema, signature_columns
from .values import parse_datetime, to_array

# re-exported: model.py, the app and tests import these from here
__all__ = [
    "FORMATS",
    "Column",
    "check_columns",
    "csv_columns",
    "json_type",
    "parse_datetime",
    "payload_columns",
    "request_schema",
    "signature_columns",
    "to_array",
]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _rows_to_columns(rows: list, names: list[str], field: str) -> dict[str, list]:
    """Positional rows (lists) to columns named by `names`."""
    width = len(names)
    for i, row in enumerate(rows):
        if type(row) is not list:
            raise bad_input(
                "invalid_format",
                f"'{field}' row {i} must be a list of {width} values, got {json_type(row)}.",
                field=field,
                row=i,
            )
        if len(row) != width:
            raise bad_input(
                "wrong_width",
                f"'{field}' row {i} has {len(row)} values but {width} columns are expected "
                f"({', '.join(names)}).",
                field=field,
                row=i,
                expected=width,
                got=len(row),
            )
    if not rows:
        return {name: [] for name in names}
    return dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))


def _records_to_columns(records: list, field: str) -> dict[str, list]:
    """A list of {column: value} objects to columns; a key absent from a record is null."""
    names: dict[str, None] = {}
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise bad_input(
                "invalid_format",
                f"'{field}' item {i} must be an object of column: value, got {json_type(rec)}.",
                field=field,
                row=i,
            )
        names.update(dict.fromkeys(rec))
    return {name: [rec.get(name) for rec in records] for name in names}


def _expect_list(value: Any, field: str) -> list:
    if type(value) is not list:
        raise bad_input(
            "invalid_format", f"'{field}' must be a list, got {json_type(value)}.", field=field
        )
    return value


def payload_columns(doc: Any, names: list[str]) -> dict[str, list]:
    """Read any MLflow JSON scoring format into {column: values}; `names` orders positional data."""
    if type(doc) is not dict:
        raise bad_input(
            "invalid_format",
            f"The body must be a JSON object with one of the keys {', '.join(FORMATS)}; "
            f"got {json_type(doc)}.",
        )
    keys = [k for k in doc if k in FORMATS]
    unknown = [k for k in doc if k not in FORMATS and k != "params"]
    if len(keys) != 1 or unknown:
        raise bad_input(
            "invalid_format",
            f"The body must have exactly one of the keys {', '.join(FORMATS)} "
            "(and optionally 'params').",
            fields=sorted(map(str, doc))[:20],
        )
    field = keys[0]
    data = doc[field]
    if field == "dataframe_split":
        if type(data) is not dict:
            raise bad_input(
                "invalid_format",
                "'dataframe_split' must be an object with 'columns' and 'data'.",
                field=field,
            )
        rows = _expect_list(data.get("data"), "dataframe_split.data")
        columns = data.get("columns", names)
        if type(columns) is not list or not all(type(c) is str for c in columns):
            raise bad_input(
                "invalid_format",
                "'dataframe_split.columns' must be a list of column names.",
                field="dataframe_split.columns",
            )
        if len(set(columns)) != len(columns):
            raise bad_input(
                "duplicate_column",
                "'dataframe_split.columns' names a column more than once.",
                field="dataframe_split.columns",
            )
        return _rows_to_columns(rows, columns, "dataframe_split.data")
    if field == "dataframe_records":
        return _records_to_columns(_expect_list(data, field), field)
    if field == "inputs" and type(data) is dict:
        cols = {}
        for name, values in data.items():
            cols[name] = values if type(values) is list else [values]
        return cols
    items = _expect_list(data, field)
    if items and type(items[0]) is dict:
        return _records_to_columns(items, field)
    if items and type(items[0]) is list:
        return _rows_to_columns(items, names, field)
    if len(names) == 1:
        return {names[0]: items}
    if not items:
        return {name: [] for name in names}
    raise bad_input(
        "invalid_format",
        f"'{field}' must be a list of objects (one per row) or of lists of {len(names)} values.",
        field=field,
    )


def check_columns(
    raw: dict[str, list], columns: list[Column], *, reject_extra: bool, max_rows: int
) -> tuple[dict[str, Any], int]:
    """Match `raw` to the signature: names, equal lengths, types, row limit.

    Returns ({column: array} in signature order, row count); an optional column the request
    leaves out is all null.
    """
    if not any(raw.values()):
        raise bad_input("empty_input", "The request has no rows to score.")
    known = {c.name for c in columns}
    extra = [name for name in raw if name not in known]
    if extra and reject_extra:
        raise bad_input(
            "unexpected_column",
            f"Column '{extra[0]}' is not in the model signature. Remove it, or start the "
            "service with MLOPS_SERVING_EXTRA_COLUMNS=ignore.",
            column=extra[0],
            columns=extra[:20],
        )
    for column in columns:
        if column.required and column.name not in raw:
            raise bad_input(
                "missing_column",
                f"Column '{column.name}' ({column.type}) is required by the model signature.",
                column=column.name,
                expected=column.type,
            )
    n_rows = None
    for name, values in raw.items():
        if name in known:
            if n_rows is None:
                n_rows = len(values)
            elif len(values) != n_rows:
                raise bad_input(
                    "length_mismatch",
                    f"Column '{name}' has {len(values)} values but other columns have {n_rows}.",
                    column=name,
                )
    if not n_rows:  # no rows, or only ignored extra columns had values
        raise bad_input("empty_input", "The request has no rows of the signature's columns.")
    if n_rows > max_rows:
        raise ServingError(
            413,
            "too_many_rows",
            f"The request has {n_rows} rows; at most {max_rows} are accepted per request. "
            "Split it into smaller requests.",
            rows=n_rows,
            limit=max_rows,
        )
    out: dict[str, Any] = {}
    for column in columns:
        values = raw.get(column.name)
        if values is None:  # an optional column left out
            values = [None] * n_rows
        if not column.nullable and None in values:
            row = values.index(None)
            raise bad_input(
                "wrong_type",
                f"Column '{column.name}' row {row}: expected {column.type}, got null. The model "
                f"signature requires a value in every row of '{column.name}'.",
                column=column.name,
                row=row,
                expected=column.type,
                got="null",
            )
        out[column.name] = to_array(column, values)
    return out, n_rows


# an empty cell is a missing value, as pandas and `mlflow models serve` read CSV
_CSV_PARSERS: dict[str, Callable[[str], Any]] = {
    "double": lambda s: float(s) if s else math.nan,
    "float": lambda s: float(s) if s else math.nan,
    "long": lambda s: _csv_int(s) if s else None,
    "integer": lambda s: _csv_int(s) if s else None,
    "boolean": lambda s: _BOOLS[s.lower()] if s else None,
    "string": lambda s: s or None,
    "binary": lambda s: s or None,
    "datetime": lambda s: s or None,
}
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _csv_int(cell: str) -> int:
    """An integer cell; `3.0` (as pandas writes integers next to missing values) is 3."""
    try:
        return int(cell)
    except ValueError:
        number = float(cell)
        if not number.is_integer():
            raise
        return int(number)


def csv_columns(text: str, columns: list[Column] | None) -> dict[str, list]:
    """Read CSV with a header row into typed {column: values}; a leading byte-order mark
    (as spreadsheets write UTF-8) is ignored."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader)
        rows = list(reader)
    except (StopIteration, csv.Error):
        raise bad_input("invalid_csv", "The CSV body needs a header row of column names.") from None
    rows = [r for r in rows if r]
    types = {c.name: c.type for c in columns or []}
    out: dict[str, list] = {}
    for j, name in enumerate(header):
        kind = types.get(name, "string")
        parse = _CSV_PARSERS[kind]
        values = []
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise bad_input(
                    "wrong_width",
                    f"CSV row {i} has {len(row)} fields but the header has {len(header)}.",
                    row=i,
                )
            cell = row[j]
            try:
                values.append(parse(cell))
            except (KeyError, ValueError):
                raise bad_input(
                    "wrong_type",
                    f"Column '{name}' row {i}: expected {kind}, got a value that is not one.",
                    column=name,
                    row=i,
                    expected=kind,
                ) from None
        out[name] = values
    return out
