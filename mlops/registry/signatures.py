"""Signatures: what a registered version accepts, read from an MLflow model or inferred from
reference data for a pickle, checked so that no version refuses its own reference rows."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType
from mlops_pipeline.errors import InvalidInputError, NotFoundError
from mlops_pipeline.registry.sources import ModelSource
from mlops_pipeline.serving.contract import is_prediction_column
from mlops_pipeline.settings import get_settings

logger = logging.getLogger(__name__)

# ground truth kept beside the inputs in reference data (the gate and retraining read it)
LABEL_COLUMNS = ("label", "target")


def model_input_columns(reference: pd.DataFrame, model: Any = None) -> list[str]:
    """The columns of `reference` that a pickled model takes as inputs.

    The model's own `feature_names_in_` (scikit-learn estimators fitted on a DataFrame) when it
    has them; else every column but labels ("label", "target" and MLOPS_REDEPLOY_LABEL_COLUMN),
    capture metadata (`_`-prefixed) and prediction columns, so reference data may carry the
    labels the redeploy gate scores on.

    Raises:
        InvalidInputError: the model names input columns that `reference` lacks.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        wanted = [str(n) for n in names]
        missing = [n for n in wanted if n not in reference.columns]
        if missing:
            raise InvalidInputError(
                f"--reference-data lacks column(s) {missing} that the model was fitted on.",
                hint=f"Give reference data with the columns {wanted}.",
                field="reference_data",
                value=missing[0],
            )
        return wanted
    labels = {*LABEL_COLUMNS, get_settings().redeploy_label_column}
    return [
        c
        for c in reference.columns
        if not (str(c).startswith("_") or c in labels or is_prediction_column(str(c)))
    ]


def read_model_signature(source: ModelSource) -> ModelSignature | None:
    """The signature stored with an MLflow model (run URI or model directory), if it has one.

    Raises:
        NotFoundError: the run or artifact path holds no loadable MLflow model (exit 3).
        InvalidInputError: the MLmodel file cannot be read (exit 2).
    """
    model_uri = source.uri if source.kind == "run" else str(source.path)
    try:
        return Model.load(model_uri).signature
    except MlflowException as exc:
        raise NotFoundError(
            f"SOURCE '{source.uri}' is not a loadable MLflow model: {exc.message}",
            hint="Check the run id and artifact path (runs:/<run_id>/model).",
            field="source",
            value=source.uri,
        ) from exc
    except OSError as exc:
        raise InvalidInputError(
            f"SOURCE '{source.uri}' has an unreadable MLmodel file ({exc}).",
            field="source",
            value=source.uri,
        ) from exc


_KIND_CHECKS = {
    "integer": pd.api.types.is_integer_dtype,
    "long": pd.api.types.is_integer_dtype,
    "float": pd.api.types.is_numeric_dtype,
    "double": pd.api.types.is_numeric_dtype,
    "boolean": pd.api.types.is_bool_dtype,
    "string": lambda dtype: (
        pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
    ),
    "datetime": pd.api.types.is_datetime64_any_dtype,
}


# signature types whose values cannot be missing in a required column (the service refuses null)
_NO_NULLS_WHEN_REQUIRED = {"integer", "long", "boolean"}


def check_columns_fit(signature: ModelSignature, reference: pd.DataFrame) -> None:
    """Raise naming the first column that the reference data lacks or has the wrong type for,
    or whose missing values the signature would refuse (so no version refuses its own data)."""
    for spec in signature.inputs.inputs:
        name = getattr(spec, "name", None)
        if name is None:
            continue
        if name not in reference.columns:
            if getattr(spec, "required", True):
                raise InvalidInputError(
                    f"--reference-data lacks column '{name}' that the model's signature needs.",
                    hint=f"Give data with the columns {signature.inputs.input_names()}.",
                    field="reference_data",
                    value=name,
                )
            continue
        type_name = getattr(getattr(spec, "type", None), "name", None)
        check = _KIND_CHECKS.get(type_name)
        if check is not None and not check(reference[name].dtype):
            raise InvalidInputError(
                f"--reference-data column '{name}' has dtype {reference[name].dtype}, "
                f"but the model's signature says {type_name}.",
                hint="Give reference data with the types the model was trained on.",
                field="reference_data",
                value=name,
            )
        if (
            type_name in _NO_NULLS_WHEN_REQUIRED
            and getattr(spec, "required", True)
            and reference[name].isna().any()
        ):
            raise InvalidInputError(
                f"--reference-data column '{name}' has missing values, but the model's "
                f"signature requires a {type_name} in every row, so the version would refuse "
                "its own reference data.",
                hint=f"Fill or drop the missing '{name}' values, or log the model with a "
                f"signature that marks '{name}' optional (ColSpec required=False).",
                field="reference_data",
                value=name,
            )


