"""The gate's metrics: `sklearn.metrics` functions with their direction and inputs.

Metrics, their direction and what they need (all from `sklearn.metrics`):

    name               greater is better  task            uses
    accuracy           yes                classification  predict
    balanced_accuracy  yes                classification  predict
    f1, precision,     yes                classification  predict; binary average for 0/1 labels,
    recall                                                macro average otherwise (multiclass or
                                                          non-0/1 labels)
    roc_auc            yes                classification  predict_proba + classes_ (binary: the
                                                          second class's probability; multiclass:
                                                          one-vs-rest, macro average)
    log_loss           no                 classification  predict_proba + classes_
    rmse, mse, mae,    no                 regression      predict
    mape, medae
    r2,                yes                regression      predict
    explained_variance
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlops_pipeline.errors import InvalidInputError
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.utils.multiclass import type_of_target


@dataclass(frozen=True)
class Metric:
    """A gate metric: an `sklearn.metrics` function, its direction and its inputs."""

    name: str
    greater_is_better: bool
    task: Literal["classification", "regression"]
    uses_proba: bool
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


def _averaged(fn: Callable[..., float]) -> Callable[[np.ndarray, np.ndarray, Any], float]:
    def compute(y: np.ndarray, pred: np.ndarray, _classes: Any) -> float:
        labels = set(np.unique(np.concatenate([y, pred])).tolist())
        average = "binary" if labels <= {0, 1} else "macro"
        return fn(y, pred, average=average, zero_division=0)

    return compute


def _roc_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    if len(classes) == 2:
        return skm.roc_auc_score(y == classes[1], proba[:, 1])
    return skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)


def _plain(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    return lambda y, pred, _classes: fn(y, pred)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", True, "classification", False, _plain(skm.accuracy_score)),
        Metric(
            "balanced_accuracy", True, "classification", False, _plain(skm.balanced_accuracy_score)
        ),
        Metric("f1", True, "classification", False, _averaged(skm.f1_score)),
        Metric("precision", True, "classification", False, _averaged(skm.precision_score)),
        Metric("recall", True, "classification", False, _averaged(skm.recall_score)),
        Metric("roc_auc", True, "classification", True, _roc_auc),
        Metric(
            "log_loss",
            False,
            "classification",
            True,
            lambda y, proba, classes: skm.log_loss(y, proba, labels=classes),
        ),
        Metric("rmse", False, "regression", False, _plain(skm.root_mean_squared_error)),
        Metric("mse", False, "regression", False, _plain(skm.mean_squared_error)),
        Metric("mae", False, "regression", False, _plain(skm.mean_absolute_error)),
        Metric("mape", False, "regression", False, _plain(skm.mean_absolute_percentage_error)),
        Metric("medae", False, "regression", False, _plain(skm.median_absolute_error)),
        Metric("r2", True, "regression", False, _plain(skm.r2_score)),
        Metric(
            "explained_variance", True, "regression", False, _plain(skm.explained_variance_score)
        ),
    )
}


def metric_key(name: str) -> str:
    """`name` as a key of METRICS: case and `-`/`_` insensitive, surrounding blanks ignored."""
    return name.strip().lower().replace("-", "_")


def get_metric(name: str) -> Metric:
    """The gate metric called `name` (`metric_key`).

    Raises:
        InvalidInputError: no such metric; the message lists the supported ones.
    """
    key = metric_key(name)
    if key not in METRICS:
        raise InvalidInputError(
            f"Metric {name!r} is not supported by the gate; choose one of {sorted(METRICS)}.",
            metric=name,
        )
    return METRICS[key]


def check_task(metric: Metric, y: np.ndarray) -> None:
    kind = type_of_target(y)
    if metric.task == "classification" and kind not in ("binary", "multiclass"):
        raise InvalidInputError(
            f"Metric {metric.name!r} is for classification but the holdout's labels are {kind}.",
            hint="Choose a regression metric (rmse, mae, r2) or check the label column.",
            metric=metric.name,
        )
    if metric.task == "regression" and not (
        np.issubdtype(y.dtype, np.number) and not np.issubdtype(y.dtype, np.bool_)
    ):
        raise InvalidInputError(
            f"Metric {metric.name!r} is for regression but the holdout's labels are not numeric.",
            hint="Choose a classification metric (accuracy, f1, roc_auc) or check the labels.",
            metric=metric.name,
        )


def check_model(metric: Metric, model: Any, role: str) -> None:
    if not callable(getattr(model, "predict", None)):
        raise InvalidInputError(f"The {role} model has no predict method.", role=role)
    if metric.uses_proba and not (
        callable(getattr(model, "predict_proba", None)) and hasattr(model, "classes_")
    ):
        raise InvalidInputError(
            f"Metric {metric.name!r} needs class probabilities but the {role} model has no "
            "predict_proba/classes_ (an MLflow pyfunc model has only predict).",
            hint="Load it with its native flavour (e.g. mlflow.sklearn) or choose accuracy/f1.",
            metric=metric.name,
            role=role,
        )


def _predictions(model: Any, X: pd.DataFrame) -> np.ndarray:
    pred = model.predict(X)
    arr = np.asarray(pred.to_numpy() if isinstance(pred, pd.DataFrame | pd.Series) else pred)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != len(X):
        raise ValueError(f"predict returned shape {arr.shape} for {len(X)} rows, not one column")
    return arr


def score(model: Any, X: pd.DataFrame, y: pd.Series | np.ndarray, metric: str | Metric) -> float:
    """Score `model` on (X, y) with a gate metric.

    Args:
        model: an object with `predict(X)` (and `predict_proba` + `classes_` for roc_auc and
            log_loss).
        X: holdout features, n_rows x n_features, the model's input columns.
        y: true labels, n_rows.
        metric: a metric name (see the module table) or a `Metric`.

    Returns:
        The score in the metric's units (a finite float).

    Raises:
        InvalidInputError: unknown metric, metric incompatible with the labels, model lacking
            what the metric needs.
        ValueError: the score is undefined on this holdout (e.g. roc_auc with one class).
        Exception: whatever the model's predict raises, unchanged.
    """
    m = metric if isinstance(metric, Metric) else get_metric(metric)
    y_arr = np.asarray(y)
    check_task(m, y_arr)
    check_model(m, model, "given")
    if m.uses_proba:
        classes = np.asarray(model.classes_)
        out = np.asarray(model.predict_proba(X))
    else:
        classes, out = None, _predictions(model, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        value = float(m.compute(y_arr, out, classes))
    if not math.isfinite(value):
        raise ValueError(f"{m.name} is not defined on this holdout (got {value})")
    return value
