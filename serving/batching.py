"""Adaptive micro-batching over one bounded inference thread per worker.

Every scoring request of a worker goes through one `Batcher`: requests are validated first
(`Runtime.parse`), then queued; one task takes them in arrival order and runs one `predict` at
a time, either inline (models faster than `INLINE_PREDICT_SECONDS`) or on the worker's single
inference thread. So predictions never contend with each other beside the event loop, and the
loop keeps reading, parsing and answering requests while one runs.

Adaptive: a batch is taken as soon as the model is free, so an idle service adds no wait; while
a predict runs, the requests arriving meanwhile queue up and form the next batch (up to
`batch_max_rows` rows). A batch also waits up to `batch_max_wait_ms` for requests whose bodies
are still being read.

A request joins a batch only when it can be scored together with others and split back:

- the model has a column signature, so every request is a checked pandas frame;
- the request has no `params` (params may change what the model does);
- its frame has the same columns and dtypes as the batch's first request (so the concatenated
  frame has the dtypes each request would have had alone).

Everything else is scored alone, in turn. A combined `predict` whose output is not one row per
input row (frame, series, array or list of the total length) turns batching off for the model,
and its requests are scored alone. The first `batch_verify` combined batches are also scored
request by request and compared by their JSON answer: a model whose rows depend on each other,
or whose numerics differ by batch size (BLAS kernels for linear models do), gets batching turned
off, so a request's answer is always the one it gets scored alone. A combined predict that
raises is retried request by request, so one bad request only fails itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import metrics
from .model import Parsed, Runtime, predictions_json

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Item:
    parsed: Parsed
    future: asyncio.Future
    key: tuple | None  # None: scored alone
    arrived: float = field(default_factory=time.monotonic)


def split_rows(raw: Any, counts: list[int]) -> list[Any] | None:
    """`raw`, the output for `sum(counts)` rows, cut into one part per request, or None when
    it is not one row per input row (then the batch cannot be split back)."""
    total = sum(counts)
    bounds = np.cumsum([0, *counts]).tolist()
    spans = list(zip(bounds, bounds[1:], strict=False))
    if isinstance(raw, pd.DataFrame | pd.Series):
        if len(raw) != total:
            return None
        return [raw.iloc[a:b].reset_index(drop=True) for a, b in spans]
    if isinstance(raw, np.ndarray):
        if raw.ndim == 0 or raw.shape[0] != total:
            return None
        return [raw[a:b] for a, b in spans]
    if isinstance(raw, list):
        if len(raw) != total:
            return None
        return [raw[a:b] for a, b in spans]
    return None


def same_answer(a: Any, b: Any) -> bool:
    """Whether two outputs give the same /invocations body, byte for byte."""
    try:
        return predictions_json(a) == predictions_json(b)
    except (TypeError, ValueError):
        return False


class Batcher:
    """Queues a worker's validated requests and scores them, combined where that is safe.

    Args:
        runtime: the loaded model.
        enabled: whether requests may be combined at all (`MLOPS_SERVING_BATCHING`).
        max_rows: most rows in one combined predict; a larger request is scored alone.
        max_wait_ms: longest a batch waits for requests still being read, in milliseconds.
        verify: combined batches to check against scoring each request alone.
        labels: model name and version, for the batch-size histogram.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        enabled: bool,
        max_rows: int,
        max_wait_ms: float,
        verify: int,
        labels: tuple[str, str],
    ) -> None:
        self.runtime = runtime
        self.enabled = enabled and runtime.columns is not None
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000.0
        self.verify_left = verify
        self.arriving = 0  # requests whose body is being read (they may join the next batch)
        self._queue: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # one thread: a second concurrent predict only competes for the same cores and GIL
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._m_batch = metrics.BATCH_SIZE.labels(*labels)
        self._m_batch_rows = metrics.BATCH_ROWS.labels(*labels)
        if enabled and not self.enabled:
            log.info("micro-batching is off: the model has no column signature")

    def _key(self, parsed: Parsed) -> tuple | None:
        if not self.enabled or parsed.params is not None or parsed.n_rows > self.max_rows:
            return None
        return parsed.batch_key

    async def score(self, parsed: Parsed) -> Any:
        """The model's output for this request alone (raises ServingError 422 as predict)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="batcher")
        item = _Item(parsed, loop.create_future(), self._key(parsed))
        self._queue.append(item)
        self._wake.set()
        return await item.future

    def close(self) -> None:
        """Stop the batching task and let the inference thread end after its current call."""
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._gather()
                batch = self._take()
                try:
                    await self._dispatch(batch)
                except Exception as exc:  # never lose the loop: fail this batch's requests
                    log.error("batch of %d failed: %s", len(batch), type(exc).__name__)
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)

    async def _gather(self) -> None:
        """Wait (at most `max_wait` from the oldest request) while requests are still being
        read and the batch is not full: they would otherwise just miss it."""
        first = self._queue[0]
        if first.key is None or self.max_wait <= 0:
            return
        deadline = first.arrived + self.max_wait
        while self.arriving > 0 and sum(i.parsed.n_rows for i in self._queue) < self.max_rows:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
        first = self._queue.popleft()
        batch = [first]
        if first.key is None or not self.enabled:
            return batch
        rows = first.parsed.n_rows
        rest: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.key == first.key and rows + item.parsed.n_rows <= self.max_rows:
                batch.append(item)
                rows += item.parsed.n_rows
            else:
                rest.append(item)
        self._queue.extendleft(reversed(rest))  # the others keep their places
        return batch

    async def _predict(self, parsed: Parsed) -> Any:
        if self.runtime.inline:
            return self.runtime.predict(parsed)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.runtime.predict, parsed)

    async def _alone(
        self, items: list[_Item], *, observe: bool = True
    ) -> list[tuple[Any, Exception | None]]:
        """Each item scored by itself: its output or its exception. `observe=False` for the
        checks of a combined batch, whose requests the histogram already counted."""
        out = []
        for item in items:
            if observe:
                self._m_batch.observe(1)
                self._m_batch_rows.observe(item.parsed.n_rows)
            try:
                out.append((await self._predict(item.parsed), None))
            except Exception as exc:
                out.append((None, exc))
        return out

    @staticmethod
    def _answer(items: list[_Item], results: list[tuple[Any, Exception | None]]) -> None:
        for item, (raw, exc) in zip(items, results, strict=True):
            if item.future.done():  # the client went away
                continue
            if exc is not None:
                item.future.set_exception(exc)
            else:
                item.future.set_result(raw)

    async def _dispatch(self, batch: list[_Item]) -> None:
        if len(batch) == 1:
            self._answer(batch, await self._alone(batch))
            return
        counts = [i.parsed.n_rows for i in batch]
        frame = pd.concat([i.parsed.data for i in batch], ignore_index=True)
        combined = Parsed(frame, sum(counts), None, None)
        try:
            raw = await self._predict(combined)
        except Exception:
            # one request's rows may be what the model refuses: each gets its own answer
            self._answer(batch, await self._alone(batch))
            return
        parts = split_rows(raw, counts)
        if parts is None:
            self._turn_off(f"its output ({type(raw).__name__}) is not one row per input row")
            self._answer(batch, await self._alone(batch))
            return
        self._m_batch.observe(len(batch))
        self._m_batch_rows.observe(combined.n_rows)
        if self.verify_left > 0:
            alone = await self._alone(batch, observe=False)
            pairs = zip(parts, alone, strict=True)
            if any(e is not None or not same_answer(p, r) for p, (r, e) in pairs):
                self._turn_off("a combined batch answered differently from scoring alone")
            else:
                self.verify_left -= 1
            self._answer(batch, alone)
            return
        self._answer(batch, [(p, None) for p in parts])

    def _turn_off(self, why: str) -> None:
        if self.enabled:
            self.enabled = False
            log.info("micro-batching is off for this model: %s", why)