def check_reference_fits(
    source: ModelSource, reference: pd.DataFrame | None, model: Any = None
) -> ModelSignature | None:
    """Check reference data against the model and return the signature to register with.

    Args:
        source: the model source (see `resolve_source`).
        reference: reference data, or None.
        model: the unpickled model when `source.kind == "pickle"`.

    Returns:
        An MLflow model's own signature (None if it has none), or for a pickle one inferred
        from `reference`'s input columns (`model_input_columns`: labels and metadata are not
        inputs) and the model's predictions on a sample of them (None without reference data,
        with a warning that requests then go unchecked).

    Raises:
        InvalidInputError: reference data lacks a signature column, has the wrong dtype or
            missing values the signature refuses, or the pickle's predict fails on it (exit 2).
        NotFoundError: an MLflow source has no loadable model (exit 3).
    """
    if source.kind != "pickle":
        signature = read_model_signature(source)
        if signature is not None and reference is not None:
            check_columns_fit(signature, reference)
        return signature
    if reference is None:
        logger.warning(
            "No --reference-data: the pickled model gets no signature, so requests are not "
            "checked against a schema and drift cannot be measured."
        )
        return None
    inputs = reference[model_input_columns(reference, model)]
    sample = reference_sample(inputs)
    try:
        predictions = model.predict(sample)
    except Exception as exc:  # the model's own code decides what it raises on bad input
        raise InvalidInputError(
            f"The model's predict failed on --reference-data ({type(exc).__name__}: {exc}).",
            hint="Give reference data with the columns and types the model was trained on.",
            field="reference_data",
        ) from exc
    return reference_signature(inputs, sample, predictions)


def reference_sample(reference: pd.DataFrame, rows: int = 100) -> pd.DataFrame:
    """The first `rows` rows plus, per column, its first missing and first present value.

    Small enough to predict on and infer types from quickly (MLflow's inference takes ~30 s on
    500k rows), yet every column shows its type and, if it has any, a missing value.
    """
    picked = set(range(min(rows, len(reference))))
    missing = reference.isna()
    for name in reference.columns:
        for mask in (missing[name].to_numpy(), ~missing[name].to_numpy()):
            hits = mask.nonzero()[0]
            if len(hits):
                picked.add(int(hits[0]))
    return reference.iloc[sorted(picked)]


def reference_signature(
    reference: pd.DataFrame, sample: pd.DataFrame, predictions: Any
) -> ModelSignature:
    """The signature of a pickled model, typed from `sample` of `reference`.

    A column with any missing value in the whole reference is optional (ColSpec required=False),
    so the service accepts null there and the version scores its own reference rows. Raises
    InvalidInputError naming a column that a signature cannot describe.
    """
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values does not apply: such
        # columns become optional and are scored as pandas nullable integers
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        signature = infer_signature(sample, predictions)
    specs = signature.inputs.inputs
    if not signature.inputs.has_input_names() or any(
        isinstance(spec.type, AnyType) for spec in specs
    ):
        raise _undescribable_column(sample)
    missing = reference.isna().any()
    signature.inputs = Schema(
        [ColSpec(spec.type, spec.name, required=not bool(missing[spec.name])) for spec in specs]
    )
    return signature


def _undescribable_column(sample: pd.DataFrame) -> InvalidInputError:
    """The error for the first column MLflow cannot type (timedeltas, mixed objects, all null)."""
    name = str(sample.columns[0])
    for column in sample.columns:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec = infer_signature(sample[[column]]).inputs.inputs[0]
        except Exception:  # noqa: BLE001 - any failure means MLflow cannot type it
            spec = None
        if spec is None or spec.name is None or isinstance(spec.type, AnyType):
            name = str(column)
            break
    return InvalidInputError(
        f"--reference-data column '{name}' (dtype {sample[name].dtype}) has no type an MLflow "
        "signature can describe, so requests could not be checked against it.",
        hint=f"Convert '{name}' to numbers, strings, booleans or date-times (and give it at "
        "least one value), or drop it if the model does not use it.",
        field="reference_data",
        value=name,
    )
