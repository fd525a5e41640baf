"""Custom scoring code, after Azure ML's score.py: a module with `init()` and `run(data)`.

The module (MLOPS_SERVING_SCORING_CODE) is imported once per worker, after the model loaded:

* `init(model)` (or `init()`) runs once; `model` is the served model (or ensemble) with
  `model.predict(data)`, the same object `run` may take as a second parameter.
* `run(data)` (or `run(data, model)`) answers each request; its result is the `predictions`
  of the response, as for a plain model.
* `combine(predictions)` (optional) merges ensemble members for the `custom` combiner;
  `predictions` maps "name/version" to each member's raw prediction, in member order.

Types: when `run` annotates `data` (a pydantic model, `list[Model]`, `dict[str, float]`, ...)
the JSON body is validated into that type and the OpenAPI request schema is its JSON Schema;
without an annotation (or with `pandas.DataFrame`) the body is checked against the model's
signature and `run` gets the DataFrame, as the model would. A return annotation sets the
schema of `predictions`.

Errors: what `run` raises answers the client without a traceback (the service log keeps it):
an exception with an integer `status_code` (400-599) -> that status; a pydantic
ValidationError -> 400 `invalid_input`; ValueError, TypeError, LookupError (KeyError,
IndexError) -> 400 `scoring_code_rejected` with the exception's message; anything else -> 500
`scoring_code_failed`.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from .errors import ServingError, bad_input

log = logging.getLogger(__name__)

MODULE_NAME = "mlops_scoring_code"
# annotations that mean "the model's own input": the body is checked against its signature
_MODEL_INPUT_TYPES = (inspect.Parameter.empty, Any, pd.DataFrame, np.ndarray)
_MESSAGE_CHARS = 300


def _params(func: Callable[..., Any]) -> list[inspect.Parameter]:
    return list(inspect.signature(func).parameters.values())


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except (NameError, TypeError):  # an unresolvable forward reference: treat as untyped
        log.warning("could not resolve the type hints of %s; treating it as untyped", func)
        return {}


class ScoringCode:
    """A loaded scoring module: its `init`, `run` and optional `combine`, with their types."""

    def __init__(self, path: Path) -> None:
        """Import the module at `path`; ValueError when it lacks `init` or `run`."""
        spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"{path} is not a Python module (expected a .py file).")
        module = importlib.util.module_from_spec(spec)
        # registered before executing, so pydantic and pickle can resolve the module's classes
        sys.modules[MODULE_NAME] = module
        spec.loader.exec_module(module)
        self.path = path
        self.module = module
        self._init = getattr(module, "init", None)
        self._run = getattr(module, "run", None)
        if not callable(self._init) or not callable(self._run):
            raise ValueError(f"{path} must define init() and run(data).")
        combine = getattr(module, "combine", None)
        self.combine: Callable[[dict[str, Any]], Any] | None = (
            combine if callable(combine) else None
        )
        self._init_takes_model = len(_params(self._init)) >= 1
        run_params = _params(self._run)
        if not run_params:
            raise ValueError(f"run() in {path} must take the request data: run(data).")
        self._run_takes_model = len(run_params) >= 2
        hints = _hints(self._run)
        data_type = hints.get(run_params[0].name, inspect.Parameter.empty)
        self.input_adapter = (
            None if any(data_type is t for t in _MODEL_INPUT_TYPES) else TypeAdapter(data_type)
        )
        output_type = hints.get("return", inspect.Parameter.empty)
        self.output_adapter = (
            None if any(output_type is t for t in _MODEL_INPUT_TYPES) else TypeAdapter(output_type)
        )

    def start(self, model: Any) -> None:
        """Call `init(model)` or `init()` once; its errors propagate (the load fails)."""
        if self._init_takes_model:
            self._init(model)
        else:
            self._init()

    def parse(self, body: bytes) -> Any:
        """Validate a JSON body into `run`'s declared input type; 400 `invalid_input` naming
        each failing location (never the submitted values)."""
        try:
            return self.input_adapter.validate_json(body)
        except ValidationError as exc:
            raise _validation_error(exc) from None

    def run(self, data: Any, model: Any) -> Any:
        """Call `run` and return its output, dumped to JSON-ready values when it is typed;
        a user error becomes a ServingError (see the module docstring) and is logged."""
        try:
            result = self._run(data, model) if self._run_takes_model else self._run(data)
            if self.output_adapter is not None:
                result = self.output_adapter.dump_python(result, mode="json")
            return result
        except ServingError:
            raise
        except Exception as exc:
            raise user_error(exc, "run") from None

    def input_schema(self) -> dict[str, Any] | None:
        """JSON Schema of `run`'s declared input (definitions under `$defs`), else None."""
        return None if self.input_adapter is None else self.input_adapter.json_schema()

    def output_schema(self) -> dict[str, Any] | None:
        """JSON Schema of `run`'s declared output, else None."""
        if self.output_adapter is None:
            return None
        return self.output_adapter.json_schema(mode="serialization")


def user_error(exc: Exception, where: str) -> ServingError:
    """The client's answer to an exception from user code; the traceback goes to the log."""
    log.error("scoring code %s() raised %s", where, type(exc).__name__, exc_info=exc)
    status = getattr(exc, "status_code", None)
    message = str(exc).strip().splitlines()[0][:_MESSAGE_CHARS] if str(exc).strip() else ""
    kind = type(exc).__name__
    if isinstance(exc, ValidationError):
        return _validation_error(exc)
    if type(status) is int and 400 <= status <= 599:
        return ServingError(status, "scoring_code_error", message or kind, exception=kind)
    if isinstance(exc, ValueError | TypeError | LookupError):
        return bad_input(
            "scoring_code_rejected",
            f"The scoring code rejected the input: {kind}" + (f": {message}" if message else "."),
            exception=kind,
        )
    return ServingError(
        500,
        "scoring_code_failed",
        f"The scoring code failed ({kind}); the server log has the details.",
        exception=kind,
    )


def _validation_error(exc: ValidationError) -> ServingError:
    problems = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_input=False, include_url=False)[:20]
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid"}
    where = ".".join(first["loc"]) or "body"
    return bad_input(
        "invalid_input",
        f"The body does not match the scoring code's input type: {where}: {first['msg']}.",
        errors=problems,
    )


def typed_features(data: Any) -> tuple[int, dict[str, np.ndarray] | None]:
    """Rows and capture columns of a validated typed input: one row for an object, one per
    item for a list of objects; columns only when every value is a scalar."""
    dumped = orjson.loads(orjson.dumps(data, default=_dump_default))
    records = dumped if isinstance(dumped, list) else [dumped]
    if not records or not all(isinstance(r, dict) for r in records):
        return len(records) or 1, None
    if any(isinstance(v, dict | list) for r in records for v in r.values()):
        return len(records), None
    frame = pd.DataFrame.from_records(records)
    return len(records), {str(c): frame[c].to_numpy() for c in frame.columns}


def _dump_default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
