"""Load an MLflow model once and score parsed requests with it."""

from __future__ import annotations

import codecs
import inspect
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from .contract import prediction_column
from .errors import ServingError, bad_input
from .schema import Column, check_columns, csv_columns, payload_columns, signature_columns
from .settings import ServingSettings

log = logging.getLogger(__name__)

_ARROW = {
    "double": pa.float64(),
    "float": pa.float32(),
    "long": pa.int64(),
    "integer": pa.int32(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "binary": pa.binary(),
    "datetime": pa.timestamp("ns"),
}
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# a prediction slower than this moves to the thread pool so /ping and /metrics stay responsive
INLINE_PREDICT_SECONDS = 0.002


def labels_from_uri(settings: ServingSettings) -> tuple[str, str]:
    """Model name and version for metrics and capture before (or without) a registry lookup."""
    name, version = uri_labels(settings.model_uri)
    return settings.model_name or name, settings.model_version or version or "unknown"


def uri_labels(uri: str) -> tuple[str, str | None]:
    """Name and version (or alias) a model URI shows: models:/, runs:/ or a model directory."""
    if uri.startswith("models:/"):
        ref = uri.removeprefix("models:/").strip("/")
        if "@" in ref:
            name, _, version = ref.partition("@")
        else:
            name, _, version = ref.partition("/")
        return name, version or None
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").strip("/").split("/")[0]
        return f"run-{run_id[:8]}", run_id
    return Path(uri.removeprefix("file://")).name or "model", None


def resolve_uri(uri: str) -> tuple[str, str | None]:
    """Pin models:/name@alias to models:/name/<version>; returns (uri, version or None)."""
    if not uri.startswith("models:/"):
        return uri, None
    ref = uri.removeprefix("models:/").strip("/")
    name, at, alias = ref.partition("@")
    if not at:
        version = ref.partition("/")[2]
        return uri, version if version.isdigit() else None
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version_by_alias(name, alias).version
    return f"models:/{name}/{version}", str(version)


def _arrow_type(spec: Any) -> pa.DataType | None:
    type_name = getattr(getattr(spec, "type", None), "name", None)
    if type_name in _ARROW:
        return _ARROW[type_name]
    dtype = getattr(spec, "type", None)
    if isinstance(dtype, np.dtype) and tuple(getattr(spec, "shape", ()) or ())[1:] == ():
        return pa.from_numpy_dtype(dtype)
    return None


def prediction_columns(raw: Any, n_rows: int) -> dict[str, np.ndarray] | None:
    """Predictions as capture columns: `prediction`, or `prediction.<name>` for several outputs."""
    if isinstance(raw, pd.DataFrame):
        if raw.shape[1] == 1:
            cols = {prediction_column(): raw.iloc[:, 0].to_numpy()}
        else:
            cols = {prediction_column(c): raw[c].to_numpy() for c in raw.columns}
    elif isinstance(raw, dict):
        cols = {prediction_column(k): np.asarray(v) for k, v in raw.items()}
    else:
        arr = np.asarray(raw.to_numpy() if isinstance(raw, pd.Series) else raw)
        if arr.ndim == 2:
            cols = {prediction_column(i): arr[:, i] for i in range(arr.shape[1])}
        elif arr.ndim == 1:
            cols = {prediction_column(): arr}
        else:
            return None
    if any(v.ndim != 1 or len(v) != n_rows for v in cols.values()):
        return None
    return cols


def predictions_json(raw: Any) -> bytes:
    """{"predictions": ...} exactly as `mlflow models serve` shapes it (records for frames)."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "biuf" and raw.flags.c_contiguous:
        return orjson.dumps({"predictions": raw}, option=_JSON_OPTS)
    from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj

    obj = _get_jsonable_obj(raw, pandas_orient="records")
    try:
        return orjson.dumps({"predictions": obj}, option=_JSON_OPTS)
    except TypeError:
        return json.dumps({"predictions": obj}, cls=NumpyEncoder).encode()


def capture_columns(columns: dict[str, Any]) -> dict[str, np.ndarray]:
    """Checked columns as numpy arrays for the capture: a pandas nullable (Int64, boolean)
    array becomes an object array with None for its missing values."""
    return {
        name: values.to_numpy(dtype=object, na_value=None)
        if isinstance(values, pd.api.extensions.ExtensionArray)
        else values
        for name, values in columns.items()
    }


@dataclass
class Parsed:
    """A request read and checked: the model input, its typed columns and row count."""

    data: Any
    n_rows: int
    features: dict[str, np.ndarray] | None
    params: dict[str, Any] | None = None
    # ensemble member label -> raw prediction, kept for the capture (serving/scoring.py)
    members: dict[str, Any] | None = None
    # column names and dtypes: requests with equal keys can share a combined predict
    # (serving/batching.py); None when the input is not a checked frame
    batch_key: tuple | None = None
    # an all-numeric request's checked values as one (rows x columns) array, columns in
    # `features` order: the capture stacks these instead of gathering each column per request
    block: np.ndarray | None = None


@dataclass
class Runtime:
    """The loaded model and everything derived from its signature."""

    pyfunc: Any
    model_uri: str
    name: str
    version: str
    columns: list[Column] | None
    reject_extra: bool
    max_rows: int
    feature_types: dict[str, pa.DataType] = field(default_factory=dict)
    prediction_types: dict[str, pa.DataType] = field(default_factory=dict)
    predict_seconds: float = 0.0

    def __post_init__(self) -> None:
        meta = self.pyfunc.metadata
        self.run_id = meta.run_id
        self.input_schema = meta.get_input_schema()
        from_type_hints = getattr(meta, "_is_signature_from_type_hint", lambda: False)()
        if from_type_hints:
            self.columns = None
        self.names = [c.name for c in self.columns or []]
        self.feature_types = {c.name: _ARROW[c.type] for c in self.columns or []}
        outputs = meta.get_output_schema()
        specs = list(outputs.inputs) if outputs is not None else []
        if len(specs) == 1 and (typ := _arrow_type(specs[0])) is not None:
            self.prediction_types = {prediction_column(): typ}
        elif specs and outputs.has_input_names():
            types = {prediction_column(s.name): _arrow_type(s) for s in specs}
            self.prediction_types = {k: v for k, v in types.items() if v is not None}
        # Our own checks replace MLflow's schema enforcement (same dtypes, ~0.6 ms less per
        # request), so column-signature models are called through the flavor's wrapper.
        impl = getattr(self.pyfunc, "_model_impl", None)
        if self.columns is not None and callable(getattr(impl, "predict", None)):
            self._predict = impl.predict
        else:
            self._predict = self.pyfunc.predict
        self._takes_params = "params" in inspect.signature(self._predict).parameters
        self._indexes: dict[tuple[str, ...], pd.Index] = {}

    @property
    def label_type(self) -> pa.DataType | None:
        return self.prediction_types.get(prediction_column())

    @property
    def inline(self) -> bool:
        return self.predict_seconds < INLINE_PREDICT_SECONDS

    def parse(self, body: bytes, mime: str) -> Parsed:
        """Read a JSON or CSV body and check it against the signature."""
        if mime == "text/csv":
            try:  # utf-8-sig: a byte-order mark, as spreadsheets write, is not part of the header
                text = body.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise bad_input("invalid_encoding", "The CSV body must be UTF-8 text.") from None
            if self.columns is None:
                return self._parse_with_mlflow_csv(text)
            raw = csv_columns(text, self.columns)
            params = None
        else:
            doc = _load_json(body)
            if self.columns is None:
                return self._parse_with_mlflow(doc)
            raw = payload_columns(doc, self.names)
            params = doc.get("params")
            if params is not None and type(params) is not dict:
                raise bad_input("invalid_format", "'params' must be an object.", field="params")
        features, n_rows = check_columns(
            raw, self.columns, reject_extra=self.reject_extra, max_rows=self.max_rows
        )
        frame, key, block = self._frame(features)
        return Parsed(frame, n_rows, capture_columns(features), params, batch_key=key, block=block)

    def _frame(self, features: dict[str, Any]) -> tuple[pd.DataFrame, tuple, np.ndarray | None]:
        """The model's input frame, its batch key and (all-numeric input) the values as one
        array for the capture. Columns of one numeric numpy dtype (the common all-float
        signature) become one 2-D block under a cached column index: ~10x cheaper to build than
        a frame of 20 separate columns, and a model converts it to an array without a copy.
        Same columns, dtypes and values either way."""
        names = tuple(features)
        arrays = list(features.values())
        dtype = arrays[0].dtype if arrays else None
        numeric = isinstance(dtype, np.dtype) and dtype.kind in "biuf"
        if numeric and all(a.dtype == dtype for a in arrays):
            index = self._indexes.get(names)
            if index is None:
                index = self._indexes[names] = pd.Index(names)
            values = np.column_stack(arrays)
            frame = pd.DataFrame(values, columns=index, copy=False)
            # the capture's own copy: a model that changes its input in place changes the frame
            return frame, (names, (str(dtype),) * len(names)), values.copy()
        frame = pd.DataFrame(features, copy=False)
        return frame, (names, tuple(map(str, frame.dtypes))), None

    def _parse_with_mlflow(self, doc: Any) -> Parsed:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import infer_and_parse_data

        if type(doc) is not dict:
            raise bad_input("invalid_format", "The body must be a JSON object.")
        params = doc.get("params")
        try:
            data = infer_and_parse_data(
                {k: v for k, v in doc.items() if k != "params"}, self.input_schema
            )
        except (MlflowException, ValueError, TypeError, KeyError):
            raise bad_input(
                "invalid_format",
                "The body does not match the model input; see /openapi.json and /version.",
            ) from None
        return self._parsed(data, params)

    def _parse_with_mlflow_csv(self, text: str) -> Parsed:
        import io

        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import parse_csv_input

        try:
            data = parse_csv_input(io.StringIO(text), self.input_schema)
        except (MlflowException, ValueError):
            raise bad_input("invalid_csv", "The CSV body could not be read as a table.") from None
        return self._parsed(data, None)

    def _parsed(self, data: Any, params: Any) -> Parsed:
        n_rows = len(data) if hasattr(data, "__len__") else 1
        if n_rows > self.max_rows:
            raise ServingError(
                413,
                "too_many_rows",
                f"The request has {n_rows} rows; at most {self.max_rows} are accepted.",
                rows=n_rows,
                limit=self.max_rows,
            )
        features = None
        if isinstance(data, pd.DataFrame):
            features = {str(c): data[c].to_numpy() for c in data.columns}
        return Parsed(data, n_rows, features, params if isinstance(params, dict) else None)

    def predict(self, parsed: Parsed) -> Any:
        """Score; a model that raises on the input answers 422 without the traceback."""
        start = time.perf_counter()
        try:
            if self._takes_params:
                result = self._predict(parsed.data, params=parsed.params)
            else:
                result = self._predict(parsed.data)
        except Exception as exc:
            log.warning("model raised %s while scoring %d rows", type(exc).__name__, parsed.n_rows)
            raise ServingError(
                422,
                "prediction_failed",
                f"The model could not score this input ({type(exc).__name__}). Check the values "
                "against the model's training data; the server log has the details.",
            ) from None
        finally:
            elapsed = time.perf_counter() - start
            self.predict_seconds = 0.9 * self.predict_seconds + 0.1 * elapsed
        return result


def _load_json(body: bytes) -> Any:
    body = body.removeprefix(codecs.BOM_UTF8)  # RFC 8259 lets parsers ignore a byte-order mark
    if not body.strip():
        raise bad_input("empty_body", "The request body is empty; send a JSON scoring payload.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # MLflow clients write NaN/Infinity, which strict JSON (orjson) refuses
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise bad_input(
            "malformed_json",
            f"The body is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except (UnicodeDecodeError, RecursionError):
        raise bad_input("malformed_json", "The body is not valid UTF-8 JSON.") from None


def load_runtime(settings: ServingSettings) -> Runtime:
    """Load the pyfunc model (pinning an alias to its version) and derive its checks."""
    return load_member(settings, settings.model_uri, settings.model_name, settings.model_version)


def load_member(
    settings: ServingSettings, uri: str, name: str | None, version: str | None
) -> Runtime:
    """Load the model at `uri` (an alias pinned to its version) as a Runtime labelled
    `name`/`version` (else the ones the URI gives), checked with `settings`' limits."""
    import mlflow.pyfunc
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    # the same flag `mlflow models serve` sets; flavors use it to skip training-only work
    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"
    resolved, pinned = resolve_uri(uri)
    uri_name, uri_version = uri_labels(uri)
    pyfunc = mlflow.pyfunc.load_model(resolved)
    return Runtime(
        pyfunc=pyfunc,
        model_uri=resolved,
        name=name or uri_name,
        version=version or pinned or uri_version or "unknown",
        columns=signature_columns(pyfunc.metadata.get_input_schema()),
        reject_extra=settings.extra_columns == "reject",
        max_rows=settings.max_rows,
    )
