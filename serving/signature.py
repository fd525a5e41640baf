"""The model signature as the service sees it: typed input columns and their OpenAPI schema.

A column-based MLflow signature becomes a list of `Column`s (name, MLflow type, required); the
same columns generate the OpenAPI components of the /invocations body. Conversion of request
values into arrays lives in `values`, reading the scoring formats in `schema`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    def dtype(self) -> Any:
        """The numpy dtype of the column's non-null array."""
        return _TYPES[self.type][0]

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


def request_schema(columns: Iterable[Column], reject_extra: bool) -> dict[str, Any]:
    """OpenAPI components for the /invocations body, generated from the signature."""
    columns = list(columns)
    props = {c.name: c.openapi for c in columns}
    # OpenAPI 3.1 is JSON Schema 2020-12: null is a type ("nullable" was 3.0's keyword)
    nullable_props = {
        c.name: {**c.openapi, "type": [c.openapi["type"], "null"]} if c.nullable else c.openapi
        for c in columns
    }
    required = [c.name for c in columns if c.required]
    row = {
        "type": "object",
        "properties": nullable_props,
        "required": required,
        "additionalProperties": not reject_extra,
    }
    # a split cell is any column's value: anyOf, as 1 is both an integer and a number
    kinds = {json.dumps(spec, sort_keys=True): spec for spec in nullable_props.values()}
    cell = {"anyOf": list(kinds.values())} if columns else {}
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
