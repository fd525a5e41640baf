"""Turn MLflow scoring payloads into typed columns, checked against the model signature.

MLflow's own parsers build a DataFrame first and enforce the schema afterwards, which costs
about a millisecond per request and produces errors that echo the payload. Here each format is
read straight into per-column lists, each column is checked against its ColSpec (naming the
column, row and expected type on failure) and converted to one array.

Nulls: a column the signature marks optional (`required=False`, which registration sets for every
column with missing values in the reference data) may hold nulls or be left out (all null). The
model then gets them as a pandas frame holds missing values: NaN for numbers, None for strings
and bytes, NaT for date-times, and the nullable dtypes Int64/Int32/boolean for integers and
booleans. A required integer or boolean column refuses nulls.

Date-times with a UTC offset or `Z` are converted to UTC; the model and the capture get naive
UTC times.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import ServingError, bad_input

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

_JSON_TYPES = {
    float: "number",
    int: "integer",
    str: "string",
    bool: "boolean",
    type(None): "null",
    list: "array",
    dict: "object",
}

# signature type -> (numpy dtype, OpenAPI schema, nulls allowed in a required column)
_TYPES: dict[str, tuple[Any, dict[str, str], bool]] = {
    "double": (np.float64, {"type": "number", "format": "double"}, True),
    "float": (np.float32, {"type": "number", "format": "float"}, True),
    "long": (np.int64, {"type": "integer", "format": "int64"}, False),
    "integer": (np.int32, {"type": "integer", "format": "int32"}, False),
    "boolean": (np.bool_, {"type": "boolean"}, False),
    "string": (object, {"type": "string"}, True),
    "binary": (object, {"type": "string", "format": "byte"}, True),
    "datetime": ("datetime64[ns]", {"type": "string", "format": "date-time"}, True),
}
# pandas nullable dtypes for optional integer and boolean columns
_NULLABLE = {"long": "Int64", "integer": "Int32", "boolean": "boolean"}
# a trailing UTC offset (Z, +02:00, -0530, +02) after the time of an ISO 8601 date-time
_UTC_OFFSET = re.compile(r"(?<=\d)(?:[Zz]|([+-])(\d\d)(?::?(\d\d))?)$")


def json_type(value: Any) -> str:
    """The JSON name of a value's type, used in messages instead of the value itself."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Column:
    """One input column of a column-based signature."""

    name: str
    type: str
    required: bool = True

    @property
    def openapi(self) -> dict[str, str]:
        return dict(_TYPES[self.type][1])

    @property
    def nullable(self) -> bool:
        """Whether null values are accepted: always for optional columns, else by type."""
        return not self.required or _TYPES[self.type][2]


