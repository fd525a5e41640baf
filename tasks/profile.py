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
as ISO strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
QUANTILE_LEVELS = np.round(np.linspace(0.0, 1.0, 101), 2)
MAX_CATEGORIES = 100


def column_kind(series: pd.Series) -> str:
    """Classify a column as numeric, categorical, boolean or datetime from its dtype."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_object_dtype(dtype):
        # object columns holding only Python bools are boolean in disguise (nullable bools)
        values = series.dropna()
        if len(values) and values.map(type).eq(bool).all():
            return "boolean"
    return "categorical"


def category_key(value: Any) -> str:
    """The string key a category value is stored under in profiles (JSON keys are strings)."""
    return str(value)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _profile_numeric(values: pd.Series) -> dict[str, Any]:
    array = values.dropna().to_numpy(dtype="float64", na_value=np.nan)
    array = array[np.isfinite(array)]
    stats: dict[str, Any] = {"integer": bool(pd.api.types.is_integer_dtype(values.dtype))}
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
    counts = values.dropna().map(category_key).value_counts()
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
    """Summarise every column of `df` (see the module docstring for the format)."""
    columns: dict[str, Any] = {}
    for name in df.columns:
        series = df[name]
        kind = column_kind(series)
        entry: dict[str, Any] = {
            "dtype": str(series.dtype),
            "kind": kind,
            "null_rate": float(series.isna().mean()) if len(series) else 0.0,
            "n_unique": int(series.nunique(dropna=True)),
        }
        if kind == "numeric":
            entry |= _profile_numeric(series)
        elif kind == "datetime":
            entry |= _profile_datetime(series)
        else:
            entry |= _profile_categories(series)
        columns[str(name)] = entry
    return {
        "format_version": FORMAT_VERSION,
        "n_rows": len(df),
        "quantile_levels": [float(q) for q in QUANTILE_LEVELS],
        "columns": columns,
    }
