"""Capture on object storage (`s3://`), through real s3fs, against moto's S3 server as a stand-in
(tests/fakes/s3.py): the store stops under continuous load, the rows spool locally, it comes
back on the same port, and they are uploaded. The counts are exact and no request fails; the
monitor's reader then reads every row back from the bucket."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pandas as pd
import pytest
from mlops_pipeline.monitoring.captures import list_capture_files, read_capture_files

from tests.fakes.s3 import S3StandIn, s3_stand_in
from tests.serving.conftest import IRIS_COLUMNS, start_server, wait_for

LABELS = {"model_name": "iris", "model_version": "1"}
log = logging.getLogger(__name__)


@pytest.fixture
def s3() -> Iterator[S3StandIn]:
    with s3_stand_in() as server:
        yield server


@dataclass
class Load:
    """What a bounded load run sent: (request id, rows) of each 200, and every failure."""

    answered: list[tuple[str, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.answered)


def send_load(
    url: str, bodies: list[tuple[bytes, int]], stop: threading.Event, load: Load, seconds: float
) -> None:
    """POST the bodies round robin until `stop` or `seconds` or one pass of 20 000 requests."""
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=15) as client:
        for i in range(20_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            body, rows = bodies[i % len(bodies)]
            try:
                response = client.post(
                    f"{url}/invocations",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                with load.lock:
                    load.failures.append(repr(exc))
                continue
            with load.lock:
                if response.status_code == 200:
                    load.answered.append((response.headers["X-Request-ID"], rows))
                else:
                    load.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")


def bodies(iris_features: pd.DataFrame, n: int = 50) -> list[tuple[bytes, int]]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        rows = iris_features.sample(rng.randint(1, 4), random_state=i).to_dict(orient="records")
        out.append((json.dumps({"dataframe_records": rows}).encode(), len(rows)))
    return out


def test_store_outage_under_load_spools_then_uploads_every_row_once(
    s3: S3StandIn, tmp_path, iris_model_dir, iris_features
):
    bucket = s3.create_bucket(f"capture-{uuid.uuid4().hex[:8]}")
    capture_uri = f"s3://{bucket}/team/capture"
    server = start_server(
        tmp_path,
        iris_model_dir,
        MLOPS_SERVING_CAPTURE_URI=capture_uri,
        MLOPS_SERVING_CAPTURE_FLUSH_SECONDS="0.5",
    )

    def metric(name: str, **labels: str) -> float:
        return server.metric(name, **LABELS, **labels)

    load, stop = Load(), threading.Event()
    senders = [
        threading.Thread(
            target=send_load, args=(server.url, bodies(iris_features), stop, load, 150)
        )
        for _ in range(3)
    ]
    try:
        for sender in senders:
            sender.start()
        wait_for(lambda: metric("mlops_capture_rows_written_total") > 0, timeout=30)
        s3.stop()  # mid-load: the store refuses every connection
        answered_at_stop = len(load.answered)
        # the uploader fails, and rows answered meanwhile wait in the local spool
        wait_for(lambda: metric("mlops_capture_sink_errors_total") > 0, timeout=60)
        wait_for(lambda: metric("mlops_capture_rows_queued", stage="spool") > 0, timeout=30)
        time.sleep(3)  # a few more flushes land in the spool, not the store
        spooled = metric("mlops_capture_rows_queued", stage="spool")
        s3.start()  # the same port, the same objects
        wait_for(lambda: len(load.answered) > answered_at_stop + 200, timeout=60)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
        s3.start()
    # everything queued reaches the store without a restart of the service
    wait_for(lambda: metric("mlops_capture_rows_queued", stage="memory") == 0, timeout=30)
    wait_for(lambda: metric("mlops_capture_rows_queued", stage="spool") == 0, timeout=90)

    assert load.failures == [], load.failures[:5]
    assert spooled > 0 and len(load.answered) > answered_at_stop > 0
    assert metric("mlops_capture_rows_dropped_total") == 0
    assert metric("mlops_capture_rows_written_total") == load.rows
    log.info(
        "answered %d requests (%d rows), %d before the outage; %d rows spooled during it",
        len(load.answered), load.rows, answered_at_stop, spooled,
    )  # fmt: skip
    assert server.stop() == 0

    # what is in the bucket, listed with boto3: only final capture files, no temp names left
    keys = s3.keys(bucket, "team/capture/")
    assert keys and all(k.rsplit("/", 1)[1].startswith("part-") for k in keys)

    # the monitor's reader, through s3fs: every answered row exactly once
    files = list_capture_files(capture_uri, "iris", "1")
    assert len(files) == len(keys)
    features = dict.fromkeys(IRIS_COLUMNS, "numeric")
    batch = read_capture_files(capture_uri, files, features)
    assert batch.quarantined == [] and batch.duplicates == 0
    assert len(batch.frame) == load.rows
    rows_by_request = batch.frame.groupby("_request_id").size().to_dict()
    assert rows_by_request == dict(load.answered)
    assert (batch.frame["_status"] == 200).all()
