"""Batch checks apply the scoring service's rules: same accepted rows, same arrays, same words."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlops_pipeline.batch.checks import check_chunk, check_file_columns
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.serving.errors import ServingError
from mlops_pipeline.serving.schema import Column, check_columns


def check(batch: pa.RecordBatch, columns: list[Column], *, csv: bool = False, first: bool = False):
    return check_chunk(
        batch, columns, file_uri="in.parquet", first_row=100, from_csv=csv, first_chunk=first
    )


def batch_of(**arrays) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(arrays)


def test_numbers_from_integer_and_float_columns_become_float64_with_nan_for_nulls() -> None:
    columns = [Column("x", "double"), Column("n", "double")]
    chunk = check(batch_of(x=pa.array([1.5, None, 3.0]), n=pa.array([1, 2, 3])), columns)
    assert chunk.valid is None and chunk.reasons == {}
    assert chunk.features["x"].dtype == np.float64
    np.testing.assert_array_equal(chunk.features["x"], [1.5, np.nan, 3.0])
    np.testing.assert_array_equal(chunk.features["n"], [1.0, 2.0, 3.0])


def test_null_in_a_required_integer_column_rejects_that_row_with_the_service_message() -> None:
    columns = [Column("n", "long"), Column("x", "double")]
    chunk = check(batch_of(n=pa.array([1, None, 3]), x=pa.array([0.1, 0.2, 0.3])), columns)
    assert chunk.valid.tolist() == [True, False, True]
    column, code, message = chunk.reasons[1]
    assert (column, code) == ("n", "wrong_type")
    # the service's words, with the row of the file (first_row 100 + 1)
    assert message.startswith("Column 'n' row 101: expected long, got null.")
    assert chunk.features["n"].tolist() == [1, 3]
    assert chunk.features["n"].dtype == np.int64
    np.testing.assert_array_equal(chunk.features["x"], [0.1, 0.3])


def test_integer_rules_fractions_range_and_optional_nulls() -> None:
    columns = [Column("a", "long"), Column("b", "integer"), Column("c", "long", required=False)]
    chunk = check(
        batch_of(
            a=pa.array([3.0, 2.5, 7.0, math.nan]),
            b=pa.array([1, 2, 2**31, 4], pa.int64()),
            c=pa.array([None, 5, 6, 7]),
        ),
        columns,
    )
    assert chunk.valid.tolist() == [True, False, False, False]
    assert chunk.reasons[1][:2] == ("a", "wrong_type")
    assert "expected integer, got number" in chunk.reasons[1][2]
    assert chunk.reasons[2][0] == "b"
    assert "integer within int32" in chunk.reasons[2][2]
    assert chunk.reasons[3][0] == "a"  # NaN is not an integer
    assert chunk.features["a"].tolist() == [3]
    # an optional integer column keeps its nulls, as a pandas Int64 array (as the service does)
    assert isinstance(chunk.features["c"], pd.arrays.IntegerArray)
    assert chunk.features["c"].isna().tolist() == [True]


def test_csv_text_is_typed_by_the_service_csv_reader_and_bad_cells_reject_rows() -> None:
    columns = [Column("x", "double"), Column("n", "long"), Column("s", "string")]
    chunk = check(
        batch_of(
            x=pa.array(["1.5", "abc", "", "2"]),
            n=pa.array(["1", "2", "3.0", "4"]),
            s=pa.array(["001", None, "b", "c"]),
        ),
        columns,
        csv=True,
    )
    assert chunk.valid.tolist() == [True, False, True, True]
    assert chunk.reasons[1][2].startswith("Column 'x' row 101: expected double")
    np.testing.assert_array_equal(chunk.features["x"], [1.5, np.nan, 2.0])
    assert chunk.features["n"].tolist() == [1, 3, 4]
    assert chunk.features["s"].tolist() == ["001", "b", "c"]


def test_a_column_whose_values_all_fail_is_a_column_of_the_wrong_type() -> None:
    columns = [Column("x", "double")]
    with pytest.raises(InvalidInputError) as caught:
        check(batch_of(x=pa.array(["a", "b", None])), columns, first=True)
    message = str(caught.value)
    assert "in.parquet" in message and "'x'" in message and "wrong type" in message
    assert caught.value.details == {"file": "in.parquet", "column": "x"}
    # later chunks reject such rows one by one instead
    chunk = check(batch_of(x=pa.array(["a", "b"])), columns, first=False)
    assert chunk.valid.tolist() == [False, False]


def test_missing_required_column_names_the_file_and_column_optional_may_be_missing() -> None:
    columns = [Column("x", "double"), Column("y", "long"), Column("z", "string", required=False)]
    with pytest.raises(InvalidInputError) as caught:
        check_file_columns(["x", "other"], columns, "data/a.csv")
    assert "data/a.csv" in str(caught.value) and "'y'" in str(caught.value)
    assert caught.value.details["column"] == "y"
    check_file_columns(["x", "y"], columns, "data/a.csv")  # z is optional: no error
    chunk = check(batch_of(x=pa.array([1.0]), y=pa.array([2])), columns)
    assert chunk.features["z"].tolist() == [None]


def test_datetimes_from_parquet_timestamps_are_naive_utc() -> None:
    columns = [Column("t", "datetime")]
    stamps = pa.array([0, None], pa.timestamp("s", tz="Europe/Paris"))
    chunk = check(batch_of(t=stamps), columns)
    assert chunk.features["t"].dtype == np.dtype("datetime64[ns]")
    assert str(chunk.features["t"][0]) == "1970-01-01T00:00:00.000000000"
    assert np.isnat(chunk.features["t"][1])


# --- the same rules as the service, on any values --------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=False, width=64),
    st.text(max_size=5),
)
KINDS = st.sampled_from(["double", "long", "integer", "boolean", "string"])


def service_verdicts(column: Column, values: list) -> list[bool]:
    verdicts = []
    for value in values:
        try:
            check_columns({column.name: [value]}, [column], reject_extra=False, max_rows=1)
            verdicts.append(True)
        except ServingError:
            verdicts.append(False)
    return verdicts


@settings(max_examples=150, deadline=None)
@given(kind=KINDS, required=st.booleans(), values=st.lists(VALUES, min_size=1, max_size=12))
def test_rows_accepted_are_exactly_those_the_service_accepts(kind, required, values) -> None:
    column = Column("v", kind, required)
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # mixed Python types do not make one Arrow column: a file cannot hold them either
        return
    chunk = check(batch_of(v=arr), [column])
    accepted = [True] * len(values) if chunk.valid is None else chunk.valid.tolist()
    verdicts = service_verdicts(column, arr.to_pylist())
    assert accepted == verdicts
    good = [v for v, ok in zip(arr.to_pylist(), verdicts, strict=True) if ok]
    if good:
        expected = check_columns({"v": good}, [column], reject_extra=False, max_rows=10**6)[0]
        got = chunk.features["v"]
        assert type(got) is type(expected["v"])
        # same dtype, same values, same missing markers (NaN, NA, None, NaT)
        pd.testing.assert_series_equal(pd.Series(got), pd.Series(expected["v"]))


CELLS = st.one_of(
    st.sampled_from(["", "abc", "NA", "true", "False", "1", "0", "3.0", "2.5", "-7", "1e3"]),
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=4),
)


@settings(max_examples=150, deadline=None)
@given(kind=KINDS, required=st.booleans(), cells=st.lists(CELLS, min_size=1, max_size=12))
def test_csv_cells_accepted_are_exactly_those_the_service_csv_reader_accepts(
    kind, required, cells
) -> None:
    from mlops_pipeline.serving.schema import csv_columns

    column = Column("v", kind, required)
    # the batch CSV reader gives the signature's columns as text, an empty cell as null
    chunk = check(batch_of(v=pa.array([c or None for c in cells], pa.string())), [column], csv=True)
    accepted = [True] * len(cells) if chunk.valid is None else chunk.valid.tolist()
    verdicts = []
    for cell in cells:
        text = "v,_\n" + ('"' + cell.replace('"', '""') + '"') + ",_\n"
        try:
            raw = csv_columns(text, [column])
            check_columns({"v": raw["v"]}, [column], reject_extra=False, max_rows=1)
            verdicts.append(True)
        except ServingError:
            verdicts.append(False)
    assert accepted == verdicts


@pytest.mark.parametrize(
    ("csv", "values", "shown"),
    [
        (True, ["old", "old", None, "old"], "(text)"),  # CSV: never a long; empty = None
        (True, ["3.5", "x", "2.5"], "(text)"),
        (False, ["old", None, "older"], "(string)"),  # Parquet: a text column
        (False, [1.5, 2.5, None], "(double)"),  # Parquet: floats that are never integers
    ],
)
def test_a_column_none_of_whose_values_convert_is_a_whole_file_error_in_csv_and_parquet(
    csv: bool, values: list, shown: str
) -> None:
    columns = [Column("age", "long")]  # required: missing cells must not hide the rule
    with pytest.raises(InvalidInputError) as caught:
        check(batch_of(age=pa.array(values)), columns, csv=csv, first=True)
    message = str(caught.value)
    assert f"column 'age' is of the wrong type {shown}" in message
    assert "expects long, e.g. row 100 holds " + repr(values[0]) in message
    assert "\n" not in message


def test_one_convertible_value_makes_the_bad_ones_row_rejects_naming_the_value() -> None:
    long_text = "y" * 100
    columns = [Column("age", "long"), Column("income", "double")]
    chunk = check(
        batch_of(
            age=pa.array(["41", "x", "3.5", None, long_text]),  # the reader: "" is None
            income=pa.array(["1", "2", "3", "4", "5"]),
        ),
        columns,
        csv=True,
        first=True,
    )
    assert chunk.valid.tolist() == [True, False, False, False, False]
    reasons = {row: reason for row, (_, _, reason) in chunk.reasons.items()}
    # the service's CSV words plus the cell, not the "got null" its parsed null would give
    assert reasons[1] == "Column 'age' row 101: expected long, got a value that is not one ('x')."
    assert reasons[2] == (
        "Column 'age' row 102: expected long, got a value that is not one ('3.5')."
    )
    assert reasons[3].startswith("Column 'age' row 103: expected long, got null.")
    assert "'yyyy" in reasons[4] and "…" in reasons[4] and long_text not in reasons[4]


def test_parquet_reasons_show_the_value_too() -> None:
    chunk = check(batch_of(n=pa.array([1.0, 2.5])), [Column("n", "long")])
    assert chunk.reasons[1][2].startswith(
        "Column 'n' row 101: expected integer, got number (2.5). Send integer values"
    )
