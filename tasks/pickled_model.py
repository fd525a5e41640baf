"""MLflow models-from-code wrapper for an estimator pickled outside MLflow.

`mlops register model.pkl` logs this file with the pickle as an artifact. MLflow runs it when
the model is loaded, so the model needs only joblib and the estimator's own libraries, never
this project.
"""

import joblib
import mlflow
import pandas as pd


class PickledModel(mlflow.pyfunc.PythonModel):
    """Delegates predict to any object that has one."""

    def load_context(self, context):
        self.model = joblib.load(context.artifacts["model"])

    # a DataFrame hint tells MLflow to leave input checks to the registered signature
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.model.predict(model_input)


mlflow.models.set_model(PickledModel())
