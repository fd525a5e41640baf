"""The shadow comparison on captured frames: class predictions and labels compare by value,
whatever type the feedback join leaves them in (found by a new-user trial: labels sent per
request became floats and every labelled row was called wrong)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring.captures import LABEL
from mlops_pipeline.rollout.shadow import as_classes, check_metric_fits, compare_captures
from mlops_pipeline.serving.contract import LATENCY_MS, REQUEST_ID, ROW, STATUS

from tests.mlops.monitoring.capture_support import MODEL, capture_table, write_capture


def captured(predictions: list) -> pd.DataFrame:
    n = len(predictions)
    return pd.DataFrame(
        {
            REQUEST_ID: [f"r{i}" for i in range(n)],
            ROW: [0] * n,
            STATUS: [200] * n,
            LATENCY_MS: [5.0] * n,
            "prediction": predictions,
        }
    )


@pytest.mark.parametrize("per_row", [True, False], ids=["row-level", "request-level"])
def test_labels_sent_per_request_or_per_row_are_compared_by_value(per_row: bool) -> None:
    champion, challenger = captured([0, 1, 2, 1]), captured([0, 1, 2, 2])
    feedback = pd.DataFrame(
        {
            REQUEST_ID: ["r0", "r1", "r2", "r3"],
            ROW: [0, 0, 0, 0] if per_row else [None] * 4,
            LABEL: [0, 1, 2, 1],
        }
    )
    result = compare_captures(champion, challenger, feedback)
    assert result.kind == "classes" and result.paired_rows == 4
    assert result.agreement == 0.75
    assert result.labelled_rows == 4 and result.metric == "accuracy"
    assert result.champion_metric == 1.0 and result.challenger_metric == 0.75


def test_only_mirrored_requests_enter_either_side() -> None:
    # the challenger served a canary before (slow, failing, own ids), and the champion served
    # requests that were not mirrored (a 50 % shadow): neither enters the figures
    champion = captured([0, 1, 2, 1])
    champion.loc[2:, LATENCY_MS] = 50.0  # r2, r3: not mirrored
    own = captured([1] * 6).assign(**{REQUEST_ID: [f"canary-{i}" for i in range(6)]})
    own[STATUS], own[LATENCY_MS] = 422, 900.0
    challenger = pd.concat([captured([0, 1]), own], ignore_index=True)

    result = compare_captures(champion, challenger)

    assert result.champion_requests == result.challenger_requests == 2
    assert result.champion_rows == result.challenger_rows == result.paired_rows == 2
    assert result.champion_error_rate == result.challenger_error_rate == 0.0
    assert result.challenger_p95_ms == 5.0 and result.champion_p95_ms == 5.0
    assert result.agreement == 1.0


def test_a_version_never_shadowed_pairs_nothing() -> None:
    # a report asked of a version that only ran as a canary: no figures of its canary traffic
    champion = captured([0, 1])
    challenger = captured([1, 1]).assign(**{REQUEST_ID: ["c0", "c1"]})

    result = compare_captures(champion, challenger)

    assert result.paired_rows == 0 and result.kind == "none"
    assert result.challenger_requests == 0 and result.challenger_error_rate is None


def test_classes_compare_by_value_across_types() -> None:
    values = pd.Series([0, 0.0, "0", 1.5, "setosa", True, None], dtype=object)
    assert as_classes(values).tolist() == ["0", "0", "0", "1.5", "setosa", "True", "None"]


@pytest.mark.parametrize(
    ("predictions", "metric", "offered"),
    [([0, 1, 2, 1], "rmse", "accuracy"), ([0.5, 1.25, 2.0, 3.5], "accuracy", "rmse")],
    ids=["regression-metric-on-classes", "class-metric-on-numbers"],
)
def test_a_metric_of_the_other_task_is_not_computed_and_says_why(
    predictions: list, metric: str, offered: str
) -> None:
    rows = captured(predictions)
    feedback = pd.DataFrame(
        {REQUEST_ID: ["r0", "r1", "r2", "r3"], ROW: [0] * 4, LABEL: predictions}
    )

    result = compare_captures(rows, rows, feedback, metric)

    # the rest of the comparison stands; the metric's figures stay empty with the reason
    assert result.paired_rows == 4 and result.labelled_rows == 4
    assert result.metric is None and result.champion_metric is None
    assert result.metric_problem.startswith(f"--metric {metric} is a ")
    assert offered in result.metric_problem


def _champion_answers(root: Path, predictions: list) -> None:
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    frame = pd.DataFrame({"x": range(len(predictions)), "prediction": predictions})
    write_capture(root, capture_table(frame, at, "r", version="3"), at, version="3")


def test_a_shadow_metric_of_the_other_task_is_refused_before_the_shadow_starts(
    tmp_path: Path,
) -> None:
    _champion_answers(tmp_path, [0, 1, 2] * 10)
    with pytest.raises(
        InvalidInputError,
        match="rmse is a regression metric, but version 3.s recent answers are classes",
    ) as raised:
        check_metric_fits(str(tmp_path), MODEL, "3", "rmse")
    assert raised.value.exit_code == 2 and raised.value.details["field"] == "metric"
    check_metric_fits(str(tmp_path), MODEL, "3", "f1")  # classes: a classification metric
    check_metric_fits(str(tmp_path), MODEL, "3", None)  # the default follows the answers
    check_metric_fits(str(tmp_path), MODEL, "4", "rmse")  # no answers yet: nothing to go on


def test_a_regression_metric_fits_numbers(tmp_path: Path) -> None:
    _champion_answers(tmp_path, [i * 0.37 for i in range(30)])
    check_metric_fits(str(tmp_path), MODEL, "3", "mae")
    with pytest.raises(InvalidInputError, match="pass one of .*rmse"):
        check_metric_fits(str(tmp_path), MODEL, "3", "accuracy")
