"""The gate: champion and challenger scored on the same holdout, and that holdout chosen.

Metrics and their directions are listed in `mlops_pipeline.redeploy.metrics`.

`min_improvement` is an absolute difference in the metric's units, measured in its direction:
the challenger passes when it is better by at least that much (0 = any improvement; a tie
never passes). Differences within 1e-9 of the threshold count as meeting it, so 0.96 - 0.94
meets 0.02 despite binary floating point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.redeploy.labelled import (
    Holdout,
    feature_columns,
    labelled_captures,
    labelled_reference,
    reference_label_dtype,
    require_columns,
)
from mlops_pipeline.redeploy.metrics import check_model, check_task, get_metric, score
from mlops_pipeline.redeploy.results import GateResult, HoldoutInfo
from sklearn.model_selection import train_test_split

_TOLERANCE = 1e-9


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def evaluate_gate(
    champion_model: Any,
    challenger_model: Any,
    holdout_X: pd.DataFrame,
    holdout_y: pd.Series | np.ndarray,
    metric: str,
    min_improvement: float,
) -> GateResult:
    """Score champion and challenger on the same holdout; pass the challenger only if better.

    Args:
        champion_model, challenger_model: objects with `predict` (see `score`).
        holdout_X: n_rows x n_features, the models' input columns.
        holdout_y: n_rows true labels.
        metric: a name from the module table (e.g. "accuracy", "f1", "roc_auc", "rmse").
        min_improvement: >= 0, absolute, in the metric's units, in its better direction.

    Returns:
        GateResult. A challenger whose predict fails or whose score is undefined does not pass
        (the reason names the error); improvement is positive when the challenger is better.

    Raises:
        InvalidInputError: unknown metric, metric incompatible with the labels or models,
            min_improvement negative or not finite, empty holdout, X/y length mismatch, or the
            champion cannot be scored on the holdout (then nothing can be compared).
    """
    m = get_metric(metric)
    if not (math.isfinite(min_improvement) and min_improvement >= 0):
        raise InvalidInputError(
            f"min_improvement must be a finite number >= 0, not {min_improvement!r}.",
            min_improvement=min_improvement,
        )
    if len(holdout_X) == 0:
        raise InvalidInputError("The gate's holdout is empty; there is nothing to score on.")
    if len(holdout_X) != len(holdout_y):
        raise InvalidInputError(
            f"The holdout has {len(holdout_X)} feature rows but {len(holdout_y)} labels."
        )
    check_task(m, np.asarray(holdout_y))
    check_model(m, champion_model, "champion")
    check_model(m, challenger_model, "challenger")
    try:
        champion = score(champion_model, holdout_X, holdout_y, m)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"The champion could not be scored with {m.name} on the holdout ({_first_line(exc)}).",
            hint="Check that the holdout has the champion's input columns and enough classes.",
            metric=m.name,
        ) from exc
    common = {
        "metric": m.name,
        "greater_is_better": m.greater_is_better,
        "champion_score": champion,
        "min_improvement": min_improvement,
        "holdout_rows": len(holdout_X),
    }
    try:
        challenger = score(challenger_model, holdout_X, holdout_y, m)
    except Exception as exc:  # a broken challenger is what the gate is for: reject it
        reason = f"the challenger could not be scored with {m.name}: {_first_line(exc)}"
        return GateResult(
            **common, challenger_score=None, improvement=None, passed=False, reason=reason
        )
    improvement = challenger - champion if m.greater_is_better else champion - challenger
    passed = improvement > _TOLERANCE and improvement >= min_improvement - _TOLERANCE
    verdict = "passes" if passed else "does not pass"
    need = f"at least {min_improvement:g}" if min_improvement > 0 else "more than 0"
    reason = (
        f"challenger {m.name} {challenger:.6g} vs champion {champion:.6g} "
        f"({'higher' if m.greater_is_better else 'lower'} is better): improvement "
        f"{improvement:+.6g}, needs {need}; {verdict}"
    )
    return GateResult(
        **common, challenger_score=challenger, improvement=improvement, passed=passed, reason=reason
    )


def _split(frame: pd.DataFrame, label_column: str, fraction: float, seed: int) -> pd.DataFrame:
    """The held-out part of `frame`: seeded, stratified by label when that is possible."""
    labels = frame[label_column]
    stratify = None if pd.api.types.is_float_dtype(labels) else labels
    try:
        _, test = train_test_split(frame, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # a class with one row, or fewer test rows than classes
        _, test = train_test_split(frame, test_size=fraction, random_state=seed)
    return test


def choose_holdout(
    labelled: pd.DataFrame | None,
    reference: pd.DataFrame,
    label_column: str,
    min_labelled_rows: int,
    holdout_fraction: float,
    seed: int,
    *,
    features: list[str] | None = None,
    use_all_labelled: bool = False,
) -> Holdout:
    """The gate's holdout: labelled captured rows when there are enough, else a reference split.

    Args:
        labelled: captured rows with feedback labels (see `labelled.labelled_captures`), or None.
        reference: the model version's reference data, n_rows x columns.
        label_column: the label's column in `reference` (and the name y gets).
        min_labelled_rows: usable labelled captured rows needed to use them (>= 1).
        holdout_fraction: share held out, 0 < f < 1; the rest stays free for retraining.
        seed: random seed of the split (same inputs and seed -> same holdout).
        features: model input columns; default: `reference`'s columns but the label, `_`-
            prefixed and prediction columns.
        use_all_labelled: hold out every labelled captured row (for a challenger not trained
            here, so no row is needed for training).

    Returns:
        Holdout(X, y, info), unpackable as a tuple; X's index is the rows' positions in the
        source frame. The split is stratified by label unless labels are floats or a class is
        too small.

    Raises:
        InvalidInputError: bad fraction or minimum, missing feature columns, too few labelled
            captured rows and no label column in the reference (the message says what to set).
    """
    if not 0 < holdout_fraction < 1:
        raise InvalidInputError(
            f"holdout_fraction must be between 0 and 1 (exclusive), not {holdout_fraction!r}."
        )
    if min_labelled_rows < 1:
        raise InvalidInputError(f"min_labelled_rows must be >= 1, not {min_labelled_rows!r}.")
    features = features or feature_columns(reference, label_column)
    captured = labelled_captures(
        labelled, features, label_column, label_dtype=reference_label_dtype(reference, label_column)
    )
    if len(captured) >= min_labelled_rows:
        part = (
            captured if use_all_labelled else _split(captured, label_column, holdout_fraction, seed)
        )
        source, rows = "labelled_captures", captured
    else:
        if label_column not in reference.columns:
            raise InvalidInputError(
                f"Only {len(captured)} labelled captured rows (min_labelled_rows="
                f"{min_labelled_rows}) and the reference data has no {label_column!r} column.",
                hint="Register reference data that includes the label column, send feedback "
                "labels, or lower min_labelled_rows.",
                label_column=label_column,
            )
        require_columns(reference, features, "reference data")
        rows = labelled_reference(reference, label_column)
        if len(rows) < 2:
            raise InvalidInputError(
                f"The reference data has {len(rows)} labelled row(s); a holdout needs at least 2."
            )
        part = _split(rows, label_column, holdout_fraction, seed)
        source = "reference_split"
    info = HoldoutInfo(
        source=source,
        rows=len(part),
        label_column=label_column,
        fraction=None if part is rows else holdout_fraction,
        seed=None if part is rows else seed,
        labelled_rows_available=len(captured),
    )
    return Holdout(part[features], part[label_column], info)
