"""Drift statistics: no alarms on same-distribution data, exact columns flagged on real shifts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlops_pipeline.errors import InvalidInputError, NotFoundError
from mlops_pipeline.monitoring.drift import (
    DriftConfig,
    compare_frames,
)
from mlops_pipeline.monitoring.drift_stats import ks_statistic
from mlops_pipeline.monitoring.tables import read_table_file
from mlops_pipeline.tasks.monitoring import detect_drift
from scipy import stats

SEEDS = [0, 1, 2, 3, 4, 5, 6, 7]
CITIES = ["paris", "oslo", "rome", "lima"]
CITY_P = [0.4, 0.3, 0.2, 0.1]


def make(
    rng: np.random.Generator,
    n: int,
    *,
    shift: dict[str, float] | None = None,
    city_p: list[float] | None = None,
    new_city_share: float = 0.0,
    prediction_shift: float = 0.0,
) -> pd.DataFrame:
    """Six numeric columns of different shapes, two categoricals, a boolean and predictions;
    `shift` moves numeric columns by that many standard deviations."""
    shift = shift or {}
    frame = pd.DataFrame(
        {
            "normal": rng.normal(0.0, 1.0, n) + shift.get("normal", 0.0),
            "wide": rng.normal(100.0, 15.0, n) + 15.0 * shift.get("wide", 0.0),
            "skewed": rng.lognormal(0.0, 0.5, n),
            "gamma": rng.gamma(2.0, 2.0, n) + 2.0 * np.sqrt(2.0) * shift.get("gamma", 0.0),
            "uniform": rng.uniform(-1.0, 1.0, n),
            "count": rng.poisson(30.0, n),
            "city": rng.choice(CITIES, n, p=city_p or CITY_P),
            "plan": rng.choice(["free", "pro"], n, p=[0.7, 0.3]),
            "member": rng.random(n) < 0.3,
            "prediction": rng.normal(0.5, 0.1, n) + 0.1 * prediction_shift,
        }
    )
    if new_city_share:
        frame.loc[rng.random(n) < new_city_share, "city"] = "tokyo"
    return frame


def verdict(reference: pd.DataFrame, current: pd.DataFrame, **config) -> dict:
    return detect_drift.fn(
        reference, current, prediction_columns=["prediction"], config=DriftConfig(**config)
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_same_distribution_raises_no_alarm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    result = verdict(make(rng, 20_000), make(rng, 3_000))

    assert result["drift"] is False, result["drifted"]
    assert {f["status"] for f in result["features"]} == {"ok"}
    assert result["summary"]["tested"] == 10


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_large_samples_do_not_flag_trivial_differences(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    result = verdict(make(rng, 100_000), make(rng, 400_000, shift={"normal": 0.02, "wide": 0.02}))

    assert result["drift"] is False, result["drifted"]
    normal = next(f for f in result["features"] if f["name"] == "normal")
    # significant but tiny: the effect-size gate is what keeps it quiet
    assert normal["p_value"] < 0.05 and normal["distance"] < 0.05


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1_500, 4_000])
def test_quarter_sd_mean_shift_flags_exactly_the_shifted_columns(seed: int, n: int) -> None:
    rng = np.random.default_rng(200 + seed)
    shifted = {"normal": 0.25, "gamma": 0.25}

    result = verdict(make(rng, 20_000), make(rng, n, shift=shifted))

    assert set(result["drifted"]) == set(shifted)
    assert result["drift"] is True


@pytest.mark.parametrize("seed", SEEDS)
def test_new_category_flags_only_that_column(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)

    result = verdict(make(rng, 20_000), make(rng, 3_000, new_city_share=0.03))

    assert result["drifted"] == ["city"]
    city = next(f for f in result["features"] if f["name"] == "city")
    assert city["unseen_share"] == pytest.approx(0.03, abs=0.012)
    assert city["unseen_values"] == ["tokyo"]
    assert city["method"] == "chi2+psi"


@pytest.mark.parametrize("seed", SEEDS)
def test_changed_category_proportions_flag_only_that_column(seed: int) -> None:
    rng = np.random.default_rng(400 + seed)

    result = verdict(make(rng, 20_000), make(rng, 3_000, city_p=[0.3, 0.3, 0.25, 0.15]))

    assert result["drifted"] == ["city"]


@pytest.mark.parametrize("seed", SEEDS)
def test_shifted_predictions_flag_only_the_prediction(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)

    result = verdict(make(rng, 20_000), make(rng, 3_000, prediction_shift=0.3))

    assert result["drifted"] == ["prediction"]
    prediction = next(f for f in result["features"] if f["name"] == "prediction")
    assert prediction["role"] == "prediction"


def test_drifted_columns_are_ranked_by_severity() -> None:
    rng = np.random.default_rng(7)
    shifted = {"normal": 1.0, "wide": 0.3}

    result = verdict(make(rng, 20_000), make(rng, 3_000, shift=shifted))

    assert result["drifted"] == ["normal", "wide"]


def test_small_samples_are_insufficient_data_never_drift() -> None:
    rng = np.random.default_rng(8)
    result = verdict(make(rng, 20_000), make(rng, 200, shift={"normal": 3.0}))

    assert result["drift"] is False
    assert {f["status"] for f in result["features"]} == {"insufficient_data"}
    assert all(f["p_value"] is None for f in result["features"])
    assert result["summary"]["insufficient_data"] == 10


def test_null_values_do_not_count_towards_the_minimum_sample() -> None:
    rng = np.random.default_rng(9)
    current = make(rng, 1_000)
    current.loc[100:, "normal"] = np.nan

    result = verdict(make(rng, 20_000), current)

    statuses = {f["name"]: f["status"] for f in result["features"]}
    normal = next(f for f in result["features"] if f["name"] == "normal")
    # too few values for a distribution test, but 90 % blanks is itself drift
    assert normal["p_value"] is None and "100 non-null values" in normal["reason"]
    assert normal["status"] == "drift" and normal["method"] == "null_rate"
    assert normal["drifted_by"] == ["null_rate"]
    assert statuses["wide"] == "ok"


def test_per_feature_thresholds_override_the_defaults() -> None:
    rng = np.random.default_rng(10)
    reference, current = make(rng, 20_000), make(rng, 4_000, shift={"normal": 0.25, "wide": 0.25})
    config = DriftConfig.parse(
        {"features": {"wide": {"psi": 5.0, "distance": 0.5, "wasserstein": 1.0}}}
    )

    result = detect_drift.fn(reference, current, config=config)

    assert result["drifted"] == ["normal"]
    wide = next(f for f in result["features"] if f["name"] == "wide")
    assert wide["thresholds"]["distance"] == 0.5 and wide["p_value"] < 1e-6


def test_holm_and_benjamini_hochberg_corrections() -> None:
    rng = np.random.default_rng(11)
    reference, current = make(rng, 20_000), make(rng, 3_000, shift={"normal": 0.25})

    holm = compare_frames(reference, current, config=DriftConfig(correction="holm"))
    bh = compare_frames(reference, current, config=DriftConfig(correction="bh"))

    for result in (holm, bh):
        assert result["drifted"] == ["normal"]
        for f in result["features"]:
            assert f["p_value"] >= f["p_value_raw"]
    raw = np.array([f["p_value_raw"] for f in holm["features"]])
    assert np.allclose([f["p_value"] for f in bh["features"]], stats.false_discovery_control(raw))
    smallest = int(np.argmin(raw))
    assert holm["features"][smallest]["p_value"] == pytest.approx(min(1.0, raw[smallest] * 10))


def test_ks_statistic_matches_scipy() -> None:
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=3_000), rng.normal(0.1, 1.0, 5_000).round(1)

    expected = stats.ks_2samp(a, b, method="asymp")

    assert ks_statistic(np.sort(a), np.sort(b)) == pytest.approx(expected.statistic)
    result = compare_frames(
        pd.DataFrame({"x": a}), pd.DataFrame({"x": b}), config=DriftConfig(min_samples=10)
    )
    assert result["features"][0]["p_value_raw"] == pytest.approx(expected.pvalue, rel=1e-6)


def test_few_level_integers_and_booleans_use_chi_squared() -> None:
    rng = np.random.default_rng(13)
    reference = pd.DataFrame({"grade": rng.integers(0, 5, 5_000), "flag": rng.random(5_000) < 0.5})
    current = pd.DataFrame({"grade": rng.integers(0, 6, 3_000), "flag": rng.random(3_000) < 0.5})

    result = compare_frames(reference, current)

    methods = {f["name"]: f["method"] for f in result["features"]}
    assert methods == {"grade": "chi2+psi", "flag": "chi2+psi"}
    assert result["drifted"] == ["grade"]  # level 5 never appeared in the reference


def test_type_mismatch_and_datetimes_are_reported_not_tested() -> None:
    rng = np.random.default_rng(14)
    reference = pd.DataFrame(
        {"x": rng.normal(size=1_000), "t": pd.date_range("2026-01-01", periods=1_000, freq="s")}
    )
    current = pd.DataFrame(
        {"x": ["a"] * 1_000, "t": pd.date_range("2026-02-01", periods=1_000, freq="s")}
    )

    result = compare_frames(reference, current)

    statuses = {f["name"]: f["status"] for f in result["features"]}
    assert statuses == {"x": "incompatible", "t": "skipped"}
    assert result["drift"] is False


def test_no_common_columns_and_bad_settings_are_input_errors() -> None:
    with pytest.raises(InvalidInputError, match="no columns in common"):
        compare_frames(pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [1]}))
    with pytest.raises(InvalidInputError, match=r"unknown setting\(s\) \['alhpa'\]"):
        DriftConfig.parse({"alhpa": 0.1})
    with pytest.raises(InvalidInputError, match=r"unknown setting\(s\) \['features.a.psii'\]"):
        DriftConfig.parse({"features": {"a": {"psii": 1}}})
    with pytest.raises(InvalidInputError, match="'correction' is 'bonferroni'.*'bh' or 'holm'"):
        DriftConfig.parse({"correction": "bonferroni"})


def test_read_table_file_names_the_bad_file(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    pd.DataFrame({"a": [1, 2]}).to_csv(good, index=False)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not parquet at all")
    text = tmp_path / "data.json"
    text.write_text("{}")

    assert list(read_table_file(good)["a"]) == [1, 2]
    with pytest.raises(NotFoundError, match="missing.csv"):
        read_table_file(tmp_path / "missing.csv")
    with pytest.raises(InvalidInputError, match="corrupt.parquet"):
        read_table_file(corrupt)
    with pytest.raises(InvalidInputError, match="neither CSV nor Parquet"):
        read_table_file(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-20, 20), min_size=1, max_size=60),
    st.lists(st.integers(-20, 20), min_size=1, max_size=60),
)
def test_ks_statistic_is_exact_with_ties_and_any_sizes(a: list[int], b: list[int]) -> None:
    left, right = np.sort(np.array(a, float) / 4), np.sort(np.array(b, float) / 4)

    with np.errstate(divide="ignore"):  # scipy's p-value for one-element samples; D is fine
        expected = stats.ks_2samp(left, right, method="asymp").statistic

    assert ks_statistic(left, right) == pytest.approx(expected, abs=1e-12)
    assert ks_statistic(right, left) == pytest.approx(expected, abs=1e-12)
