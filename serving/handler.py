"""The scoring logic shared by every route, free of HTTP: model state, predict, capture, metrics.

`Service` holds the settings, the loaded model runtime, the metric children and the capture
writer. The endpoints read a request and turn results or `ServingError`s into responses; what
happens between (readiness, parsing and validation, prediction, counting, capture sampling,
feedback checks) happens here.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import time
import uuid
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
from starlette.concurrency import run_in_threadpool

from . import __version__ as serving_version
from . import metrics, warning_filters
from .batching import Batcher
from .capture import CaptureWriter, Feedback, Record, pid_alive
from .errors import ServingError, bad_input
from .model import Parsed, Runtime, labels_from_uri, load_member, load_runtime
from .model import prediction_columns as capture_predictions
from .scoring import Scorer, load_scorer, member_columns
from .settings import ServingSettings
from .signature import json_type

log = logging.getLogger(__name__)

MAX_FEEDBACK_ITEMS = 10_000


class Service:
    """State shared by the routes: settings, the loaded model, metrics children, capture."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.load_error: str | None = None
        self._all_workers_ready = False
        self.capture: CaptureWriter | None = None
        self.batcher: Batcher | None = None
        self.scorer: Scorer | None = None
        self.name, self.version = labels_from_uri(settings)
        self._bind_metrics()

    def _bind_metrics(self) -> None:
        labels = (self.name, self.version)
        self.m_latency = metrics.LATENCY.labels(*labels)
        self.m_rows = metrics.ROWS.labels(*labels)
        self.m_requests: dict[int, Any] = {}

    def load(self) -> None:
        """Load the model (in a background thread, so /health/live answers meanwhile)."""
        settings = self.settings
        try:
            runtime = load_runtime(settings)
            if settings.ensemble is not None or settings.scoring_code is not None:
                scorer = load_scorer(
                    settings, runtime, lambda uri, n, v: load_member(settings, uri, n, v)
                )
                self.scorer = scorer
        except Exception as exc:
            log.exception("could not load the model %s", settings.model_uri)
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        # the model and libraries are ~1M long-lived objects; freezing them keeps full garbage
        # collections (triggered by per-request allocations) from stalling requests
        gc.collect()
        gc.freeze()
        # after the load, which imports the model's libraries and their filters
        warning_filters.settle(settings.warning_filters)
        self.name, self.version = runtime.name, runtime.version
        self._bind_metrics()
        if self.settings.capture_uri:
            capture = CaptureWriter(
                self.settings.capture_uri,
                runtime.name,
                runtime.version,
                feature_types=runtime.feature_types,
                prediction_types=self._prediction_types(runtime),
                label_type=runtime.label_type,
                flush_seconds=self.settings.capture_flush_seconds,
                batch_rows=self.settings.capture_batch_rows,
                queue_rows=self.settings.capture_queue_rows,
                spool_dir=self.settings.capture_spool_dir,
                spool_max_bytes=self.settings.capture_spool_max_bytes,
            )
            capture.start()
            self.capture = capture
        # scoring code and ensembles score request by request (see scoring.Scorer)
        self.batcher = (
            None
            if self.scorer is not None
            else Batcher(
                runtime,
                enabled=self.settings.batching,
                max_rows=self.settings.batch_max_rows,
                max_wait_ms=self.settings.batch_max_wait_ms,
                verify=self.settings.batch_verify,
                labels=(self.name, self.version),
            )
        )
        self.runtime = runtime
        if self.settings.ready_dir is not None:
            (self.settings.ready_dir / str(os.getpid())).touch()
        log.info("model %s version %s is ready", runtime.name, runtime.version)

    def _prediction_types(self, runtime: Runtime) -> dict[str, pa.DataType]:
        """Capture types of the response's predictions: the model's, unless an ensemble mean
        (float64) or scoring code (inferred from what it returns) shapes them."""
        ensemble = self.settings.ensemble
        if self.settings.scoring_code is not None:
            return {}
        if ensemble is not None and ensemble.combiner in ("mean", "weighted_mean"):
            return {name: pa.float64() for name in runtime.prediction_types}
        return runtime.prediction_types

    def count(self, status: int, code: str | None = None) -> None:
        """Count one /invocations answer by HTTP status, and by error code when it failed."""
        child = self.m_requests.get(status)
        if child is None:
            child = self.m_requests[status] = metrics.REQUESTS.labels(
                self.name, self.version, str(status)
            )
        child.inc()
        if code is not None:
            metrics.ERRORS.labels(self.name, self.version, str(status), code).inc()

    def sampled(self) -> bool:
        """Whether to capture this request: capture is on and the sample rate draws it."""
        rate = self.settings.sample_rate
        return self.capture is not None and (rate >= 1.0 or random.random() < rate)

    def reject_unauthorized(self, path: str) -> None:
        """Count (and when sampled, capture) a request to /invocations refused for its API key."""
        if path == "/invocations":
            self.count(401, "unauthorized")
            if self.sampled():
                self.capture.submit(
                    Record(uuid.uuid4().hex, time.time(), 401, "unauthorized", 0.0, 0, None, None)
                )

    def check_ready(self) -> None:
        """Raise 503 until the model is loaded, in every worker: `model_load_failed` with why,
        else `not_ready`."""
        if self.runtime is None and self.load_error:
            raise ServingError(503, "model_load_failed", self.load_error)
        if self.runtime is None:
            raise ServingError(503, "not_ready", "The model is still loading.")
        if not self._all_workers_ready:
            loaded = self._workers_loaded()
            if loaded < self.settings.workers:
                raise ServingError(
                    503,
                    "not_ready",
                    f"{loaded} of {self.settings.workers} workers have loaded the model.",
                )
            self._all_workers_ready = True  # a worker restarted later answers for itself

    def _workers_loaded(self) -> int:
        """Live worker processes that marked `ready_dir` (all of them without one)."""
        ready_dir = self.settings.ready_dir
        if ready_dir is None:
            return self.settings.workers
        return sum(1 for m in ready_dir.iterdir() if m.name.isdigit() and pid_alive(int(m.name)))

    def scoring_runtime(self) -> Runtime:
        """The loaded runtime to score with; ServingError 503 `not_ready` while it loads."""
        runtime = self.runtime
        if runtime is None:
            raise ServingError(503, "not_ready", "The model is still loading; retry shortly.")
        return runtime

    async def read(self, read_body: Any) -> bytes:
        """Await `read_body` (a coroutine giving the request body), counted as arriving so a
        batch being formed may wait for it (see `batching.Batcher`)."""
        batcher = self.batcher
        if batcher is None:
            return await read_body
        batcher.arriving += 1
        try:
            return await read_body
        finally:
            batcher.arriving -= 1

    async def predict(self, runtime: Runtime, body: bytes, mime: str) -> tuple[Parsed, Any]:
        """Parse and check `body` (of MIME type `mime`) against the signature, then score it.

        Returns the parsed input and the model's raw output for it alone; raises ServingError
        4xx for input that does not fit the signature (before it is queued, so it never joins
        a batch) or that the model refuses. Scoring goes through the worker's `Batcher`: one
        predict at a time, combined with concurrent requests where that is safe.
        """
        scorer = self.scorer
        if scorer is not None:
            parsed = scorer.parse(body, mime)
            return parsed, await run_in_threadpool(scorer.score, parsed)
        parsed = runtime.parse(body, mime)
        return parsed, await self.batcher.score(parsed)

    def observe(
        self,
        request_id: str,
        elapsed: float,
        status: int,
        error: ServingError | None,
        parsed: Parsed | None,
        raw: Any,
    ) -> None:
        """Count a finished /invocations request (latency in seconds, status, rows) and, when
        sampled, capture it: features and predictions on success, the error code otherwise."""
        self.m_latency.observe(elapsed)
        if status == 200:
            self.count(200)
            self.m_rows.inc(parsed.n_rows)
        else:
            self.count(status, error.code)
        if self.sampled():
            ok = status == 200
            self.capture.submit(
                Record(
                    request_id,
                    time.time(),
                    status,
                    None if ok else error.code,
                    elapsed * 1000.0,
                    parsed.n_rows if ok else 0,
                    parsed.features if ok else None,
                    self._captured_predictions(parsed, raw) if ok else None,
                    parsed.block if ok else None,
                )
            )

    @staticmethod
    def _captured_predictions(parsed: Parsed, raw: Any) -> dict[str, Any] | None:
        """The response's prediction columns plus, for an ensemble, each member's."""
        if isinstance(raw, list) and raw and all(type(r) is dict for r in raw):
            raw = pd.DataFrame.from_records(raw)  # typed scoring code: one object per row
        combined = capture_predictions(raw, parsed.n_rows)
        members = member_columns(parsed.members, parsed.n_rows, capture_predictions)
        if not members:
            return combined
        return {**(combined or {}), **members}

    def version_info(self) -> dict[str, Any]:
        """Model name, version, URI, run id, image, library versions and input columns."""
        import mlflow.version

        rt = self.runtime
        return {
            "model_name": self.name,
            "model_version": self.version,
            "model_uri": rt.model_uri if rt else self.settings.model_uri,
            "run_id": rt.run_id if rt else None,
            "image": self.settings.image,
            "mlflow_version": mlflow.version.VERSION,
            "serving_version": serving_version,
            # which worker process answered: lets a client see connections spread over workers
            "worker_pid": os.getpid(),
            "columns": [
                {"name": c.name, "type": c.type, "required": c.required} for c in (rt.columns or [])
            ]
            if rt
            else [],
            **self._scorer_info(),
        }

    def _scorer_info(self) -> dict[str, Any]:
        """Ensemble members (name, version, URI, run id, weight), combiner and scoring code."""
        settings = self.settings
        info: dict[str, Any] = {
            "scoring_code": settings.scoring_code.name if settings.scoring_code else None,
            # the body is run()'s own JSON type, not an MLflow payload (clients send it as is)
            "typed_input": self.scorer is not None and self.scorer.typed_input,
        }
        if settings.ensemble is None:
            return info
        info["combiner"] = settings.ensemble.combiner
        members = self.scorer.model.members if self.scorer is not None else []
        info["members"] = [
            {
                "model_name": m.runtime.name,
                "model_version": m.runtime.version,
                "model_uri": m.runtime.model_uri,
                "run_id": m.runtime.run_id,
                "weight": m.weight,
            }
            for m in members
        ]
        return info

    def feedback_runtime(self) -> Runtime:
        """The runtime whose labels feedback must match; ServingError 503 while the model loads,
        409 `capture_disabled` when there is no capture to store feedback beside."""
        runtime = self.scoring_runtime()
        if self.capture is None:
            raise ServingError(
                409,
                "capture_disabled",
                "Feedback is stored beside the capture; start the service with a capture URI.",
            )
        return runtime

    def record_feedback(self, runtime: Runtime, body: bytes) -> int:
        """Check a feedback body (see `parse_feedback`) and queue its labels beside the
        capture; returns how many were accepted."""
        items = parse_feedback(body, runtime.label_type)
        now = time.time()
        for item in items:
            self.capture.submit(Feedback(item["request_id"], item.get("row"), item["label"], now))
        return len(items)


