"""MLflow models-from-code wrapper for an estimator pickled outside MLflow.

`mlops register model.pkl` logs this file with the pickle as an artifact, and with the pandas
dtypes of the reference data (`dtypes.json`) when there was reference data. MLflow runs it when
the model is loaded, so the model needs only joblib and the estimator's own libraries, never
this project.

Scoring services hand over columns typed by the signature (long, string, datetime, ...), which
cannot say Int64 rather than int64, category rather than string, or a time zone. The wrapper
casts each input column back to the reference dtype, so the model sees rows, and their missing
values, as its own reference frame held them and predicts the same.
"""

import json

import joblib
import mlflow
import pandas as pd


def _dtype(spec):
    """A pandas dtype from its dtypes.json entry: a dtype name, or a categorical's definition."""
    if isinstance(spec, dict):
        categories = pd.Index(spec["categories"]).astype(spec["categories_dtype"])
        return pd.CategoricalDtype(categories, ordered=spec["ordered"])
    return pd.api.types.pandas_dtype(spec)


def _cast(column, dtype):
    """`column` as `dtype`; date-times without a zone are UTC (as the service sends them)."""
    if column.dtype == dtype:
        return column
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pd.to_datetime(column, utc=True).dt.tz_convert(dtype.tz).astype(dtype)
    if pd.api.types.is_datetime64_dtype(dtype):
        column = pd.to_datetime(column, utc=True).dt.tz_convert(None)
    return column.astype(dtype)


class PickledModel(mlflow.pyfunc.PythonModel):
    """Delegates predict to any object that has one, on inputs cast to the reference dtypes."""

    def load_context(self, context):
        self.model = joblib.load(context.artifacts["model"])
        self.dtypes = {}
        if "dtypes" in context.artifacts:  # versions registered without reference data lack it
            with open(context.artifacts["dtypes"], encoding="utf-8") as file:
                self.dtypes = {name: _dtype(spec) for name, spec in json.load(file).items()}

    # a DataFrame hint tells MLflow to leave input checks to the registered signature
    def predict(self, context, model_input: pd.DataFrame, params=None):
        if self.dtypes and isinstance(model_input, pd.DataFrame):
            model_input = model_input.assign(
                **{
                    name: _cast(model_input[name], dtype)
                    for name, dtype in self.dtypes.items()
                    if name in model_input.columns
                }
            )
        return self.model.predict(model_input)


mlflow.models.set_model(PickledModel())
