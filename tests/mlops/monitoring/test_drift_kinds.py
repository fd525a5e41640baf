"""Column kinds come from the reference, never from how a file was read (issue 8, items 1 and 7)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlops_pipeline.monitoring.captures import read_capture_files
from mlops_pipeline.monitoring.drift import DriftConfig, compare_frames
from mlops_pipeline.monitoring.profile import (
    ColumnKind,
    cast_to_kind,
    category_key,
    infer_kind,
    profile_frame,
)
from mlops_pipeline.monitoring.tables import read_table_file
from mlops_pipeline.monitoring.validation import build_expectation_suite
from mlops_pipeline.tasks.capture import summarise_window
from mlops_pipeline.tasks.monitoring import detect_drift, validate_captures
from mlops_pipeline.tasks.registry import load_reference_data

WORDS = ["north", "south", "east", "west", "centre"]


def by_name(verdict: dict) -> dict[str, dict]:
    return {f["name"]: f for f in verdict["features"]}


def test_one_blank_cell_does_not_turn_integer_levels_into_new_categories(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pd.DataFrame({"rooms": rng.integers(1, 6, 3_000)}).to_csv(tmp_path / "ref.csv", index=False)
    current = pd.DataFrame({"rooms": rng.integers(1, 6, 2_000).astype(float)})
    current.loc[7, "rooms"] = np.nan
    current.to_csv(tmp_path / "cur.csv", index=False)
    reference, current = (
        read_table_file(tmp_path / "ref.csv"),
        read_table_file(tmp_path / "cur.csv"),
    )
    assert current["rooms"].dtype == "float64"  # what pandas made of the blank

    rooms = by_name(compare_frames(reference, current))["rooms"]

    assert rooms["status"] == "ok" and rooms["drifted"] is False
    assert rooms["method"] == "chi2+psi" and rooms["kind"] == "numeric" and rooms["integer"]
    assert rooms["unseen_share"] == 0.0 and rooms["unseen_values"] == []
    assert rooms["psi"] < 0.01
    assert set(rooms["plot"]["categories"]) == {"1", "2", "3", "4", "5"}


def test_kinds_are_inferred_from_values_not_dtypes() -> None:
    assert infer_kind(pd.Series([1.0, np.nan, 3.0])) == ColumnKind("numeric", integer=True)
    assert infer_kind(pd.Series([1, None, 3], dtype="Int64")) == ColumnKind("numeric", True)
    assert infer_kind(pd.Series([1.5, 2.0])) == ColumnKind("numeric", integer=False)
    assert infer_kind(pd.Series([True, None, False], dtype=object)).kind == "boolean"
    assert infer_kind(pd.Series(["2026-01-01 10:00:00", None])).kind == "datetime"
    assert infer_kind(pd.Series(["1", "2", None])) == ColumnKind("numeric", integer=True)
    assert infer_kind(pd.Series(["a", "b"])).kind == "categorical"
    assert infer_kind(pd.Series(["true", "False", None])).kind == "boolean"
    assert infer_kind(pd.Series(["yes", "no"])).kind == "categorical"
    assert category_key(1.0) == category_key(1) == category_key(np.int64(1)) == "1"
    assert category_key(True) == "True" and category_key(2.5) == "2.5"


def test_values_that_cannot_be_cast_are_invalid_never_new_categories() -> None:
    cast = cast_to_kind(
        pd.Series([True, "false", 1, "maybe", None], dtype=object), ColumnKind("boolean")
    )
    assert cast.values.tolist()[:3] == [True, False, True]
    assert cast.invalid.tolist() == [False, False, False, True, False]
    assert cast.missing.tolist() == [False, False, False, False, True]

    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"flag": rng.random(2_000) < 0.3, "x": rng.normal(size=2_000)})
    current = pd.DataFrame(
        {
            "flag": (rng.random(1_000) < 0.3).astype(object),
            "x": rng.normal(size=1_000).astype(object),
        }
    )
    current.loc[:4, "flag"] = "maybe"  # 0.5 %: invalid, below the 1 % incompatibility threshold
    current.loc[:4, "x"] = "n/a"

    features = by_name(compare_frames(reference, current))

    for name in ("flag", "x"):
        assert features[name]["n_invalid"] == 5 and features[name]["status"] == "ok"
        assert features[name]["n_current"] == 995
    assert features["flag"]["unseen_share"] == 0.0 and features["flag"]["unseen_values"] == []


def test_unreadable_columns_are_incompatible_and_the_verdict_says_so() -> None:
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"x": rng.normal(size=1_000), "y": rng.normal(size=1_000)})
    current = pd.DataFrame({"x": ["a"] * 1_000, "y": rng.normal(size=1_000)})

    verdict = compare_frames(reference, current)

    assert verdict["status"] == "incompatible" and verdict["incompatible"] == ["x"]
    assert verdict["drift"] is False and verdict["summary"]["incompatible"] == 1
    x = by_name(verdict)["x"]
    assert x["status"] == "incompatible" and "100.0% of current values" in x["reason"]
    assert "'a'" in x["reason"] and "numeric" in x["reason"]


def test_a_rejected_request_in_the_capture_gives_no_drift(tmp_path: Path) -> None:
    """600 in-distribution rows plus one request the service rejected (400): its null cells
    make pyarrow hand back integer features and the class prediction as floats."""
    rng = np.random.default_rng(3)
    reference = pd.DataFrame(
        {
            "rooms": rng.integers(1, 6, 5_000),
            "area": rng.normal(80.0, 20.0, 5_000),
            "city": rng.choice(WORDS, 5_000),
            "prediction": rng.integers(0, 3, 5_000),
        }
    )
    profile = profile_frame(reference)
    features = ["rooms", "area", "city"]
    n = 600
    scored = {
        "rooms": pa.array(rng.integers(1, 6, n)),
        "area": pa.array(rng.normal(80.0, 20.0, n)),
        "city": pa.array(rng.choice(WORDS, n)),
        "prediction": pa.array(rng.integers(0, 3, n)),
        "_request_id": pa.array([f"ok-{i // 10}" for i in range(n)]),
        "_row": pa.array(np.arange(n) % 10),
        "_ts": pa.array([dt.datetime(2026, 3, 1, tzinfo=dt.UTC)] * n, pa.timestamp("us", "UTC")),
        "_status": pa.array([200] * n, pa.int32()),
    }
    rejected = {name: pa.nulls(1, column.type) for name, column in scored.items()}
    rejected |= {
        "_request_id": pa.array(["bad"]),
        "_ts": pa.array([dt.datetime(2026, 3, 1, tzinfo=dt.UTC)], pa.timestamp("us", "UTC")),
        "_status": pa.array([400], pa.int32()),
    }
    path = tmp_path / "model=m/version=1/date=2026-03-01/part-20260301T000000Z-a.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.concat_tables([pa.table(scored), pa.table(rejected)]), path)
    kinds = {"rooms": "numeric", "area": "numeric", "city": "categorical"}

    batch = read_capture_files(str(tmp_path), [str(path.relative_to(tmp_path))], kinds)
    window, stats = summarise_window.fn(batch, features)
    assert window["rooms"].dtype == "float64" and window["prediction"].dtype == "float64"
    verdict = detect_drift.fn(
        reference,
        window,
        columns=[*features, "prediction"],
        prediction_columns=["prediction"],
        config=DriftConfig(min_samples=100),
        profile=profile,
    )
    suite = build_expectation_suite(profile, "m")
    validation = validate_captures.fn(window, features, suite, [], tmp_path / "docs", profile)

    assert stats["rows_scored"] == 600 and stats["rows_rejected"] == 1
    assert verdict["drift"] is False and verdict["status"] == "ok", verdict["drifted"]
    assert {f["name"]: f["method"] for f in verdict["features"]} == {
        "rooms": "chi2+psi",
        "area": "ks+psi",
        "city": "chi2+psi",
        "prediction": "chi2+psi",
    }
    assert all(f["unseen_share"] == 0.0 for f in verdict["features"])
    assert validation["success"] is True and validation["failures"] == []


def test_validation_counts_uncastable_values_as_invalid(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"rooms": rng.integers(1, 6, 1_000)})
    profile = profile_frame(reference)
    current = pd.DataFrame({"rooms": rng.integers(1, 6, 200).astype(object)})
    current.loc[:9, "rooms"] = "many"

    validation = validate_captures.fn(
        current, ["rooms"], build_expectation_suite(profile, "m"), [], tmp_path, profile
    )

    assert validation["success"] is False
    cast = next(f for f in validation["failures"] if f["expectation"] == "cast_to_reference_kind")
    assert cast["column"] == "rooms" and cast["unexpected_percent"] == pytest.approx(5.0)
    assert cast["partial_unexpected"] == ["many"]


def close(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return got == pytest.approx(want, rel=1e-9, abs=1e-12)


def write_both(frame: pd.DataFrame, directory: Path, name: str) -> dict[str, Path]:
    paths = {"csv": directory / f"{name}.csv", "parquet": directory / f"{name}.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    return paths


def field_frame(seed: int, n: int, missing: float, levels: int, tz: bool, shift: float):
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC" if tz else None)
    frame = pd.DataFrame(
        {
            "integer": pd.array(rng.integers(0, levels, n), dtype="Int64"),
            "boolean": pd.array(rng.random(n) < 0.3 + shift, dtype="boolean"),
            "category": rng.choice(WORDS, n),
            "number": np.round(rng.normal(shift, 1.0, n), int(rng.integers(0, 6))),
            "datetime": start + pd.to_timedelta(rng.integers(0, 86_400 * 30, n), unit="s"),
        }
    )
    if missing:
        for name in frame.columns:
            frame.loc[rng.random(n) < missing, name] = None
    return frame


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ref=st.integers(60, 400),
    n_cur=st.integers(60, 400),
    missing_ref=st.sampled_from([0.0, 0.05, 0.3]),
    missing_cur=st.sampled_from([0.0, 0.05, 0.3]),
    levels=st.sampled_from([2, 5, 40]),
    tz=st.booleans(),
    shift=st.sampled_from([0.0, 0.3]),
)
def test_the_same_data_as_csv_or_parquet_gives_the_same_verdict(
    tmp_path_factory, seed, n_ref, n_cur, missing_ref, missing_cur, levels, tz, shift
) -> None:
    directory = tmp_path_factory.mktemp("same")
    reference = write_both(field_frame(seed, n_ref, missing_ref, levels, tz, 0.0), directory, "ref")
    current = write_both(
        field_frame(seed + 1, n_cur, missing_cur, levels, tz, shift), directory, "cur"
    )
    config = DriftConfig(min_samples=30)

    verdicts = {
        (r, c): compare_frames(
            read_table_file(reference[r]), read_table_file(current[c]), config=config
        )
        for r in ("csv", "parquet")
        for c in ("csv", "parquet")
    }

    expected = verdicts["parquet", "parquet"]
    keys = ("kind", "integer", "status", "drifted", "drifted_by", "method", "n_current")
    for formats, verdict in verdicts.items():
        assert verdict["status"] == expected["status"], formats
        assert verdict["drifted"] == expected["drifted"], formats
        for got, want in zip(verdict["features"], expected["features"], strict=True):
            assert {k: got[k] for k in keys} == {k: want[k] for k in keys}, (formats, got["name"])
            for key in ("p_value", "psi", "wasserstein_sd"):
                assert close(got[key], want[key]), (formats, got["name"], key)
            for key in ("reference", "current", "p_value"):
                assert close(got["null_rate"][key], want["null_rate"][key]), (formats, key)


def test_a_byte_order_mark_is_ignored_by_every_reader(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5], "y": ["a", "b", "c"]})
    single = tmp_path / "single.csv"
    single.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False).encode())
    double = tmp_path / "double.csv"  # a file saved twice by a spreadsheet
    double.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf" + frame.to_csv(index=False).encode())
    marked = tmp_path / "marked.parquet"
    frame.rename(columns={"x": "\ufeffx"}).to_parquet(marked)

    for path in (single, double, marked):
        assert list(read_table_file(path).columns) == ["x", "y"], path
        assert list(load_reference_data.fn(str(path)).columns) == ["x", "y"], path
    verdict = compare_frames(read_table_file(double), frame, config=DriftConfig(min_samples=1))
    assert [f["name"] for f in verdict["features"]] == ["x", "y"]

    capture = tmp_path / "capture"
    rel = "model=m/version=1/date=2026-03-01/part-20260301T000000Z-a.parquet"
    (capture / rel).parent.mkdir(parents=True)
    table = pa.table(
        {
            "\ufeffx": [1.5, 2.5],
            "_request_id": ["r", "r"],
            "_row": [0, 1],
            "_ts": pa.array([dt.datetime(2026, 3, 1, tzinfo=dt.UTC)] * 2),
            "_status": pa.array([200, 200], pa.int32()),
        }
    )
    pq.write_table(table, capture / rel)
    batch = read_capture_files(str(capture), [rel], {"x": "numeric"})
    assert batch.quarantined == [] and batch.frame["x"].tolist() == [1.5, 2.5]