def _label_kind(label_type: pa.DataType | None) -> tuple[tuple[type, ...], str] | None:
    """JSON types a label must have to be stored in the type of the model's output."""
    if label_type is None:
        return None
    if pa.types.is_integer(label_type):
        return (int,), "integer"
    if pa.types.is_floating(label_type):
        return (int, float), "number"
    if pa.types.is_boolean(label_type):
        return (bool,), "boolean"
    if pa.types.is_string(label_type):
        return (str,), "string"
    return None


def parse_feedback(body: bytes, label_type: pa.DataType | None) -> list[dict[str, Any]]:
    """Check a feedback body: one {request_id, label, row?} object or {"feedback": [...]};
    labels must fit the model's output type so every feedback file has the same schema."""
    kind = _label_kind(label_type)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_input("malformed_json", "The feedback body is not valid JSON.") from None
    items = doc.get("feedback") if type(doc) is dict and "feedback" in doc else [doc]
    if type(items) is not list or not items:
        raise bad_input("invalid_format", "'feedback' must be a non-empty list.", field="feedback")
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise ServingError(
            413, "too_many_rows", f"At most {MAX_FEEDBACK_ITEMS} labels per request."
        )
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise bad_input("invalid_format", f"Feedback item {i} must be an object.", row=i)
        unknown = set(item) - {"request_id", "row", "label"}
        if unknown:
            field = sorted(map(str, unknown))[0]
            raise bad_input(
                "unexpected_field", f"Feedback item {i} has unknown field '{field}'.", field=field
            )
        rid = item.get("request_id")
        if type(rid) is not str or not 0 < len(rid) <= 128:
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'request_id' must be the X-Request-ID string of a response.",
                field="request_id",
                row=i,
            )
        if "label" not in item or type(item["label"]) not in (int, float, str, bool):
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'label' must be a number, string or boolean, "
                f"got {json_type(item.get('label'))}.",
                field="label",
                row=i,
            )
        if kind is not None and type(item["label"]) not in kind[0]:
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'label' must be a {kind[1]} like the model's predictions, "
                f"got {json_type(item['label'])}.",
                field="label",
                row=i,
                expected=kind[1],
            )
        row = item.get("row")
        if row is not None and (type(row) is not int or row < 0):
            raise bad_input(
                "wrong_type",
                f"Feedback item {i}: 'row' must be a non-negative integer or absent.",
                field="row",
                row=i,
            )
    return items
