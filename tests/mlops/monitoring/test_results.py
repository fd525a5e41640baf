"""Typed results: what drift, validation and the monitor return, and the JSON they become."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.monitoring.drift import compare_frames, json_safe
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.monitoring.results import (
    BarPlot,
    DriftSignal,
    DriftVerdict,
    FeatureDrift,
    HistogramPlot,
    MonitoredFeature,
    MonitorResult,
    NullRateTest,
    QuarantinedFile,
    ValidationResult,
    WindowStats,
)
from pydantic import ValidationError


@pytest.fixture(scope="module")
def verdict() -> DriftVerdict:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "x": rng.normal(size=3000),
            "city": rng.choice(["a", "b"], 3000),
            "t": ["2026-01-01"] * 3000,
        }
    )
    current = pd.DataFrame(
        {
            "x": rng.normal(1.0, 1.0, 2000),
            "city": rng.choice(["a", "b"], 2000),
            "t": ["2026-02-01"] * 2000,
        }
    )
    current.loc[:99, "city"] = None
    return compare_frames(reference, current, config=DriftConfig(alpha=0.05))


def test_drift_returns_typed_columns_with_their_kind_specific_fields(verdict) -> None:
    x, city, t = (verdict.feature(name) for name in ("x", "city", "t"))

    assert isinstance(verdict, DriftVerdict) and verdict.drifted[0] == "x"
    assert isinstance(x, FeatureDrift) and x.drifted and x.drifted_by == ["distribution"]
    assert isinstance(x.plot, HistogramPlot) and len(x.plot.edges) == len(x.plot.reference) + 1
    assert x.wasserstein_sd == pytest.approx(1.0, abs=0.15) and x.unseen_values is None
    assert isinstance(city.plot, BarPlot) and city.unseen_values == []
    assert isinstance(city.null_rate, NullRateTest) and city.null_rate.current == 0.05
    assert t.status == "skipped" and t.plot is None and t.reason
    assert verdict.config == DriftConfig(alpha=0.05)
    assert verdict.summary.columns == 3 and verdict.summary.n_current == 2000
    with pytest.raises(KeyError):
        verdict.feature("nope")


def test_the_json_keeps_its_shape_and_reads_back_equal(verdict) -> None:
    data = json.loads(verdict.model_dump_json())

    x, city, t = data["features"]
    # kind-specific fields appear only where they apply, as the dicts always had them
    assert {"mean_shift_sd", "plot"} <= set(x) and "unseen_values" not in x
    assert "unseen_values" in city and "mean_shift_sd" not in city
    assert "plot" not in t and t["reason"]
    assert set(data) == {
        "status",
        "drift",
        "drifted",
        "incompatible",
        "features",
        "summary",
        "config",
    }
    assert data["config"] == DriftConfig(alpha=0.05).to_dict()
    assert DriftVerdict.model_validate(data) == verdict
    assert json_safe(verdict) == data


def test_results_read_like_their_json_and_refuse_unknown_keys(verdict) -> None:
    x = verdict.feature("x")

    assert verdict["drifted"] == verdict.drifted and x["psi"] == x.psi
    assert x.get("unseen_values", []) == [] and x.get("nonsense") is None
    with pytest.raises(KeyError):
        x["nonsense"]
    with pytest.raises(ValidationError):
        FeatureDrift(name="x", kind="numeric", colour="red")
    assert QuarantinedFile(file="a", reason="b") == {"file": "a", "reason": "b"}


def test_non_finite_statistics_become_none() -> None:
    feature = FeatureDrift(name="x", kind="numeric", psi=float("nan"), p_value=float("inf"))

    assert feature.psi is None and feature.p_value is None
    assert json_safe({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}


def test_validation_result_success_follows_failures_when_not_given() -> None:
    assert ValidationResult.coerce({"failed": 0}).success is True
    assert ValidationResult.coerce({"failed": 2, "evaluated": 4}).success is False
    quarantined = ValidationResult.coerce({"quarantined": [{"file": "f", "reason": "r"}]})
    assert quarantined.success is False and quarantined.quarantined[0].file == "f"


def test_drift_signal_json_leaves_out_what_does_not_apply() -> None:
    assert DriftSignal(emitted=True, event_id="e").model_dump() == {
        "emitted": True,
        "event_id": "e",
    }
    assert DriftSignal(emitted=False, reason="no drift").model_dump() == {
        "emitted": False,
        "reason": "no drift",
    }
    cool = DriftSignal(emitted=False, reason="cool-down", event_id="e")
    assert cool.model_dump() == {"emitted": False, "reason": "cool-down", "event_id": "e"}


def test_monitor_result_json_is_what_mlops_monitor_prints(verdict) -> None:
    validation = ValidationResult(success=True, evaluated=3, result={"raw": "gx"})
    header = {"deployment": "d", "model_uri": "models:/m/1", "window": "24h", "files": 2}
    signal = DriftSignal(emitted=False, reason="no drift")

    result = MonitorResult.of_window(
        header, verdict, validation, WindowStats(rows=5), "/r.html", "run", signal
    )
    data = result.model_dump(mode="json")

    assert data["status"] == "drift" and data["drifted"] == verdict.drifted
    assert [f["name"] for f in data["features"]] == ["x", "city", "t"]
    assert set(data["features"][0]) == set(MonitoredFeature.model_fields)
    assert data["features"][0]["reason"] is None and data["features"][2]["reason"]
    assert set(data["validation"]) == {
        "success",
        "failure_rate",
        "failures",
        "quarantined",
        "data_docs",
    }
    assert data["stats"]["rows"] == 5 and data["event"] == {"emitted": False, "reason": "no drift"}
    assert MonitorResult.no_new_data("d", "models:/m/1", "24h").model_dump(mode="json") == {
        "deployment": "d",
        "model_uri": "models:/m/1",
        "window": "24h",
        "files": 0,
        "status": "no_new_data",
        "drift": False,
    }


def test_the_monitoring_domain_never_imports_prefect() -> None:
    modules = [
        "mlops_pipeline.state",
        *(
            f"mlops_pipeline.monitoring.{name}"
            for name in (
                "captures",
                "drift",
                "episodes",
                "publish",
                "reference",
                "report",
                "results",
                "validation",
            )
        ),
    ]
    code = "; ".join(f"import {m}" for m in modules)
    code += "; import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]"
