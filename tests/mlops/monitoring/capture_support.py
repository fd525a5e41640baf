"""Capture files shaped like serving/capture.py writes them, for monitor tests."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MODEL, VERSION = "churn", "3"


def capture_table(
    frame: pd.DataFrame, start: dt.datetime, request_prefix: str, version: str = VERSION
) -> pa.Table:
    """A table shaped like serving/capture.py writes: features, prediction, metadata."""
    n = len(frame)
    columns = {name: pa.array(frame[name].to_numpy()) for name in frame.columns}
    columns |= {
        "_request_id": pa.array([f"{request_prefix}-{i // 10}" for i in range(n)], pa.string()),
        "_row": pa.array([i % 10 for i in range(n)], pa.int64()),
        "_ts": pa.array(
            [start + dt.timedelta(milliseconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")
        ),
        "_model_name": pa.array([MODEL] * n, pa.string()),
        "_model_version": pa.array([version] * n, pa.string()),
        "_status": pa.array([200] * n, pa.int32()),
        "_error_code": pa.array([None] * n, pa.string()),
        "_latency_ms": pa.array(np.full(n, 2.5)),
    }
    return pa.table(columns)


def write_capture(
    root: Path,
    table: pa.Table,
    at: dt.datetime,
    model: str = MODEL,
    version: str = VERSION,
    feedback: bool = False,
) -> str:
    """Write one capture file under the contract's layout; returns its relative path."""
    prefix = "feedback/" if feedback else ""
    rel = (
        f"{prefix}model={model}/version={version}/date={at:%Y-%m-%d}/"
        f"part-{at:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex}.parquet"
    )
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return rel
