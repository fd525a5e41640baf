"""The monitor at volume: partition summaries through Prefect task runners (a thread pool and
prefect-dask's DaskTaskRunner on a real LocalCluster) give the whole-window verdict, and two
monitor processes on one deployment (ledger on a real PostgreSQL) count each record once."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.monitor import monitor_flow_for
from mlops_pipeline.settings import get_settings

from tests.conftest import IRIS_COLUMNS
from tests.flows.test_monitor import T0, capture, iris_like, monitored  # noqa: F401 (fixture)

WINDOW = "2026-01-01"  # re-analyse every file: each run sees the same window


def verdict_key(result: dict) -> dict:
    """What must be equal: the overall verdict and each column's status and flagging tests."""
    return {
        "status": result["status"],
        "drift": result["drift"],
        "drifted": result["drifted"],
        "columns": {f["name"]: (f["status"], f.get("drifted_by")) for f in result["features"]},
        "rows_scored": result["stats"]["rows_scored"],
        "duplicates": result["stats"]["duplicates_dropped"],
    }


def test_task_runners_give_the_whole_window_verdict(
    prefect_harness,
    monitored,  # noqa: F811
    iris_frame,
    iris_estimator,
    dask_cluster,
    caplog,
):
    for i in range(6):
        shift = {"sepal_width": 0.6} if i >= 3 else None
        frame = iris_like(iris_frame, 30 + i, 600, shift=shift)
        capture(monitored, iris_estimator, frame, T0 + dt.timedelta(minutes=i), f"w{i}")
    params = {
        "deployment": "iris-scale",
        "capture_uri": str(monitored["capture"]),
        "model_uri": monitored["model_uri"],
        "window": WINDOW,
    }

    whole = run_flow(monitor_flow_for(None), **params)
    assert whole["drift"] is True and "sepal_width" in whole["drifted"]
    assert {f["name"] for f in whole["features"]} == {*IRIS_COLUMNS, "prediction"}
    for task_runner, prefect_runner in (
        ("threads", "ThreadPoolTaskRunner"),
        (f"dask:{dask_cluster}", "DaskTaskRunner"),
    ):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mlops_pipeline.tasks.capture"):
            mapped = run_flow(monitor_flow_for(task_runner), task_runner=task_runner, **params)
        assert f"through the flow's {prefect_runner}" in caplog.text  # Prefect's map ran it
        assert verdict_key(mapped) == verdict_key(whole), task_runner
        assert mapped["stats"] == whole["stats"], task_runner
        assert Path(mapped["report"]).is_file()


_MONITOR_LOOP = """
import json, pathlib, sys, time
from mlops_pipeline.flows.monitor import run_monitor

deployment, capture, model_uri, go, done, out, runner = sys.argv[1:8]
deadline = time.monotonic() + 240
while not pathlib.Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.01)
counts = []
while time.monotonic() < deadline:
    finished = pathlib.Path(done).exists()  # read before the run: a dry run after it ends
    result = run_monitor(
        deployment, None, capture, model_uri, {"min_samples": 50}, 24.0, runner or None
    )
    if result.status == "no_new_data":
        if finished:
            break
        time.sleep(0.05)
        continue
    counts.append({"files": result.files, "rows": result.stats.rows})
pathlib.Path(out).write_text(json.dumps(counts))
"""


@pytest.mark.postgres
def test_two_monitor_processes_count_each_record_once_on_postgresql(
    mlops_home,
    monitored,  # noqa: F811
    iris_frame,
    iris_estimator,
    tmp_path,
    monkeypatch,
):
    from mlops_pipeline import ledger

    from tests.servers import postgres_cluster

    with postgres_cluster() as database:
        monkeypatch.setenv("MLOPS_LEDGER_URI", database)
        get_settings.cache_clear()
        try:
            assert ledger.engine().dialect.name == "postgresql"  # tables created once, here
            written = 0
            for i in range(4):  # files waiting when both monitors start at the same instant
                frame = iris_like(iris_frame, 50 + i, 300)
                capture(monitored, iris_estimator, frame, T0 + dt.timedelta(minutes=i), f"a{i}")
                written += len(frame)
            go, done = tmp_path / "go", tmp_path / "done"
            outs = [tmp_path / "counts-0.json", tmp_path / "counts-1.json"]
            monitors = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _MONITOR_LOOP,
                        "iris-shared",
                        str(monitored["capture"]),
                        monitored["model_uri"],
                        str(go),
                        str(done),
                        str(out),
                        runner,
                    ],
                    env=os.environ.copy(),
                )  # fmt: skip
                for out, runner in zip(outs, ["", "threads"], strict=True)
            ]
            try:
                time.sleep(15)  # both processes import and wait at the barrier
                go.touch()
                for i in range(4, 16):  # more files while both monitors run
                    frame = iris_like(iris_frame, 50 + i, 300)
                    at = T0 + dt.timedelta(minutes=i)
                    capture(monitored, iris_estimator, frame, at, f"a{i}")
                    written += len(frame)
                    time.sleep(0.5)
                done.touch()
                for process in monitors:
                    assert process.wait(timeout=300) == 0
            finally:
                for process in monitors:
                    if process.poll() is None:
                        process.kill()
            counts = [json.loads(out.read_text()) for out in outs]
            assert sum(c["rows"] for runs in counts for c in runs) == written
            assert sum(c["files"] for runs in counts for c in runs) == 16
        finally:
            ledger.engine().dispose()
            ledger._engine.cache_clear()


def test_monitor_command_takes_a_task_runner(
    mlops_home,
    monitored,  # noqa: F811
    iris_frame,
    iris_estimator,
):
    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    for i in range(3):
        frame = iris_like(iris_frame, 70 + i, 400)
        capture(monitored, iris_estimator, frame, T0 + dt.timedelta(minutes=i), f"c{i}")
    args = ["monitor", "iris-cli", "--capture-uri", str(monitored["capture"]),
            "--model-uri", monitored["model_uri"], "--since", WINDOW, "--json"]  # fmt: skip
    runner = CliRunner()

    whole = runner.invoke(app, args)
    mapped = runner.invoke(app, [*args, "--task-runner", "threads"])  # direct mode: a pool
    assert whole.exit_code == 0 and mapped.exit_code == 0, mapped.output
    assert verdict_key(json.loads(mapped.stdout)) == verdict_key(json.loads(whole.stdout))
    assert json.loads(mapped.stdout)["stats"]["rows_scored"] == 1200

    bad = runner.invoke(app, [*args, "--task-runner", "ray"])
    assert bad.exit_code == 2
    assert "--task-runner 'ray'" in json.loads(bad.stdout)["error"]["message"]
