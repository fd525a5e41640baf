"""Claiming capture files in the ledger (sqlite here; PostgreSQL with two real monitor
processes in tests/flows/test_monitor_scale.py): concurrent claims never overlap, a commit or a
release ends a claim, and a claim past its lease lapses."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from mlops_pipeline import state
from mlops_pipeline.monitoring import captures

from tests.mlops.monitoring.capture_support import capture_table, write_capture

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(hours=1)


def everything(candidates: list[str]):
    def pick(floor: str | None, taken: set[str]) -> list[str]:
        watermark = captures.Watermark(floor, taken)
        return [p for p in candidates if not watermark.seen(p)]

    return pick


def test_concurrent_claims_are_disjoint_and_cover_every_file(mlops_home: Path) -> None:
    candidates = [f"model=m/version=1/date=2026-03-01/part-{i:04d}.parquet" for i in range(60)]
    # each claimer sees a different, growing slice of the files, as monitors racing new uploads
    slices = [candidates[: 10 + 5 * (i % 10)] for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        claimed = list(
            pool.map(
                lambda i: state.claim_files("dep", everything(slices[i]), f"claim{i}", LEASE),
                range(16),
            )
        )
    flat = [p for got in claimed for p in got]
    assert len(flat) == len(set(flat))  # no file claimed twice
    assert set(flat) == set(candidates[:55])  # the largest slice: every file somebody saw


def test_commit_and_release_end_a_claim_and_a_lapsed_claim_frees_its_files(
    mlops_home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "capture"
    frame = {"x": [1.0, 2.0]}
    paths = [
        write_capture(root, capture_table(pd.DataFrame(frame), T0, f"r{i}"), T0.replace(minute=i))
        for i in range(3)
    ]
    first = captures.claim_new_captures("dep", str(root), "churn", "3", "one")
    assert first == paths
    assert captures.claim_new_captures("dep", str(root), "churn", "3", "two") == []

    captures.release_claim("dep", "one")  # the window failed: the files are free again
    second = captures.claim_new_captures("dep", str(root), "churn", "3", "two")
    assert second == paths
    captures.commit_watermark("dep", paths[:2], "two")  # committed: processed, claim gone
    assert captures.load_watermark("dep").processed == set(paths[:2])
    assert captures.claim_new_captures("dep", str(root), "churn", "3", "three") == [paths[2]]

    # a monitor that died holds paths[2]; past the lease another run takes it
    assert captures.claim_new_captures("dep", str(root), "churn", "3", "four") == []
    lapsed = captures.claim_new_captures("dep", str(root), "churn", "3", "four", lease_hours=0)
    assert lapsed == [paths[2]]
