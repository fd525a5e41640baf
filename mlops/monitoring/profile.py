"""Reference profile of a data frame: the statistics that validation and drift compare against.

Profile format (JSON-serialisable, ``format_version`` 1)::

    {"format_version": 1, "n_rows": int, "quantile_levels": [0.0, 0.01, ..., 1.0],
     "columns": {name: {"dtype": str, "kind": "numeric"|"categorical"|"boolean"|"datetime",
                        "null_rate": float, "n_unique": int, ...kind-specific fields}}}

Numeric columns add ``min``, ``max``, ``mean``, ``std``, ``integer`` and ``quantiles`` (the
values at the 101 ``quantile_levels``, percentiles 0..100, so drift can cut PSI bins at any
multiple of 1 %; we use deciles). Categorical and boolean columns add ``categories``
(value -> share of non-null rows, the ``MAX_CATEGORIES`` most frequent, keys as strings) and
``other_rate`` (the share of the categories beyond the cap). Datetime columns add ``min``/``max``
as ISO strings (UTC).

A column's kind is decided from its values (`infer_kind`), so the same data read from CSV or
Parquet gets the same profile; validation and drift then cast current data to that recorded
kind (`cast_to_kind`) before comparing anything.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
QUANTILE_LEVELS = np.round(np.linspace(0.0, 1.0, 101), 2)
MAX_CATEGORIES = 100


Kind = Literal["numeric", "categorical", "boolean", "datetime"]
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"
_TRUE = {"true", "t", "yes", "1", "1.0"}
_FALSE = {"false", "f", "no", "0", "0.0"}


@dataclass(frozen=True)
class ColumnKind:
    """What a column holds, as the reference profile records it: `kind`, and for numeric
    columns whether every value is a whole number (`integer`, e.g. counts and levels)."""

    kind: Kind
    integer: bool = False

    @classmethod
    def from_profile(cls, entry: dict[str, Any]) -> ColumnKind:
        return cls(entry["kind"], bool(entry.get("integer", False)))


@dataclass(frozen=True)
class CastColumn:
    """A column cast to a reference kind: `values` (float64 for numeric, pandas "boolean",
    datetime64[UTC], or str keys for categorical; missing and invalid cells are NA), the mask
    of cells that were missing before the cast, and of those present that could not be cast."""

    values: pd.Series
    missing: np.ndarray
    invalid: np.ndarray

    def invalid_examples(self, original: pd.Series, limit: int = 3) -> list[str]:
        return [str(v) for v in pd.unique(original[self.invalid])[:limit]]


def _all_integral(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all(finite == np.round(finite)))


def infer_kind(series: pd.Series) -> ColumnKind:
    """A column's kind decided from its values, not from how the file was read: whole-number
    floats (an integer CSV column with a blank cell) are `integer`, Python bools in an object
    column and true/false text are boolean, ISO date strings (CSV) are datetime, numeric
    strings are numeric."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return ColumnKind("boolean")
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return ColumnKind("datetime")
    if pd.api.types.is_numeric_dtype(dtype):
        if pd.api.types.is_integer_dtype(dtype):
            return ColumnKind("numeric", integer=True)
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        return ColumnKind("numeric", integer=_all_integral(values))
    present = pd.Series(pd.unique(series.dropna()), dtype=object)
    if present.empty:
        return ColumnKind("categorical")
    types = set(present.map(type))
    if types <= {bool, np.bool_}:
        return ColumnKind("boolean")
    if all(issubclass(t, dt.datetime | dt.date | np.datetime64) for t in types):
        return ColumnKind("datetime")
    if types <= {str}:
        if present.str.lower().isin(["true", "false"]).all():  # as pandas reads CSV booleans
            return ColumnKind("boolean")
        if present.str.match(_ISO_DATE).all() and _parse_datetimes(present).notna().all():
            return ColumnKind("datetime")
        numbers = pd.to_numeric(present, errors="coerce").to_numpy(dtype="float64")
        if np.isfinite(numbers).all():
            return ColumnKind("numeric", integer=_all_integral(numbers))
    return ColumnKind("categorical")


def infer_kinds(frame: pd.DataFrame) -> dict[str, ColumnKind]:
    """`infer_kind` of every column."""
    return {str(name): infer_kind(frame[name]) for name in frame.columns}


def profile_kinds(profile: dict[str, Any] | None, frame: pd.DataFrame) -> dict[str, ColumnKind]:
    """Kinds of `frame`'s columns: as the profile recorded them, else inferred from `frame`."""
    recorded = (profile or {}).get("columns", {})
    return {
        str(name): ColumnKind.from_profile(recorded[name])
        if name in recorded
        else infer_kind(frame[name])
        for name in frame.columns
    }


