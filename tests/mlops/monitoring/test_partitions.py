"""Partition summaries merged give the verdict the whole-window path gives on the same files:
in one process, on a thread pool and on a real Dask LocalCluster with 2 workers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring import captures, drift, partitions
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.monitoring.drift_stats import ks_statistic, wasserstein_distance
from mlops_pipeline.monitoring.profile import infer_kinds
from mlops_pipeline.monitoring.results import DriftVerdict
from mlops_pipeline.tasks.capture import map_partitions, parse_task_runner

from tests.mlops.monitoring.capture_support import capture_table, write_capture

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def rows(n: int, seed: int, shift: float = 0.0, city_b: float = 0.25) -> pd.DataFrame:
    """Mixed columns: a continuous one, a skewed one with blanks, integer levels, text, flags."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": (rng.normal(40 + shift, 10, n)).round(1),
            "income": rng.lognormal(10, 1, n),
            "level": rng.integers(0, 5, n),
            "city": rng.choice(["a", "b", "c", "d"], n, p=[0.5 - city_b + 0.25, city_b, 0.15, 0.1]),
            "member": rng.random(n) < 0.3,
        }
    )
    frame.loc[rng.random(n) < 0.05, "income"] = np.nan
    return frame


def verdict_key(verdict: DriftVerdict) -> dict:
    """What must be equal: each column's status and flagging tests, and the overall verdict."""
    return {
        "status": verdict.status,
        "drift": verdict.drift,
        "drifted": verdict.drifted,
        "incompatible": verdict.incompatible,
        "columns": {f.name: (f.status, f.drifted_by, f.method) for f in verdict.features},
        "n_current": verdict.summary.n_current,
    }


@pytest.fixture
def window(tmp_path: Path) -> dict:
    """Nine capture files: drift in `age` and `city` from the fifth on, rejected (5xx) rows,
    a file repeating rows of the first (a spool re-upload) and one unreadable file."""
    root = tmp_path / "capture"
    relpaths = []
    for i in range(7):
        frame = rows(1500, seed=i + 1, shift=4.0 if i >= 4 else 0.0, city_b=0.4 if i >= 4 else 0.25)
        table = capture_table(frame, T0 + dt.timedelta(minutes=i), f"req{i}")
        if i == 2:  # a burst of errors: the service answered 503 with blank outputs
            status = np.where(np.arange(len(frame)) < 300, 503, 200).astype("int32")
            table = table.set_column(table.schema.get_field_index("_status"), "_status", [status])
        relpaths.append(write_capture(root, table, T0 + dt.timedelta(minutes=i)))
    repeated = pq.read_table(root / relpaths[0]).slice(200, 200)
    relpaths.append(write_capture(root, repeated, T0 + dt.timedelta(minutes=8)))
    broken = T0 + dt.timedelta(minutes=9)
    bad = write_capture(root, repeated, broken)
    (root / bad).write_bytes(b"not parquet")
    relpaths.append(bad)
    reference = rows(4000, seed=100)
    kinds = infer_kinds(reference)
    return {
        "root": root,
        "relpaths": relpaths,
        "reference": reference,
        "kinds": kinds,
        "features": {name: kind.kind for name, kind in kinds.items()},
        "columns": list(reference.columns),
    }


def whole_window(window: dict, config: DriftConfig) -> tuple[DriftVerdict, object]:
    batch = captures.read_capture_files(str(window["root"]), window["relpaths"], window["features"])
    scored, stats = captures.summarise_window(batch, window["columns"])
    verdict = drift.compare_frames(
        window["reference"], scored, columns=window["columns"], config=config, kinds=window["kinds"]
    )
    return verdict, stats


def partitioned(window: dict, config: DriftConfig, task_runner: str | None):
    plans = partitions.plan_columns(window["reference"], window["columns"], [], config, None)
    merged = map_partitions(
        task_runner, str(window["root"]), window["relpaths"], window["features"], plans
    )
    return partitions.verdict_from_summary(window["reference"], plans, merged, config), merged


def test_partition_summaries_give_the_whole_window_verdict(window: dict, dask_cluster: str):
    config = DriftConfig(min_samples=200)
    expected, stats = whole_window(window, config)
    assert expected.drift and set(expected.drifted) == {"age", "city"}
    assert stats.duplicates_dropped == 200 and stats.rows_rejected == 300
    assert stats.files_quarantined == 1

    bad = window["relpaths"][-1]
    for task_runner in (None, "threads", f"dask:{dask_cluster}"):
        (window["root"] / bad).parent.mkdir(parents=True, exist_ok=True)
        (window["root"] / bad).write_bytes(b"not parquet")  # the last read quarantined it
        verdict, merged = partitioned(window, config, task_runner)
        assert verdict_key(verdict) == verdict_key(expected), task_runner
        assert merged.stats() == stats, task_runner
        for mine, theirs in zip(verdict.features, expected.features, strict=True):
            assert mine.p_value == pytest.approx(theirs.p_value, rel=1e-9, abs=1e-300)
            assert mine.psi == pytest.approx(theirs.psi, rel=1e-12)
            assert mine.statistic == pytest.approx(theirs.statistic, rel=1e-12)
            if theirs.wasserstein_sd is not None:  # documented-approximate: see partitions
                assert mine.wasserstein_sd == pytest.approx(theirs.wasserstein_sd, abs=2e-3)


def test_ks_is_exact_and_wasserstein_close_from_counts() -> None:
    rng = np.random.default_rng(7)
    ref = np.sort(rng.normal(0, 1, 3000))
    for cur in (rng.normal(0, 1, 20000), rng.normal(0.3, 1.2, 20000), rng.normal(0, 1, 7).round(2)):
        cur = np.sort(cur)
        points = np.unique(ref)
        below, upto = np.searchsorted(cur, points, "left"), np.searchsorted(cur, points, "right")
        prefix = np.concatenate(([0.0], np.cumsum(cur)))
        gap_sums = prefix[np.concatenate((below, [cur.size]))] - prefix[np.concatenate(([0], upto))]
        assert partitions.ks_from_counts(ref, points, below, upto, cur.size) == pytest.approx(
            ks_statistic(ref, cur), rel=1e-12
        )
        w1 = partitions.wasserstein_from_counts(ref, points, below, upto, gap_sums, cur.size)
        assert w1 == pytest.approx(wasserstein_distance(ref, cur), abs=1e-3)


def test_task_runner_values_are_checked() -> None:
    assert parse_task_runner("threads") == ("threads", None)
    assert parse_task_runner("dask") == ("dask", None)
    assert parse_task_runner("dask:tcp://127.0.0.1:8786") == ("dask", "tcp://127.0.0.1:8786")
    with pytest.raises(InvalidInputError, match="--task-runner 'ray'"):
        parse_task_runner("ray")
