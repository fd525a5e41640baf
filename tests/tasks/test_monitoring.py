"""Monitor plumbing: drift episodes and cool-down, model outputs, deployment resolution."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.errors import InvalidInputError, NotFoundError
from mlops_pipeline.monitoring.episodes import next_episode
from mlops_pipeline.monitoring.reference import MonitorTarget, prediction_frame
from mlops_pipeline.state import read_drift_episode
from mlops_pipeline.tasks.monitoring import (
    load_reference,
    resolve_target,
    signal_drift,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
DRIFT = {"drift": True, "drifted": ["x"], "summary": {"tested": 3}, "features": []}
QUIET = {"drift": False, "drifted": [], "summary": {"tested": 3}, "features": []}
NO_DATA = {"drift": False, "drifted": [], "summary": {"tested": 0}, "features": []}


def test_one_drift_episode_signals_once_until_it_closes_or_cools_down() -> None:
    action, episode = next_episode({}, DRIFT, "3", NOW, 24)
    assert action == "emit" and episode["version"] == "3"
    state = {"episode": episode | {"event_id": "e1"}}

    later = NOW + dt.timedelta(hours=5)
    assert next_episode(state, DRIFT, "3", later, 24) == ("cool-down", None)
    # a window without enough data neither closes nor re-opens the episode
    assert next_episode(state, NO_DATA, "3", later, 24) == ("none", None)
    assert next_episode(state, QUIET, "3", later, 24) == ("close", None)

    action, renewed = next_episode(state, DRIFT, "3", NOW + dt.timedelta(hours=25), 24)
    assert action == "emit" and renewed["started_at"] == episode["started_at"]
    assert renewed["id"] == episode["id"]  # the same episode, so the same idempotency key
    # the redeployed version starts a new episode straight away
    action, fresh = next_episode(state, DRIFT, "4", later, 24)
    assert action == "emit" and fresh["version"] == "4" and fresh["id"] != episode["id"]
    assert next_episode({}, QUIET, "3", NOW, 24) == ("none", None)


def test_without_a_prefect_api_drift_is_returned_but_not_signalled(mlops_home) -> None:
    target = MonitorTarget("dep", "/tmp/capture", "m", "1")
    with temporary_settings(updates={PREFECT_API_URL: None}):
        result = signal_drift.fn(target, DRIFT, "/tmp/report.html")

    assert result["emitted"] is False and "PREFECT_API_URL" in result["reason"]
    assert read_drift_episode("dep") == {"episode": None, "closed_at": None}


def test_model_outputs_become_capture_style_prediction_columns() -> None:
    index = pd.RangeIndex(3)

    assert list(prediction_frame(np.array([1, 0, 1]), index).columns) == ["prediction"]
    assert list(prediction_frame(pd.DataFrame({"p": [1, 2, 3]}), index).columns) == ["prediction"]
    two = prediction_frame(pd.DataFrame({"a": [1, 2, 3], "b": [0, 0, 1]}), index)
    assert list(two.columns) == ["prediction.a", "prediction.b"]
    assert list(prediction_frame(np.zeros((3, 2)), index).columns) == [
        "prediction.0",
        "prediction.1",
    ]


def test_explicit_overrides_and_clear_errors(mlops_home, registered_model) -> None:
    target = resolve_target.fn("dep", capture_uri="/data/cap", model_uri="models:/iris@champion")
    assert (target.model_name, target.model_version) == ("iris", registered_model["version"])
    assert target.model_uri == f"models:/iris/{registered_model['version']}"

    with pytest.raises(InvalidInputError, match="models:/NAME/VERSION"):
        resolve_target.fn("dep", capture_uri="/data/cap", model_uri="runs:/abc/model")
    with pytest.raises(InvalidInputError, match="does not capture"):
        resolve_target.fn("dep", model_uri="models:/iris/1")
    with pytest.raises(NotFoundError, match="No deployment named 'ghost'"):
        resolve_target.fn("ghost")


def test_reference_bundle_comes_from_the_registered_version(mlops_home, registered_model):
    bundle = load_reference.fn("iris", registered_model["version"])

    assert len(bundle.frame) == 150
    assert bundle.profile["n_rows"] == 150
    assert bundle.suite["expectations"]
    with pytest.raises(NotFoundError, match="does not exist"):
        load_reference.fn("iris", "99")


def test_direct_mode_publishes_nothing_even_with_a_prefect_api_configured(mlops_home) -> None:
    from mlops_pipeline.monitoring.results import DriftVerdict, ValidationResult
    from mlops_pipeline.tasks.monitoring import publish_artifacts

    target = MonitorTarget("dep", "/tmp/capture", "m", "1")
    # an API that nothing listens on: creating an artifact or event there would fail loudly
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        published = publish_artifacts(
            target, DriftVerdict.coerce(DRIFT), ValidationResult(success=True), "/tmp/r.html"
        )
        signal = signal_drift(target, DRIFT, "/tmp/report.html")

    assert published is False
    assert signal["emitted"] is False and "not in a Prefect run" in signal["reason"]
    assert read_drift_episode("dep")["episode"] is None
