"""Scoring beyond one plain model: ensemble members and/or custom scoring code.

A `Scorer` replaces the `Batcher` path when the service has an ensemble or scoring code: each
request is parsed (by the code's input type, else the primary model's signature), then scored
in a worker thread, one request at a time per process (user code need not be thread-safe).
Member predictions of the request are kept on its `Parsed` for the capture.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ensemble import combine
from .errors import ServingError
from .model import Parsed, Runtime
from .settings import ServingSettings
from .user_code import ScoringCode, typed_features, user_error

# the member predictions of the request being scored (set per call in the scoring thread)
_MEMBERS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ensemble_members", default=None
)


@dataclass
class Member:
    """One loaded ensemble member."""

    runtime: Runtime
    weight: float

    @property
    def label(self) -> str:
        return f"{self.runtime.name}/{self.runtime.version}"


class ServedModel:
    """What scoring code gets as `model`: `predict(data)` scores with the model, or with
    every ensemble member and the combiner. `members` lists the loaded members."""

    def __init__(
        self, members: list[Member], combiner: str | None, code: ScoringCode | None
    ) -> None:
        self.members = members
        self.combiner = combiner
        self._code = code

    @property
    def primary(self) -> Runtime:
        return self.members[0].runtime

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Score `data` (what the model takes: usually a DataFrame); a model that refuses the
        input answers 422 `prediction_failed`."""
        n_rows = len(data) if hasattr(data, "__len__") else 1
        parsed = Parsed(data, n_rows, None, params)
        if self.combiner is None:
            return self.primary.predict(parsed)
        predictions = {m.label: m.runtime.predict(parsed) for m in self.members}
        recorded = _MEMBERS.get()
        if recorded is not None:
            recorded.update(predictions)
        custom = self._code.combine if self._code is not None else None
        try:
            return combine(predictions, self.combiner, [m.weight for m in self.members], custom)
        except ServingError:
            raise
        except Exception as exc:  # custom combine() is user code
            raise user_error(exc, "combine") from None


class Scorer:
    """Parse and score requests through the ensemble and/or the scoring code."""

    def __init__(self, model: ServedModel, code: ScoringCode | None) -> None:
        self.model = model
        self.code = code
        self._lock = threading.Lock()

    @property
    def typed_input(self) -> bool:
        return self.code is not None and self.code.input_adapter is not None

    def parse(self, body: bytes, mime: str) -> Parsed:
        """The request as `run` (or the model) takes it; 4xx ServingError when it does not fit."""
        if not self.typed_input:
            return self.model.primary.parse(body, mime)
        if mime != "application/json":
            raise ServingError(
                415,
                "unsupported_media_type",
                "The scoring code declares a JSON input type; send application/json.",
                expected=["application/json"],
            )
        data = self.code.parse(body)
        n_rows, features = typed_features(data)
        return Parsed(data, n_rows, features)

    def score(self, parsed: Parsed) -> Any:
        """The response's predictions for `parsed`; member predictions land on `parsed.members`."""
        members: dict[str, Any] = {}
        token = _MEMBERS.set(members)
        try:
            with self._lock:
                if self.code is not None:
                    result = self.code.run(parsed.data, self.model)
                else:
                    result = self.model.predict(parsed.data, parsed.params)
        finally:
            _MEMBERS.reset(token)
        parsed.members = members or None
        return result


def load_scorer(settings: ServingSettings, primary: Runtime, load: Any) -> Scorer:
    """Load the other members (with `load(uri, name, version)` -> Runtime) and the scoring
    code around `primary`, and run the code's `init`.

    Raises:
        ValueError: the code lacks init/run, or the custom combiner lacks `combine`.
        Whatever loading a member or `init` raises.
    """
    ensemble = settings.ensemble
    members = [Member(primary, ensemble.primary_weight if ensemble else 1.0)]
    if ensemble is not None:
        members += [
            Member(load(m.model_uri, m.model_name, m.model_version), m.weight)
            for m in ensemble.members
        ]
    code = ScoringCode(settings.scoring_code) if settings.scoring_code else None
    combiner = ensemble.combiner if ensemble else None
    if combiner == "custom" and (code is None or code.combine is None):
        raise ValueError("The custom combiner needs scoring code that defines combine().")
    model = ServedModel(members, combiner, code)
    if code is not None:
        code.start(model)
    return Scorer(model, code)


def member_columns(members: dict[str, Any] | None, n_rows: int, columns: Any) -> dict[str, Any]:
    """Capture columns `_member.<name>/<version>.<prediction column>` of the members that
    returned one value per row (`columns(raw, n_rows)` names a member's prediction columns)."""
    found: dict[str, np.ndarray] = {}
    for label, raw in (members or {}).items():
        for name, values in (columns(raw, n_rows) or {}).items():
            found[f"_member.{label}.{name}"] = values
    return found
