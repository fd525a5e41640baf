"""Choosing the gate's holdout: labelled captures when there are enough, else a reference split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.redeploy.gate import choose_holdout
from mlops_pipeline.redeploy.retrain import training_data

from tests.conftest import IRIS_COLUMNS


def captures(iris_frame: pd.DataFrame, n: int, *, labelled: int | None = None) -> pd.DataFrame:
    """n captured rows as the capture reader leaves them, the first `labelled` with feedback."""
    rows = iris_frame.sample(n, random_state=1, replace=n > len(iris_frame)).reset_index(drop=True)
    frame = rows[IRIS_COLUMNS].copy()
    frame["prediction"] = rows["label"]
    frame["_request_id"] = [f"r{i}" for i in range(n)]
    frame["_row"] = 0
    frame["_status"] = 200
    frame["label"] = rows["label"].astype(object)
    if labelled is not None:
        frame.loc[labelled:, "label"] = None
    return frame


def test_enough_labelled_captures_make_the_holdout(iris_frame):
    labelled = captures(iris_frame, 120)
    X, y, info = choose_holdout(labelled, iris_frame, "label", 100, 0.25, seed=7)
    assert info.source == "labelled_captures" and info.rows == len(X) == len(y) == 30
    assert info.labelled_rows_available == 120 and info.fraction == 0.25
    assert list(X.columns) == IRIS_COLUMNS
    assert (labelled.loc[X.index, "label"].astype(int) == y.astype(int)).all()
    X_all, _, info_all = choose_holdout(
        labelled, iris_frame, "label", 100, 0.25, seed=7, use_all_labelled=True
    )
    assert info_all.rows == 120 and info_all.fraction is None and len(X_all) == 120


def test_rejected_duplicate_and_unlabelled_captures_do_not_count(iris_frame):
    frame = captures(iris_frame, 110, labelled=100)
    dup = frame.iloc[:5].copy()
    rejected = frame.iloc[:5].assign(_row=np.nan, _status=400, _request_id=["x"] * 5)
    frame = pd.concat([frame, dup, rejected], ignore_index=True)
    _, _, info = choose_holdout(frame, iris_frame, "label", 101, 0.2, seed=0)
    assert info.source == "reference_split" and info.labelled_rows_available == 100
    _, _, info = choose_holdout(frame, iris_frame, "label", 100, 0.2, seed=0)
    assert info.source == "labelled_captures"


def test_too_few_labels_fall_back_to_a_seeded_stratified_reference_split(iris_frame):
    few = captures(iris_frame, 20)
    X, y, info = choose_holdout(few, iris_frame, "label", 50, 0.2, seed=3)
    assert info.source == "reference_split" and info.rows == 30 and info.seed == 3
    assert y.value_counts().to_dict() == {0: 10, 1: 10, 2: 10}  # stratified
    again = choose_holdout(None, iris_frame, "label", 50, 0.2, seed=3)
    assert again.X.index.equals(X.index)
    other = choose_holdout(None, iris_frame, "label", 50, 0.2, seed=4)
    assert not other.X.index.equals(X.index)


def test_a_float_label_is_split_without_stratifying(iris_frame):
    reference = iris_frame.assign(label=iris_frame["petal_width"] * 1.5)
    X, y, info = choose_holdout(None, reference, "label", 10, 0.1, seed=0)
    assert info.rows == 15 and "label" not in X.columns and y.dtype.kind == "f"


def test_no_labels_anywhere_says_what_to_configure(iris_frame):
    with pytest.raises(InvalidInputError) as err:
        choose_holdout(captures(iris_frame, 5), iris_frame[IRIS_COLUMNS], "label", 100, 0.2, 0)
    text = str(err.value)
    assert "min_labelled_rows=100" in text and "'label'" in text and "\n" not in text
    assert "reference data that includes the label column" in text


@pytest.mark.parametrize(("fraction", "minimum"), [(0.0, 10), (1.0, 10), (0.2, 0)])
def test_bad_split_settings_are_refused(iris_frame, fraction, minimum):
    with pytest.raises(InvalidInputError):
        choose_holdout(None, iris_frame, "label", minimum, fraction, 0)


def test_missing_feature_columns_are_named(iris_frame):
    broken = captures(iris_frame, 10).drop(columns=["sepal_width"])
    with pytest.raises(InvalidInputError, match="sepal_width"):
        choose_holdout(broken, iris_frame, "label", 5, 0.2, 0)


def _rows(frame: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, frame[IRIS_COLUMNS].round(6).to_numpy()))


def test_training_leaves_the_holdout_out(iris_frame):
    # every row made unique, so "the same row" means the same observation
    reference = iris_frame.assign(sepal_length=iris_frame["sepal_length"] + np.arange(150) * 1e-4)
    labelled = captures(iris_frame, 120)
    labelled["sepal_length"] += 0.05 + np.arange(120) * 1e-4
    holdout = choose_holdout(labelled, reference, "label", 100, 0.25, seed=7)
    data = training_data(reference, labelled, IRIS_COLUMNS, "label", holdout=holdout)
    assert len(data) == 150 + 90
    assert not _rows(data) & _rows(holdout.X)
    assert _rows(data) | _rows(holdout.X) == _rows(reference) | _rows(labelled)

    ref_holdout = choose_holdout(None, reference, "label", 100, 0.2, seed=1)
    data = training_data(reference, labelled, IRIS_COLUMNS, "label", holdout=ref_holdout)
    assert len(data) == 120 + 120
    assert not _rows(data) & _rows(ref_holdout.X)


def test_text_feedback_labels_take_the_reference_label_type(iris_frame):
    labelled = captures(iris_frame, 120)
    labelled["label"] = labelled["label"].astype(str)  # feedback stored without a type
    X, y, _ = choose_holdout(labelled, iris_frame, "label", 100, 0.25, seed=0)
    assert y.dtype == iris_frame["label"].dtype and set(y) <= {0, 1, 2}
    labelled["label"] = "setosa"
    with pytest.raises(InvalidInputError, match="cannot be read as the reference's 'label' type"):
        choose_holdout(labelled, iris_frame, "label", 100, 0.25, seed=0)
