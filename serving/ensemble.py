"""Ensemble combiners: several members' predictions for the same rows -> one prediction.

* `mean`: the element-wise mean of numeric predictions;
* `weighted_mean`: the same, each member counted with its weight (`numpy.average`);
* `majority_vote`: per row, the label with the largest summed member weight (1 each unless
  weighted); a tie goes to the label of the earliest member among the tied ones;
* `custom`: the scoring code's `combine(predictions)`.

Pure numpy and pandas, so the pipeline can import it too (e.g. to score a reference set the way
the service does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .errors import ServingError

COMBINERS = ("mean", "weighted_mean", "majority_vote", "custom")


def as_array(raw: Any) -> np.ndarray:
    """A member's raw prediction as an array: a one-column frame becomes one dimension."""
    if isinstance(raw, pd.DataFrame):
        return raw.iloc[:, 0].to_numpy() if raw.shape[1] == 1 else raw.to_numpy()
    if isinstance(raw, pd.Series):
        return raw.to_numpy()
    return np.asarray(raw)


def _stack(predictions: dict[str, Any]) -> np.ndarray:
    arrays = [as_array(p) for p in predictions.values()]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ServingError(
            500,
            "ensemble_mismatch",
            "The ensemble members returned predictions of different shapes "
            f"({', '.join(f'{k}: {a.shape}' for k, a in zip(predictions, arrays, strict=True))}); "
            "their outputs must match to be combined.",
        )
    return np.stack(arrays)


def combine(
    predictions: dict[str, Any],
    combiner: str,
    weights: list[float],
    custom: Callable[[dict[str, Any]], Any] | None = None,
) -> Any:
    """Merge member predictions (member label -> raw prediction, in member order).

    Args:
        predictions: each member's output for the same rows.
        combiner: one of COMBINERS.
        weights: one positive weight per member, in the same order.
        custom: the scoring code's `combine`, required for `custom`.

    Returns:
        A numpy array (one value per row, or rows x outputs for multi-output means), or what
        `custom` returns.

    Raises:
        ServingError 500: members disagree in shape, or their predictions are not numbers
            for a mean.
    """
    if combiner == "custom":
        if custom is None:
            raise ServingError(
                500, "ensemble_misconfigured", "The custom combiner needs combine() in the code."
            )
        return custom(predictions)
    stacked = _stack(predictions)
    if combiner == "majority_vote":
        return _vote(stacked, weights)
    if stacked.dtype.kind not in "biuf":
        raise ServingError(
            500,
            "ensemble_mismatch",
            f"The {combiner} combiner needs numeric predictions, got {stacked.dtype}; use "
            "majority_vote for labels.",
        )
    return np.average(
        stacked.astype(np.float64), axis=0, weights=weights if combiner == "weighted_mean" else None
    )


def _vote(stacked: np.ndarray, weights: list[float]) -> np.ndarray:
    """Per row (axis 1) the label with the most summed weight; ties to the earliest member."""
    if stacked.ndim != 2:
        raise ServingError(
            500, "ensemble_mismatch", "majority_vote needs one label per row from each member."
        )
    n_members, n_rows = stacked.shape
    out = np.empty(n_rows, dtype=stacked.dtype)
    for row in range(n_rows):
        tally: dict[Any, float] = {}
        for member in range(n_members):  # dicts keep insertion order: ties go to the earliest
            label = stacked[member, row]
            tally[label] = tally.get(label, 0.0) + weights[member]
        out[row] = max(tally, key=tally.__getitem__)
    return out