def signature_columns(schema: Any) -> list[Column] | None:
    """Columns of an MLflow input schema, or None when it is not plain named scalar columns."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    columns = []
    for spec in schema.inputs:
        type_name = getattr(spec.type, "name", None)
        if type_name not in _TYPES:
            return None  # arrays, objects and maps go through MLflow's own parser
        columns.append(Column(spec.name, type_name, bool(getattr(spec, "required", True))))
    return columns


def _bad_value(column: str, row: int, expected: str, value: Any) -> ServingError:
    return bad_input(
        "wrong_type",
        f"Column '{column}' row {row}: expected {expected}, got {json_type(value)}. "
        f"Send {expected} values for '{column}' as the model signature requires.",
        column=column,
        row=row,
        expected=expected,
        got=json_type(value),
    )


def _first_bad(values: list, ok: Callable[[Any], bool]) -> tuple[int, Any]:
    for i, v in enumerate(values):
        if not ok(v):
            return i, v
    raise AssertionError("no bad value found")  # pragma: no cover - callers checked all() first


def _is_number(v: Any) -> bool:
    t = type(v)
    return t is float or t is int or v is None


def _is_int(v: Any) -> bool:
    # JSON has one number type: 3.0 is the integer 3 (pandas writes integer categories so)
    t = type(v)
    return t is int or (t is float and v.is_integer())


def _is_int_or_null(v: Any) -> bool:
    return v is None or _is_int(v)


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _is_bool_or_null(v: Any) -> bool:
    return v is None or type(v) is bool


def parse_datetime(text: str) -> np.datetime64:
    """An ISO 8601 date-time as datetime64[ns]; one with a UTC offset or Z is converted to UTC.

    The offset is applied here because numpy's own parsing of offsets is deprecated (it warns on
    every call). Raises ValueError for text that is not a date-time or lies outside the
    datetime64[ns] range (years 1678-2261), which numpy would otherwise wrap silently.
    """
    offset = None
    if "T" in text or " " in text or "t" in text:
        match = _UTC_OFFSET.search(text)
        if match is not None:
            text = text[: match.start()]
            sign, hours, minutes = match.groups()
            offset = 0 if sign is None else int(hours) * 60 + int(minutes or 0)
            if sign == "-":
                offset = -offset
    value = np.datetime64(text)
    if np.isnat(value):  # "NaT", as numpy writes a missing date-time
        return np.datetime64("NaT", "ns")
    ns = value.astype("datetime64[ns]")
    if ns.astype(value.dtype) != value:
        raise ValueError("outside the datetime64[ns] range")
    if offset:
        ns = ns - np.timedelta64(offset, "m")
    return ns


def _is_str_or_null(v: Any) -> bool:
    return v is None or type(v) is str


def to_array(column: Column, values: list) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """Check `values` against the column type and convert them to an array.

    Returns a numpy array, or a pandas Int64/Int32/boolean array for a nullable integer or
    boolean column; raises ServingError (400) naming the column and row of the first bad value.
    """
    name, kind = column.name, column.type
    if kind in ("double", "float"):
        if not all(map(_is_number, values)):
            row, v = _first_bad(values, _is_number)
            raise _bad_value(name, row, "number", v)
        try:
            return np.array(values, dtype=_TYPES[kind][0])
        except OverflowError:
            row, v = _first_bad(values, lambda x: x is None or abs(x) < 1.8e308)
            raise _bad_value(name, row, "number within float range", v) from None
    if kind in ("long", "integer"):
        is_int = _is_int_or_null if column.nullable else _is_int
        if not all(map(is_int, values)):
            row, v = _first_bad(values, is_int)
            raise _bad_value(name, row, "integer", v)
        if float in map(type, values):
            values = [int(v) if type(v) is float else v for v in values]
        dtype = _TYPES[kind][0]
        info = np.iinfo(dtype)
        present = [v for v in values if v is not None] if column.nullable else values
        if present and (min(present) < info.min or max(present) > info.max):
            row, v = _first_bad(values, lambda x: x is None or info.min <= x <= info.max)
            raise _bad_value(name, row, f"integer within {np.dtype(dtype).name}", v)
        if column.nullable:
            return pd.array(values, dtype=_NULLABLE[kind])
        return np.array(values, dtype=dtype)
    if kind == "boolean":
        is_bool = _is_bool_or_null if column.nullable else _is_bool
        if not all(map(is_bool, values)):
            row, v = _first_bad(values, is_bool)
            raise _bad_value(name, row, "boolean", v)
        if column.nullable:
            return pd.array(values, dtype=_NULLABLE[kind])
        return np.array(values, dtype=np.bool_)
    if not all(map(_is_str_or_null, values)):
        row, v = _first_bad(values, _is_str_or_null)
        raise _bad_value(name, row, "string", v)
    if kind == "string":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    if kind == "binary":
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            try:
                out[i] = None if v is None else base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise _bad_value(name, i, "base64 string", v) from None
        return out
    out = np.empty(len(values), dtype="datetime64[ns]")
    for i, v in enumerate(values):  # datetime
        try:
            out[i] = np.datetime64("NaT") if v is None else parse_datetime(v)
        except ValueError:
            raise _bad_value(name, i, "ISO 8601 date-time string", v) from None
    return out


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
    return {name: [row[j] for row in rows] for j, name in enumerate(names)}


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


def request_schema(columns: Iterable[Column], reject_extra: bool) -> dict[str, Any]:
    """OpenAPI components for the /invocations body, generated from the signature."""
    columns = list(columns)
    props = {c.name: c.openapi for c in columns}
    nullable_props = {
        c.name: {**c.openapi, "nullable": True} if c.nullable else c.openapi for c in columns
    }
    required = [c.name for c in columns if c.required]
    row = {
        "type": "object",
        "properties": nullable_props,
        "required": required,
        "additionalProperties": not reject_extra,
    }
    cell = {"oneOf": [c.openapi for c in columns]} if columns else {}
    return {
        "ScoringRow": row,
        "DataframeSplit": {
            "type": "object",
            "required": ["dataframe_split"],
            "properties": {
                "dataframe_split": {
                    "type": "object",
                    "required": ["columns", "data"],
                    "properties": {
                        "columns": {
                            "type": "array",
                            "items": {"type": "string", "enum": list(props)},
                        },
                        "data": {"type": "array", "items": {"type": "array", "items": cell}},
                    },
                }
            },
        },
        "DataframeRecords": {
            "type": "object",
            "required": ["dataframe_records"],
            "properties": {
                "dataframe_records": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ScoringRow"},
                }
            },
        },
        "Instances": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {"type": "array", "items": {"$ref": "#/components/schemas/ScoringRow"}}
            },
        },
        "Inputs": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": {
                    "type": "object",
                    "properties": {
                        name: {"type": "array", "items": spec}
                        for name, spec in nullable_props.items()
                    },
                    "required": required,
                    "additionalProperties": not reject_extra,
                }
            },
        },
    }
