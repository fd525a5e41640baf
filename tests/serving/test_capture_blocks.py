"""The capture's block path: all-numeric requests' features stacked in one concatenate give the
same table as the column-by-column gather, with rejected requests as null rows."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from mlops_pipeline.serving.capture import CaptureWriter, Record

NAMES = ["a", "b", "c"]


def _writer(tmp_path: Path, typ: pa.DataType = pa.float64()) -> CaptureWriter:
    return CaptureWriter(
        str(tmp_path / "capture"),
        "m",
        "1",
        feature_types={n: typ for n in NAMES},
        prediction_types={"prediction": pa.int64()},
        label_type=pa.int64(),
        flush_seconds=5,
        batch_rows=1000,
        queue_rows=1000,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=10**8,
    )


def _record(rows: int, seed: int, *, block: bool = True, dtype=np.float64) -> Record:
    values = np.random.default_rng(seed).normal(size=(rows, len(NAMES))).astype(dtype)
    features = {n: values[:, j].copy() for j, n in enumerate(NAMES)}
    return Record(
        uuid.uuid4().hex,
        time.time(),
        200,
        None,
        1.5,
        rows,
        features,
        {"prediction": np.arange(rows)},
        values if block else None,
    )


def _rejected() -> Record:
    return Record(uuid.uuid4().hex, time.time(), 400, "wrong_type", 0.4, 0, None, None)


def _without_blocks(records: list[Record]) -> list[Record]:
    return [Record(*(getattr(r, f) for f in Record.__slots__ if f != "block")) for r in records]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_path_gives_the_same_table_as_the_gather(tmp_path, dtype):
    writer = _writer(tmp_path)
    records = [_record(1, 0, dtype=dtype), _rejected(), _record(100, 1, dtype=dtype)]
    records += [_record(3, 2, dtype=dtype)]
    counts = [max(r.n_rows, 1) for r in records]
    assert writer._block_columns(records, counts) is not None
    fast = writer._capture_table(records)
    slow = writer._capture_table(_without_blocks(records))
    assert fast.equals(slow)
    assert fast.num_rows == 1 + 1 + 100 + 3
    assert fast.column("a").null_count == 1  # the rejected request's row
    assert fast.column("a").type == pa.float64()


def test_a_record_without_a_block_or_with_other_columns_takes_the_gather(tmp_path):
    writer = _writer(tmp_path)
    mixed = [_record(2, 0), _record(2, 1, block=False)]
    assert writer._block_columns(mixed, [2, 2]) is None
    other = _record(2, 3)
    other.features = {"a": other.features["a"], "b": other.features["b"], "x": np.zeros(2)}
    assert writer._block_columns([_record(2, 0), other], [2, 2]) is None
    table = writer._capture_table(mixed)
    expected = np.concatenate([r.features["b"] for r in mixed])
    np.testing.assert_array_equal(table.column("b").to_numpy(), expected)
    assert writer._block_columns([_rejected()], [1]) is None  # nothing scored: no block
