"""GX 1.x suites built from a reference profile: good data passes, bad data fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring.profile import profile_frame
from mlops_pipeline.monitoring.validation import (
    build_expectation_suite,
    restrict_suite,
    validate_frame,
)
from mlops_pipeline.tasks.monitoring import validate_captures


def make_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n),
            "age": rng.integers(18, 90, n),
            "channel": rng.choice(["web", "store", "phone"], n, p=[0.6, 0.3, 0.1]),
            "member": rng.random(n) < 0.4,
        }
    )


@pytest.fixture(scope="module")
def suite() -> dict:
    return build_expectation_suite(profile_frame(make_frame(0, 5000)), "orders-reference")


def failed(result: dict) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in result["failures"]}


def test_suite_is_json_and_covers_types_nulls_ranges_sets_and_row_count(suite: dict) -> None:
    stored = json.loads(json.dumps(suite))
    kinds = {(e["type"], e["kwargs"].get("column")) for e in stored["expectations"]}

    assert stored["name"] == "orders-reference"
    assert ("expect_table_row_count_to_be_between", None) in kinds
    assert ("expect_table_columns_to_match_set", None) in kinds
    assert ("expect_column_values_to_be_in_type_list", "amount") in kinds
    assert ("expect_column_values_to_be_between", "age") in kinds
    assert ("expect_column_values_to_be_in_set", "channel") in kinds
    assert ("expect_column_values_to_be_in_set", "member") in kinds
    assert ("expect_column_values_to_not_be_null", "channel") in kinds
    between = next(
        e
        for e in stored["expectations"]
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "age"
    )
    # the reference range (18..89) widened by 10 % of its span on both sides
    assert between["kwargs"]["min_value"] == pytest.approx(18 - 7.1)
    assert between["kwargs"]["max_value"] == pytest.approx(89 + 7.1)


def test_good_data_passes_and_builds_data_docs(suite: dict, tmp_path: Path) -> None:
    current = make_frame(1, 3000)
    current["_request_id"] = "r"  # capture metadata columns are allowed alongside features

    result = validate_frame(current, suite, tmp_path / "docs")

    assert result["success"], result["failures"]
    assert result["failure_rate"] == 0.0
    assert result["evaluated"] == len(suite["expectations"])
    assert Path(result["data_docs"]).is_file()
    assert "orders-reference" in Path(result["data_docs"]).read_text()
    json.dumps(result, default=str)


def test_bad_data_fails_with_named_expectations(suite: dict) -> None:
    current = make_frame(2, 3000)
    current.loc[:299, "amount"] = 1e7
    current.loc[:299, "channel"] = "fax"
    current.loc[:599, "age"] = np.nan
    current["member"] = current["member"].astype(str)
    current = current.assign(age=current["age"].astype("Float64"))

    result = validate_frame(current, suite)

    assert not result["success"]
    assert failed(result) >= {
        ("expect_column_values_to_be_between", "amount"),
        ("expect_column_values_to_be_in_set", "channel"),
        ("expect_column_values_to_not_be_null", "age"),
        ("expect_column_values_to_be_in_set", "member"),
    }
    assert 0 < result["failure_rate"] < 1
    assert result["failed"] == len(result["failures"])


def test_missing_column_and_wrong_type_fail(suite: dict) -> None:
    current = make_frame(3, 1000).drop(columns=["channel"])
    current["age"] = current["age"].astype(str)

    result = validate_frame(current, suite)

    assert ("expect_column_to_exist", "channel") in failed(result)
    assert ("expect_table_columns_to_match_set", None) in failed(result)
    assert ("expect_column_values_to_be_in_type_list", "age") in failed(result)


def test_empty_window_fails_row_count(suite: dict) -> None:
    result = validate_frame(make_frame(4, 10).iloc[:0], suite)

    assert ("expect_table_row_count_to_be_between", None) in failed(result)


def test_restrict_suite_drops_columns_the_capture_does_not_carry() -> None:
    reference = make_frame(0, 500).assign(label=1)
    suite = build_expectation_suite(profile_frame(reference), "with-label")
    features = ["amount", "age", "channel", "member"]

    restricted = restrict_suite(suite, features)

    assert validate_frame(make_frame(5, 500), restricted)["success"]
    assert not validate_frame(make_frame(5, 500), suite)["success"]


def test_unknown_columns_and_invalid_suites_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="not in the reference profile"):
        build_expectation_suite(profile_frame(make_frame(0, 50)), "x", columns=["nope"])
    with pytest.raises(InvalidInputError, match="not a GX 1.x suite"):
        validate_frame(make_frame(0, 50), {"name": "x", "expectations": [{"type": "bogus"}]})


def test_window_validation_counts_quarantined_files_as_failures(suite: dict, tmp_path) -> None:
    features = ["amount", "age", "channel", "member"]
    scored = make_frame(6, 800).assign(_status=200, prediction=1)
    quarantined = [{"file": "part-x.parquet", "reason": "unreadable Parquet"}]

    clean = validate_captures.fn(scored, features, suite, [], tmp_path / "a")
    dirty = validate_captures.fn(scored, features, suite, quarantined, tmp_path / "b")
    empty = validate_captures.fn(scored.iloc[:0], features, suite, quarantined, tmp_path / "c")

    assert clean["success"] and clean["quarantined"] == []
    assert not dirty["success"] and dirty["failure_rate"] == 0.0
    assert dirty["quarantined"] == quarantined
    assert not empty["success"] and empty["failure_rate"] == 1.0 and empty["evaluated"] == 0
