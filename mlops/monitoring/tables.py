"""Read a CSV or Parquet file the same way everywhere (`mlops drift`, `--reference-data`).

CSV is read as UTF-8 with an optional byte-order mark (spreadsheets write one), floats parse
exactly (`float_precision="round_trip"`) so the same numbers give the same statistics from CSV
and Parquet, and a mark left in a column name (a file saved twice, or converted to Parquet with
the mark in its header) is stripped. Column kinds are *not* decided here: they come from the
reference profile (`monitoring.profile.infer_kind`), whatever dtype a reader happened to choose.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlops_pipeline.errors import InvalidInputError, NotFoundError
from pyarrow import ArrowException

BOM = "\ufeff"
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".txt")


def strip_bom(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with byte-order marks removed from the start of its column names."""
    names = [c.lstrip(BOM) if isinstance(c, str) else c for c in frame.columns]
    return frame if names == list(frame.columns) else frame.set_axis(names, axis=1)


def read_table_file(
    path: str | Path, *, option: str | None = None, field: str | None = None
) -> pd.DataFrame:
    """Read a CSV (.csv/.txt) or Parquet (.parquet/.pq) file.

    `option` names where the path came from in messages (e.g. "--reference-data"); `field` is
    the error detail's field name. Raises NotFoundError (no such file) or InvalidInputError
    (another suffix, or the file cannot be parsed), each naming the file.
    """
    path = Path(path).expanduser()
    label = f"{option} '{path}'" if option else f"File '{path}'"
    details = {"field": field, "value": str(path)} if field else {"path": str(path)}
    if not path.is_file():
        raise NotFoundError(
            f"{label} does not exist.",
            hint="Give the path of a CSV or Parquet file.",
            **details,
        )
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            return strip_bom(pd.read_parquet(path))
        if suffix in CSV_SUFFIXES:
            return strip_bom(pd.read_csv(path, encoding="utf-8-sig", float_precision="round_trip"))
    except (OSError, ValueError, pd.errors.ParserError, ArrowException) as exc:
        raise InvalidInputError(
            f"{label} could not be read as {suffix.lstrip('.')} ({exc.__class__.__name__}).",
            hint="Pass a valid CSV or Parquet file.",
            **details,
        ) from exc
    raise InvalidInputError(
        f"{label} is neither CSV nor Parquet: its name ends in neither .csv nor .parquet.",
        hint="Convert it to CSV or Parquet.",
        **details,
    )
