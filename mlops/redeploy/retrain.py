"""Retraining through a configured entry point, `module:function`.

The function receives one DataFrame, the training data (feature columns plus the label column),
and returns a model with `predict`. The training data is the reference rows that have a label
plus the captured inputs joined with their feedback labels, minus the gate's holdout.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
from mlops_pipeline.errors import InvalidInputError, NotFoundError
from mlops_pipeline.redeploy.labelled import (
    Holdout,
    labelled_captures,
    labelled_reference,
    reference_label_dtype,
    require_columns,
)

log = logging.getLogger(__name__)

Trainer = Callable[[pd.DataFrame], Any]


def load_trainer(spec: str, *, setting: str = "MLOPS_TRAINER") -> Trainer:
    """Import the trainer named by `spec`, "package.module:function" (or ":Class.method").

    Args:
        spec: the entry point; the module must be importable (installed or on sys.path).
        setting: the setting `spec` came from, named in error messages.

    Returns:
        The callable.

    Raises:
        InvalidInputError: `spec` is not `module:function`, importing the module failed
            (including a missing dependency of it), or the attribute is not callable.
        NotFoundError: the module or the function does not exist.
    """
    module_name, sep, attr = spec.strip().partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInputError(
            f"{setting}={spec!r} is not an entry point; write it as module:function "
            "(e.g. my_project.train:train).",
            setting=setting,
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise NotFoundError(
                f"{setting}={spec!r}: no module named {exc.name!r}.",
                hint="Install it or put its folder on PYTHONPATH.",
                setting=setting,
            ) from exc
        raise InvalidInputError(
            f"{setting}={spec!r}: importing {module_name!r} failed: no module named {exc.name!r}.",
            hint="Install the trainer's dependencies.",
            setting=setting,
        ) from exc
    except Exception as exc:
        raise InvalidInputError(
            f"{setting}={spec!r}: importing {module_name!r} failed ({type(exc).__name__}: {exc}).",
            setting=setting,
        ) from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise NotFoundError(
                f"{setting}={spec!r}: {module_name!r} has no attribute {attr!r}.",
                setting=setting,
            )
        target = getattr(target, part)
    if not callable(target):
        raise InvalidInputError(
            f"{setting}={spec!r}: {attr!r} is a {type(target).__name__}, not a function.",
            setting=setting,
        )
    return target


def training_data(
    reference: pd.DataFrame,
    labelled_captures_frame: pd.DataFrame | None,
    features: list[str],
    label_column: str,
    *,
    holdout: Holdout | None = None,
) -> pd.DataFrame:
    """Training rows: labelled reference rows plus labelled captured rows, minus the holdout.

    Args:
        reference: reference data, n_rows x columns; rows without a label (or a reference
            without `label_column` at all) contribute nothing.
        labelled_captures_frame: captured rows with feedback labels in `label` (the capture
            reader's join_labels output), or None. Rejected requests and unlabelled rows are
            dropped; the same (`_request_id`, `_row`) counts once (the last).
        features: the model's input columns.
        label_column: the label's column name in the result (and in `reference`).
        holdout: the gate's holdout from `choose_holdout` on the same frames; its rows are left
            out, so the gate does not score a challenger on rows it was trained on.

    Returns:
        DataFrame with columns `features + [label_column]`, reference rows first, a fresh
        RangeIndex.

    Raises:
        InvalidInputError: a feature column is missing, or no labelled row is left (the message
            says what to provide).
    """
    if label_column in reference.columns:
        require_columns(reference, features, "reference data")
    ref = labelled_reference(reference, label_column)
    captured = labelled_captures(
        labelled_captures_frame,
        features,
        label_column,
        label_dtype=reference_label_dtype(reference, label_column),
    )
    if holdout is not None:
        held = holdout.X.index
        if holdout.info.source == "reference_split":
            ref = ref[~ref.index.isin(held)]
        else:
            captured = captured[~captured.index.isin(held)]
    parts = [p[[*features, label_column]] for p in (ref, captured) if len(p)]
    if not parts:
        raise InvalidInputError(
            f"No labelled rows to train on: the reference data has no {label_column!r} labels "
            "and no captured row has a feedback label (outside the holdout).",
            hint="Register reference data with the label column or send feedback labels.",
            label_column=label_column,
        )
    data = pd.concat(parts, ignore_index=True)
    log.info("training data: %d reference rows and %d captured rows", len(ref), len(captured))
    return data


def _name(trainer: Trainer) -> str:
    return f"{getattr(trainer, '__module__', '?')}:{getattr(trainer, '__qualname__', trainer)}"


def retrain(trainer: Trainer, data: pd.DataFrame) -> Any:
    """Run the trainer on the training data and check it returned a model.

    Args:
        trainer: from `load_trainer`.
        data: from `training_data` (features + label column).

    Returns:
        The trained model (anything with a callable `predict`).

    Raises:
        InvalidInputError: the trainer raised (its traceback goes to the log) or returned an
            object without `predict`.
    """
    name = _name(trainer)
    try:
        model = trainer(data)
    except Exception as exc:
        log.error("trainer %s failed", name, exc_info=exc)
        raise InvalidInputError(
            f"The trainer {name} failed: {type(exc).__name__}: {str(exc)[:200]}",
            hint="Its traceback is in the log.",
        ) from exc
    if not callable(getattr(model, "predict", None)):
        raise InvalidInputError(
            f"The trainer {name} returned a {type(model).__name__}, not a model with predict.",
            hint="Return the fitted model (e.g. an sklearn estimator).",
        )
    return model
