"""Labelled rows for the gate and for retraining, prepared the same way for both.

Captured rows arrive as the capture reader's `join_labels` leaves them: feature columns,
prediction columns, capture metadata (`_request_id`, `_row`, `_status`, `_ts`, ...) and the
feedback label in `label`. Rows keep their position in the frame they came from as index, so
the rows a holdout took can be left out of the training data (see `Holdout`).
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.redeploy.results import HoldoutInfo
from mlops_pipeline.serving.contract import LABEL, REQUEST_ID, ROW, STATUS, is_prediction_column

# the column the capture reader's join_labels() writes feedback labels to
FEEDBACK_LABEL = LABEL


class Holdout(NamedTuple):
    """The gate's holdout: features X (n_rows x n_features), labels y (n_rows), and its origin.

    X's index holds the rows' positions in the source frame (`info.source`), so training can
    leave them out. Unpacks as `X, y, info = choose_holdout(...)`.
    """

    X: pd.DataFrame
    y: pd.Series
    info: HoldoutInfo


def feature_columns(reference: pd.DataFrame, label_column: str) -> list[str]:
    """The reference's columns that are model inputs: all but the label, capture metadata
    (`_`-prefixed) and prediction columns."""
    return [
        c
        for c in reference.columns
        if c != label_column and not str(c).startswith("_") and not is_prediction_column(str(c))
    ]


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise InvalidInputError naming the columns of `columns` that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"The {what} lacks the feature column(s) {missing}; it has {list(frame.columns)}.",
            hint="Use data with the columns of the model's signature.",
            missing=missing,
        )


def reference_label_dtype(reference: pd.DataFrame, label_column: str) -> object | None:
    """The dtype of the reference's labels, or None when it has no label column."""
    return reference[label_column].dtype if label_column in reference.columns else None


def labelled_reference(reference: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """Reference rows with a label, indexed by their position in `reference`.

    Returns an empty frame when the reference has no `label_column` at all.
    """
    frame = reference.reset_index(drop=True)
    if label_column not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame[label_column].notna()]


def labelled_captures(
    captures: pd.DataFrame | None,
    features: list[str],
    label_column: str,
    *,
    label_dtype: object | None = None,
) -> pd.DataFrame:
    """Scored captured rows with a feedback label, as `features + [label_column]`.

    Args:
        captures: captured rows with the feedback label in `label` (else in `label_column`);
            None or empty means none.
        features: input columns to keep; every one must be present when there are rows.
        label_column: name the label gets in the result.
        label_dtype: the reference labels' dtype; feedback labels are cast to it (feedback
            stored without a type arrives as text, and "1" never equals 1).

    Rows of rejected requests (`_row` null, or `_status` not 200) and rows without a label are
    dropped; the same (`_request_id`, `_row`) captured twice counts once (the last one). The
    index is the rows' position in `captures`.

    Raises:
        InvalidInputError: a feature column is missing, there is no label column at all, or
            the feedback labels cannot be read as `label_dtype`.
    """
    if captures is None or captures.empty:
        return pd.DataFrame(columns=[*features, label_column])
    frame = captures.reset_index(drop=True)
    source = FEEDBACK_LABEL if FEEDBACK_LABEL in frame.columns else label_column
    if source not in frame.columns:
        raise InvalidInputError(
            f"The captured rows have no label column ({FEEDBACK_LABEL!r} or {label_column!r}).",
            hint="Join the feedback labels to the captures first (captures' join_labels).",
        )
    require_columns(frame, features, "captured data")
    keep = frame[source].notna()
    if ROW in frame.columns:
        keep &= frame[ROW].notna()
    if STATUS in frame.columns:
        keep &= frame[STATUS] == 200
    frame = frame[keep]
    keys = [c for c in (REQUEST_ID, ROW) if c in frame.columns]
    if REQUEST_ID in keys:
        frame = frame[~frame.duplicated(keys, keep="last")]
    out = frame[features].copy()
    labels = frame[source]
    if label_dtype is not None and labels.dtype != label_dtype:
        try:
            labels = labels.astype(label_dtype)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"Feedback labels cannot be read as the reference's {label_column!r} type "
                f"({label_dtype}).",
                hint="Send feedback labels of the same type as the reference data's labels.",
                label_column=label_column,
            ) from exc
    out[label_column] = labels
    return out
