"""Reading capture files: watermark idempotence, quarantine of bad files, feedback labels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlops_pipeline import state
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring.captures import (
    Watermark,
    join_labels,
    list_capture_files,
    load_watermark,
    parse_since,
    save_watermark,
)
from mlops_pipeline.tasks.capture import commit_watermark, list_new_captures, read_captures

from tests.mlops.monitoring.capture_support import MODEL, VERSION, capture_table, write_capture

KINDS = {"x": "numeric", "y": "numeric", "city": "categorical"}


def features(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "y": rng.integers(0, 100, n),
            "city": rng.choice(["paris", "oslo"], n),
            "prediction": rng.integers(0, 2, n),
        }
    )


T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_watermark_makes_reads_incremental_and_idempotent(mlops_home: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "capture"
    first = [
        write_capture(
            root, capture_table(features(rng, 50), T0, f"a{i}"), T0 + dt.timedelta(minutes=i)
        )
        for i in range(3)
    ]
    uri = str(root)

    pending = list_new_captures.fn("dep", uri, MODEL, VERSION)
    assert pending == first
    # without a commit (e.g. the run crashed) the same window comes back, with the same rows
    assert list_new_captures.fn("dep", uri, MODEL, VERSION) == first
    once = read_captures.fn(uri, MODEL, pending, KINDS).frame
    again = read_captures.fn(uri, MODEL, pending, KINDS).frame
    pd.testing.assert_frame_equal(once, again)
    assert len(once) == 150

    commit_watermark.fn("dep", pending)
    assert list_new_captures.fn("dep", uri, MODEL, VERSION) == []
    commit_watermark.fn("dep", pending)  # committing twice changes nothing
    assert load_watermark("dep").processed == set(first)

    late = write_capture(
        root, capture_table(features(rng, 20), T0, "late"), T0 - dt.timedelta(minutes=5)
    )
    newer = write_capture(
        root, capture_table(features(rng, 20), T0, "b"), T0 + dt.timedelta(hours=1)
    )
    other_version = write_capture(
        root,
        capture_table(features(rng, 20), T0, "c", version="4"),
        T0 + dt.timedelta(hours=1),
        version="4",
    )
    pending = list_new_captures.fn("dep", uri, MODEL, VERSION)
    assert pending == [late, newer]  # files arriving late are still picked up, in time order
    assert other_version not in pending
    assert list_new_captures.fn("other-deployment", uri, MODEL, VERSION) == [late, *first, newer]


def test_since_selects_a_rerunnable_window_without_the_watermark(
    mlops_home: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "capture"
    rels = [
        write_capture(root, capture_table(features(rng, 5), T0, f"r{d}"), T0 + dt.timedelta(days=d))
        for d in range(4)
    ]
    commit_watermark.fn("dep", rels)

    since = (T0 + dt.timedelta(days=2)).isoformat()
    assert list_new_captures.fn("dep", str(root), MODEL, VERSION, since) == rels[2:]
    assert list_new_captures.fn("dep", str(root), MODEL, VERSION, since) == rels[2:]


def test_watermark_prunes_old_names_but_still_covers_them(mlops_home: Path) -> None:
    names = [
        f"model=m/version=1/date=2026-03-{d:02d}/part-202603{d:02d}T000000Z-x.parquet"
        for d in range(1, 11)
    ]
    watermark = Watermark().advanced(names)
    save_watermark("dep", watermark)

    stored = load_watermark("dep")
    assert stored.floor_date == "2026-03-08"
    assert len(stored.processed) == 3
    assert all(stored.seen(name) for name in names)
    assert not stored.seen("model=m/version=1/date=2026-03-09/part-20260309T120000Z-y.parquet")
    # the watermark lives in the ledger database, not in files under MLOPS_HOME
    assert state.read_watermark("dep") == ("2026-03-08", stored.processed)
    assert not (mlops_home / "monitor" / "dep").exists()


def test_bad_files_are_quarantined_and_reported_never_raised(
    mlops_home: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "capture"
    good = write_capture(root, capture_table(features(rng, 30), T0, "good"), T0)
    missing = write_capture(
        root,
        capture_table(features(rng, 30).drop(columns=["x"]), T0, "m"),
        T0 + dt.timedelta(seconds=1),
    )
    wrong = features(rng, 30).assign(y=lambda f: f["y"].astype(str))
    wrong_type = write_capture(root, capture_table(wrong, T0, "w"), T0 + dt.timedelta(seconds=2))
    corrupt = write_capture(
        root, capture_table(features(rng, 5), T0, "c"), T0 + dt.timedelta(seconds=3)
    )
    (root / corrupt).write_bytes(b"PAR1 this is not a parquet file")
    no_meta = write_capture(root, pa.table({"x": [1.0]}), T0 + dt.timedelta(seconds=4))

    pending = list_new_captures.fn("dep", str(root), MODEL, VERSION)
    batch = read_captures.fn(str(root), MODEL, pending, KINDS)

    assert batch.files == [good]
    assert len(batch.frame) == 30
    reasons = {q["file"]: q["reason"] for q in batch.quarantined}
    assert set(reasons) == {missing, wrong_type, corrupt, no_meta}
    assert "missing feature columns ['x']" in reasons[missing]
    assert "y: string (expected numeric)" in reasons[wrong_type]
    assert "unreadable Parquet" in reasons[corrupt]
    assert "missing metadata columns" in reasons[no_meta]
    for rel in reasons:
        assert not (root / rel).exists()
        assert (root / "_quarantine" / rel).is_file()
    assert list_new_captures.fn("dep", str(root), MODEL, VERSION) == [good]


def test_rejected_only_files_without_features_are_fine(mlops_home: Path, tmp_path: Path) -> None:
    root = tmp_path / "capture"
    table = capture_table(pd.DataFrame(index=range(2)), T0, "bad-request")
    table = table.set_column(
        table.schema.get_field_index("_status"), "_status", pa.array([400, 400], pa.int32())
    )
    rel = write_capture(root, table, T0)

    batch = read_captures.fn(str(root), MODEL, [rel], KINDS)

    assert batch.quarantined == []
    assert list(batch.frame["_status"]) == [400, 400]


def test_rows_repeated_across_files_count_once(mlops_home: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "capture"
    table = capture_table(features(rng, 40), T0, "dup")
    rels = [write_capture(root, table, T0), write_capture(root, table, T0 + dt.timedelta(1))]

    batch = read_captures.fn(str(root), MODEL, rels, KINDS)

    assert len(batch.frame) == 40 and batch.duplicates == 40


def test_feedback_labels_join_by_row_or_whole_request(mlops_home: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    root = tmp_path / "capture"
    rel = write_capture(root, capture_table(features(rng, 20), T0, "q"), T0)
    feedback = pa.table(
        {
            "_request_id": ["q-0", "q-1", "q-1"],
            "_row": pa.array([3, None, 4], pa.int64()),
            "label": [1, 0, 1],
            "_ts": pa.array([T0, T0, T0 + dt.timedelta(seconds=1)], pa.timestamp("us", tz="UTC")),
        }
    )
    write_capture(root, feedback, T0, feedback=True)

    frame = read_captures.fn(str(root), MODEL, [rel], KINDS).frame

    labels = frame.set_index(["_request_id", "_row"])["label"]
    assert labels[("q-0", 3)] == 1
    assert pd.isna(labels[("q-0", 2)])
    assert labels[("q-1", 4)] == 1  # a row-level label wins over the request-level one
    assert labels[("q-1", 0)] == 0 and labels[("q-1", 9)] == 0


def test_labels_join_whichever_version_received_the_feedback(
    mlops_home: Path, tmp_path: Path
) -> None:
    # a canary splits POST /feedback at random, and a label sent after a promotion reaches the
    # new version: the label of a request version 1 answered may sit in version 2's partition
    rng = np.random.default_rng(5)
    root = tmp_path / "capture"
    rel = write_capture(root, capture_table(features(rng, 30), T0, "v1"), T0)  # 3 requests
    stamps = pa.array([T0, T0], pa.timestamp("us", tz="UTC"))
    for version, request in (("2", "v1-0"), (VERSION, "v1-1")):
        feedback = pa.table(
            {
                "_request_id": [request, "other-version-request"],
                "_row": pa.array([None, None], pa.int64()),
                "label": [1, 0],
                "_ts": stamps,
            }
        )
        write_capture(root, feedback, T0, version=version, feedback=True)

    frame = read_captures.fn(str(root), MODEL, [rel], KINDS).frame

    labels = frame.groupby("_request_id")["label"].first()
    assert labels["v1-0"] == 1 and labels["v1-1"] == 1
    assert pd.isna(labels["v1-2"])  # unlabelled; the other versions' ids match nothing
    assert len(frame) == 30


def test_join_labels_without_feedback_adds_an_empty_label() -> None:
    captured = pd.DataFrame({"_request_id": ["a"], "_row": [0]})
    empty = pd.DataFrame(columns=["_request_id", "_row", "label", "_ts"])

    assert join_labels(captured, empty)["label"].isna().all()


def test_parse_since_accepts_durations_and_iso_times() -> None:
    now = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)

    assert parse_since("24h", now) == now - dt.timedelta(hours=24)
    assert parse_since("7d", now) == now - dt.timedelta(days=7)
    assert parse_since("2026-03-01", now) == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert parse_since("2026-03-01T05:00:00+02:00", now).hour == 5
    with pytest.raises(InvalidInputError, match="yesterday"):
        parse_since("yesterday", now)


def test_listing_an_empty_capture_dir_finds_nothing(tmp_path: Path) -> None:
    assert list_capture_files(str(tmp_path / "none"), MODEL, VERSION) == []


def test_only_2xx_answers_enter_the_window_others_are_counted_apart(
    mlops_home: Path, tmp_path: Path
) -> None:
    from mlops_pipeline.monitoring.captures import read_capture_files
    from mlops_pipeline.tasks.capture import summarise_window

    rng = np.random.default_rng(9)
    table = capture_table(features(rng, 6), dt.datetime(2026, 3, 1, tzinfo=dt.UTC), "s")
    statuses = pa.array([200, 201, 302, 400, 422, 503], pa.int32())
    table = table.set_column(table.column_names.index("_status"), "_status", statuses)
    rel = write_capture(tmp_path, table, dt.datetime(2026, 3, 1, tzinfo=dt.UTC))

    batch = read_capture_files(str(tmp_path), [rel], KINDS)
    scored, stats = summarise_window.fn(batch, list(KINDS))

    assert scored["_status"].tolist() == [200, 201]
    assert stats["rows"] == 6 and stats["rows_scored"] == 2 and stats["rows_rejected"] == 4
