"""Reference profiles: JSON-safe statistics per column kind."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from mlops_pipeline.monitoring.profile import MAX_CATEGORIES, profile_frame


def test_profile_numeric_categorical_boolean_datetime_columns() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(
        {
            "x": rng.normal(10.0, 2.0, n),
            "k": rng.integers(0, 50, n),
            "city": rng.choice(["paris", "oslo", "rome"], n, p=[0.5, 0.3, 0.2]),
            "flag": rng.random(n) < 0.25,
            "when": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
        }
    )
    frame.loc[:199, "x"] = np.nan

    profile = json.loads(json.dumps(profile_frame(frame)))

    assert profile["n_rows"] == n
    assert len(profile["quantile_levels"]) == 101
    x = profile["columns"]["x"]
    assert x["kind"] == "numeric" and x["integer"] is False
    assert x["null_rate"] == 0.1
    assert len(x["quantiles"]) == 101
    assert x["quantiles"] == sorted(x["quantiles"])
    assert x["quantiles"][0] == x["min"] and x["quantiles"][-1] == x["max"]
    assert abs(x["mean"] - 10.0) < 0.2 and abs(x["std"] - 2.0) < 0.2
    assert profile["columns"]["k"]["integer"] is True
    city = profile["columns"]["city"]
    assert city["kind"] == "categorical"
    assert set(city["categories"]) == {"paris", "oslo", "rome"}
    assert abs(sum(city["categories"].values()) - 1.0) < 1e-9
    assert abs(city["categories"]["paris"] - 0.5) < 0.05
    assert profile["columns"]["flag"]["kind"] == "boolean"
    assert set(profile["columns"]["flag"]["categories"]) == {"True", "False"}
    when = profile["columns"]["when"]
    assert when["kind"] == "datetime" and when["min"].startswith("2026-01-01")


def test_category_frequencies_are_capped_with_the_rest_as_other_rate() -> None:
    values = [f"c{i}" for i in range(MAX_CATEGORIES + 50)] * 3 + ["c0"] * 100
    profile = profile_frame(pd.DataFrame({"c": values}))["columns"]["c"]

    assert len(profile["categories"]) == MAX_CATEGORIES
    assert profile["n_unique"] == MAX_CATEGORIES + 50
    assert profile["categories"]["c0"] == max(profile["categories"].values())
    assert abs(sum(profile["categories"].values()) + profile["other_rate"] - 1.0) < 1e-9
    assert profile["other_rate"] > 0


def test_empty_and_all_null_columns_do_not_break_the_profile() -> None:
    frame = pd.DataFrame({"x": [np.nan, np.nan], "s": pd.Series([None, None], dtype=object)})
    profile = profile_frame(frame)

    assert profile["columns"]["x"]["quantiles"] is None
    assert profile["columns"]["x"]["null_rate"] == 1.0
    assert profile["columns"]["s"]["categories"] == {}
    json.dumps(profile)


def test_the_profile_records_kinds_from_values_so_csv_and_parquet_agree(tmp_path) -> None:
    from mlops_pipeline.monitoring.tables import read_table_file

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "rooms": pd.array(rng.integers(1, 6, 300), dtype="Int64"),
            "owner": pd.array(rng.random(300) < 0.5, dtype="boolean"),
            "city": rng.choice(["paris", "oslo"], 300),
            "since": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 10**6, 300), unit="s"),
        }
    )
    frame.loc[::7] = None
    frame.to_csv(tmp_path / "data.csv", index=False)
    frame.to_parquet(tmp_path / "data.parquet")

    profiles = [profile_frame(read_table_file(tmp_path / f"data.{s}")) for s in ("csv", "parquet")]

    for profile in profiles:
        columns = profile["columns"]
        assert {name: c["kind"] for name, c in columns.items()} == {
            "rooms": "numeric",
            "owner": "boolean",
            "city": "categorical",
            "since": "datetime",
        }
        assert columns["rooms"]["integer"] is True
        assert set(columns["owner"]["categories"]) == {"True", "False"}
    csv, parquet = (p["columns"] for p in profiles)
    for name in ("rooms", "owner", "city"):
        assert {k: v for k, v in csv[name].items() if k != "dtype"} == {
            k: v for k, v in parquet[name].items() if k != "dtype"
        }
    assert csv["since"]["min"] == parquet["since"]["min"]
