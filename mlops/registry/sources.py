"""Model sources and reference data: what `mlops register` is given, checked before any write."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from mlops_pipeline.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model to register comes from: a run URI, an MLflow model directory or a pickle.

    `uri` is SOURCE as given; `path` is the resolved local path (None for a run URI).
    """

    kind: Literal["run", "mlflow_dir", "pickle"]
    uri: str
    path: Path | None = None


def validate_model_name(name: str) -> str:
    """Check a registered-model name is one MLflow and URIs can carry.

    Args:
        name: 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit.

    Returns:
        `name` unchanged.

    Raises:
        InvalidInputError: the name does not fit that pattern (exit 2).
    """
    if not NAME_PATTERN.match(name or ""):
        raise InvalidInputError(
            f"--name '{name}' is not a valid model name.",
            hint="Use 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            field="name",
            value=name,
        )
    return name


def resolve_source(source: str) -> ModelSource:
    """Classify SOURCE as an MLflow run URI, an MLflow model directory or a pickle file.

    Args:
        source: `runs:/<run_id>/<path>`, a directory holding an MLmodel file, or any other
            existing file (taken as a pickle/joblib file; it is not opened here).

    Raises:
        NotFoundError: SOURCE is not a run URI and does not exist (exit 3).
        InvalidInputError: SOURCE is a directory without an MLmodel file (exit 2).
    """
    if source.startswith("runs:/"):
        return ModelSource(kind="run", uri=source)
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"SOURCE '{source}' does not exist.",
            hint="Give a runs:/<run_id>/<path> URI, an MLflow model directory or a pickle file.",
            field="source",
            value=source,
        )
    if path.is_dir():
        if not (path / "MLmodel").is_file():
            raise InvalidInputError(
                f"SOURCE '{source}' is a directory without an MLmodel file.",
                hint="Point at an MLflow model directory (one that contains MLmodel).",
                field="source",
                value=source,
            )
        return ModelSource(kind="mlflow_dir", uri=source, path=path.resolve())
    return ModelSource(kind="pickle", uri=source, path=path.resolve())


def load_pickled_model(path: Path) -> Any:
    """Unpickle a model file (pickle or joblib) and check it has `predict`.

    Pickles run code when loaded: a warning says so, since only trusted files belong here.

    Raises:
        InvalidInputError: the file does not unpickle, or the object has no callable
            `predict` (exit 2).
    """
    import joblib

    logger.warning(
        "Loading %s with pickle: pickles run code when loaded, register only files you trust.",
        path.name,
    )
    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling can raise anything the pickled code raises
        raise InvalidInputError(
            f"SOURCE '{path}' is not a loadable pickle/joblib file or MLflow model "
            f"({type(exc).__name__}).",
            hint="Save the model with pickle.dump or joblib.dump, or give an MLflow model dir.",
            field="source",
            value=str(path),
        ) from exc
    if not callable(getattr(model, "predict", None)):
        raise InvalidInputError(
            f"The object in '{path}' ({type(model).__name__}) has no predict method.",
            hint="Register an object with predict(DataFrame), e.g. a fitted scikit-learn model.",
            field="source",
            value=str(path),
        )
    return model


def load_reference_data(path: str | None) -> pd.DataFrame | None:
    """Read reference data (a sample of the training data) from CSV or Parquet.

    Args:
        path: a `.csv` or `.parquet` file, or None for no reference data.

    Returns:
        The frame, or None when `path` is None.

    Raises:
        InvalidInputError: unreadable or unsupported file, or a file without rows (exit 2).
        NotFoundError: the file does not exist (exit 3).
    """
    if path is None:
        return None
    from mlops_pipeline.monitoring.tables import read_table_file

    # one reader for every CSV/Parquet input: a UTF-8 byte-order mark is ignored
    frame = read_table_file(path, option="--reference-data", field="reference_data")
    if frame.empty:
        raise InvalidInputError(
            f"--reference-data '{path}' has no rows.",
            hint="Give a sample of the data the model was trained on.",
            field="reference_data",
            value=path,
        )
    return frame
