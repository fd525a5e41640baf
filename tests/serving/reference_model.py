"""Reference data with every kind of column a frame holds, and a model that insists on them.

`DtypeStrictModel` is pickled, registered and served by the tests (the service imports this
module from the repository when it unpickles the model). It refuses a frame whose dtypes differ
from the frame it was fitted on, and its prediction depends on every value and on which values
are missing, so equal predictions mean the model saw the reference rows as the reference held
them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OPTIONAL = ["kids", "owner", "name", "score", "seen", "seen_local", "segment", "level"]
REQUIRED = ["rooms", "flag", "ratio"]


def reference_frame(rows: int = 150) -> pd.DataFrame:
    """Nullable Int64 and boolean, strings with None, floats with NaN, date-times with NaT
    (naive and in a time zone), categoricals of strings and of integers, each with missing
    cells (row 0 misses kids and owner; kids also past row 100), and three columns without.

    Values are binary fractions and whole seconds, so they survive JSON and CSV exactly.
    """
    i = np.arange(rows)
    missing = (i % 5 == 0) | (i == 120)
    seen = pd.Timestamp("2024-01-01") + pd.to_timedelta(i * 36_001, unit="s")
    frame = pd.DataFrame(
        {
            "kids": pd.array(np.where(missing, None, i % 4), dtype="Int64"),
            "owner": pd.array(np.where(i % 3 == 0, None, i % 2 == 0), dtype="boolean"),
            "name": pd.Series(np.where(i % 7 == 3, None, [f"n{j % 11}" for j in i]), dtype=object),
            "score": np.where(i % 6 == 1, np.nan, i / 8),
            "seen": pd.Series(seen).where(i % 4 != 2),
            "seen_local": pd.Series(seen.tz_localize("Europe/Berlin")).where(i % 9 != 4),
            "segment": pd.Categorical(np.where(i % 8 == 5, None, np.array(["A", "B", "C"])[i % 3])),
            "level": pd.Categorical.from_codes(np.where(i % 10 == 7, -1, i % 3), [0, 10, 20]),
            "rooms": (i % 5 + 1).astype(np.int64),
            "flag": i % 2 == 1,
            "ratio": (i % 16 / 4).astype(np.float32),
        }
    )
    return frame


class DtypeStrictModel:
    """Fitted on a frame, predicts only on frames with the same dtypes."""

    def fit(self, frame: pd.DataFrame) -> DtypeStrictModel:
        self.dtypes = {str(c): str(t) for c, t in frame.dtypes.items()}
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        got = {c: str(frame[c].dtype) for c in self.dtypes}
        if got != self.dtypes:
            wrong = {c: (t, self.dtypes[c]) for c, t in got.items() if t != self.dtypes[c]}
            raise TypeError(f"dtypes (got, fitted) differ: {wrong}")

        total = np.zeros(len(frame))
        for k, name in enumerate(self.dtypes):
            total += _encode(frame[name]) * 100.0**k
        return total


def _encode(values: pd.Series) -> np.ndarray:
    """A number per value that depends on the value and the dtype's reading of it; -1 missing."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(np.float64)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        values = values.dt.hour  # in the column's own time zone: zones matter
    elif pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        values = values.str.len()
    return values.astype("Float64").fillna(-1.0).to_numpy(np.float64)


class ConstantModel:
    """Predicts 0 for any frame, whatever its columns."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(frame))