def _parse_datetimes(values: pd.Series) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns about mixed offsets; we convert to UTC
        return pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")


def _boolean(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def cast_to_kind(series: pd.Series, kind: ColumnKind) -> CastColumn:
    """Cast current (or reference) values to a recorded kind before any comparison.

    numeric -> float64 (non-finite and unparseable values are invalid); boolean -> pandas
    "boolean" from bools, 0/1 and true/false/yes/no text; datetime -> UTC datetime64 (naive
    times are taken as UTC); categorical -> `category_key` strings (never invalid). Integer
    levels stay numbers here; `category_key` makes 1.0 the level "1".
    """
    missing = series.isna().to_numpy()
    dtype = series.dtype
    if kind.kind == "numeric":
        if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            values = series.to_numpy(dtype="float64", na_value=np.nan)
        else:
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
        cast = pd.Series(values, index=series.index)
        return CastColumn(cast, missing, ~missing & ~np.isfinite(values))
    if kind.kind == "boolean":
        if pd.api.types.is_bool_dtype(dtype):
            cast = series.astype("boolean")
        else:
            uniques = pd.unique(series.dropna())
            mapping = {u: _boolean(u) for u in uniques}
            cast = series.map(mapping).astype("boolean")
        return CastColumn(cast, missing, ~missing & cast.isna().to_numpy())
    if kind.kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(dtype):
            cast = series.dt.tz_localize("UTC") if series.dt.tz is None else series
            cast = cast.dt.tz_convert("UTC")
        else:
            cast = _parse_datetimes(series.astype(object).where(~missing, None))
        return CastColumn(cast, missing, ~missing & cast.isna().to_numpy())
    uniques = pd.unique(series.dropna())
    keys = {u: category_key(u) for u in uniques}
    if all(type(u) is str for u in uniques):  # text is its own key: skip a per-row map
        cast = series
    else:
        cast = series.map(keys).astype(object).where(~missing, None)
    return CastColumn(cast, missing, np.zeros(len(series), dtype=bool))


def category_key(value: Any) -> str:
    """The string key a category or level is stored under in profiles (JSON keys are
    strings); whole numbers read as floats (a CSV column with a blank) give the integer key."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _profile_numeric(values: pd.Series, integer: bool) -> dict[str, Any]:
    array = values.to_numpy(dtype="float64", na_value=np.nan)
    array = array[np.isfinite(array)]
    stats: dict[str, Any] = {"integer": integer}
    if array.size == 0:
        return stats | {"min": None, "max": None, "mean": None, "std": None, "quantiles": None}
    return stats | {
        "min": float(array.min()),
        "max": float(array.max()),
        "mean": float(array.mean()),
        "std": _finite(array.std(ddof=1)) if array.size > 1 else 0.0,
        "quantiles": [float(q) for q in np.quantile(array, QUANTILE_LEVELS)],
    }


def _profile_categories(values: pd.Series) -> dict[str, Any]:
    counts = values.dropna().value_counts()
    counts = counts.groupby(counts.index.map(category_key), sort=False).sum()
    counts = counts.sort_values(ascending=False, kind="stable")
    total = int(counts.sum())
    if total == 0:
        return {"categories": {}, "other_rate": 0.0}
    kept = counts.iloc[:MAX_CATEGORIES]
    return {
        "categories": {str(k): float(v) / total for k, v in kept.items()},
        "other_rate": float(counts.iloc[MAX_CATEGORIES:].sum()) / total,
    }


def _profile_datetime(values: pd.Series) -> dict[str, Any]:
    present = values.dropna()
    if present.empty:
        return {"min": None, "max": None}
    return {"min": present.min().isoformat(), "max": present.max().isoformat()}


def profile_frame(df: pd.DataFrame) -> dict[str, Any]:
    """Summarise every column of `df` (see the module docstring for the format); each column's
    kind is `infer_kind`'s and its statistics are taken on the values cast to that kind."""
    columns: dict[str, Any] = {}
    for name in df.columns:
        series = df[name]
        kind = infer_kind(series)
        values = cast_to_kind(series, kind).values
        entry: dict[str, Any] = {
            "dtype": str(series.dtype),
            "kind": kind.kind,
            "null_rate": float(series.isna().mean()) if len(series) else 0.0,
            "n_unique": int(values.nunique(dropna=True)),
        }
        if kind.kind == "numeric":
            entry |= _profile_numeric(values, kind.integer)
        elif kind.kind == "datetime":
            entry |= _profile_datetime(values)
        else:
            entry |= _profile_categories(values)
        columns[str(name)] = entry
    return {
        "format_version": FORMAT_VERSION,
        "n_rows": len(df),
        "quantile_levels": [float(q) for q in QUANTILE_LEVELS],
        "columns": columns,
    }
