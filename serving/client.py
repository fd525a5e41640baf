"""A small Python client for the scoring service: retries, API key, keep-alive, TCP_NODELAY.

from .client import ScoringClient
with ScoringClient("http://127.0.0.1:8080", api_key=os.environ["MLOPS_API_KEY"]) as c:
    result = c.predict(frame)          # DataFrame, list of row dicts, or dict of columns
    c.feedback(result.request_id, label=1)
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ScoringError(Exception):
    """The service answered with an error (status, code, message, details) or was unreachable."""

    def __init__(
        self, status: int | None, code: str, message: str, details: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True)
class Prediction:
    predictions: list
    request_id: str | None


def read_api_key(path: str | Path) -> str:
    """The primary key: the first line of an API key file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"API key file {path} has no key on its first line.")
    return lines[0].strip()


def to_payload(data: Any) -> dict[str, Any]:
    """A DataFrame, list of row dicts, dict of columns or a ready MLflow payload -> JSON body."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        split = data.to_dict(orient="split")
        return {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}
    if isinstance(data, dict):
        formats = {"dataframe_split", "dataframe_records", "instances", "inputs"}
        return data if formats & data.keys() else {"inputs": data}
    if isinstance(data, list):
        return {"dataframe_records": data}
    raise TypeError(f"cannot send {type(data).__name__}; pass a DataFrame, list or dict")


class ScoringClient:
    """Talks to one scoring service; retries connection errors and 429/502/503/504."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        api_key = api_key or os.environ.get("MLOPS_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # NODELAY: without it small requests wait on delayed ACKs (the ~40 ms floor)
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, self.url + path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise ScoringError(
                        None, "unreachable", f"Cannot reach {self.url}: {exc}"
                    ) from exc
            else:
                if response.status_code not in RETRY_STATUSES or last:
                    return response
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        try:
            error = orjson.loads(response.content)["error"]
            code, message, details = error["code"], error["message"], error.get("details")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            code, message, details = "http_error", f"HTTP {response.status_code}", None
        raise ScoringError(response.status_code, code, message, details)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Prediction:
        """Score rows; returns the predictions and the request id to send feedback for."""
        payload = to_payload(data)
        if params:
            payload = {**payload, "params": params}
        return self.predict_raw(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))

    def predict_raw(self, body: bytes, content_type: str = "application/json") -> Prediction:
        """Send an already encoded JSON or CSV body."""
        response = self._check(
            self._request(
                "POST", "/invocations", content=body, headers={"Content-Type": content_type}
            )
        )
        return Prediction(
            orjson.loads(response.content)["predictions"], response.headers.get("X-Request-ID")
        )

    def feedback(self, request_id: str, label: Any, row: int | None = None) -> int:
        """Send the ground-truth label of an earlier request (or one of its rows)."""
        item = {"request_id": request_id, "label": label}
        if row is not None:
            item["row"] = row
        response = self._check(self._request("POST", "/feedback", json=item))
        return orjson.loads(response.content)["accepted"]

    def ready(self) -> bool:
        try:
            return self._http.get(self.url + "/ready").status_code == 200
        except httpx.TransportError:
            return False

    def version(self) -> dict[str, Any]:
        return orjson.loads(self._check(self._request("GET", "/version")).content)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until /ready answers 200, or raise after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ScoringError(None, "not_ready", f"{self.url} not ready after {timeout}s")
            time.sleep(0.1)
