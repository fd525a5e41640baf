"""The batch: target's faults found in a new-user trial (issue 14), each for its whole kind."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlops_pipeline.deployment import DeployConfig, ModelRef
from mlops_pipeline.errors import (
    BackendUnavailableError,
    InvalidInputError,
    NotFoundError,
    ValidationFailedError,
)
from mlops_pipeline.targets import batch as batch_target
from mlops_pipeline.targets.base import get_target

from tests.conftest import IRIS_COLUMNS
from tests.mlops.batch.conftest import iris_model, iris_registry  # noqa: F401, F811 - fixtures
from tests.targets.batch_support import prefect_deployment, prefect_post

# -- 2. bad targets are refused before anything is created ------------------------------------


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("every hour", "it has 2 fields"),
        ("0 * * * * *", "it has 6 fields"),
        ("61 * * * *", "minute '61' is not in 0-59"),
        ("0 25 * * *", "hour '25' is not in 0-23"),
        ("*/0 * * * *", "'\\*/0' is not a minute"),
        ("0 0 * foo *", "month 'foo'"),
    ],
)
def test_a_bad_cron_is_one_line_naming_it(cron: str, problem: str, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match=problem) as raised:
        get_target(f"batch:{tmp_path}?output={tmp_path / 'o'}&cron={cron}")
    expected = f"cron '{cron}' is not a cron expression (5 fields, e.g. '0 * * * *'): "
    assert str(raised.value).startswith(expected)
    assert "\n" not in str(raised.value) and raised.value.exit_code == 2


@pytest.mark.parametrize("cron", ["0 * * * *", "*/15 0-6 1,15 jan *", "30 2 * * mon-fri"])
def test_good_crons_pass(cron: str, tmp_path) -> None:
    assert get_target(f"batch:{tmp_path}?output=/o&cron={cron}").options["cron"] == cron


def test_an_unknown_time_zone_is_refused_not_turned_into_utc(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="tz 'Mars/Olympus' is not a time zone"):
        get_target(f"batch:{tmp_path}?output=/o&cron=0 * * * *&tz=Mars/Olympus")


def test_a_missing_landing_folder_is_refused_at_deploy(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    target = get_target(f"batch:{tmp_path / 'nolanding'}?output={tmp_path / 'o'}&cron=0 * * * *")
    with pytest.raises(NotFoundError, match=f"landing folder '{tmp_path / 'nolanding'}'") as e:
        target.create("churn", ModelRef("churn", "1"), DeployConfig())
    assert e.value.exit_code == 3 and "Create it" in str(e.value)


def test_the_prefect_servers_refusal_is_one_short_line() -> None:
    answer = httpx.Response(
        422,
        json={"detail": [{"loc": ["body", "schedules", 0, "cron"], "msg": "Invalid cron"}] * 30},
    )
    detail = batch_target._detail(answer)
    assert detail.startswith("schedules.0.cron: Invalid cron;") and len(detail) <= 300
    assert "\n" not in detail and detail.endswith("...")


# -- 6. transient Prefect answers are retried, a bounded number of times -----------------------


def test_transient_5xx_and_dropped_connections_are_retried(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.test/api")
    monkeypatch.setattr(batch_target.time, "sleep", lambda _: None)
    answers: list = [httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200)]
    calls = []

    def request(method: str, url: str, **_: object) -> httpx.Response:
        calls.append(url)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(batch_target.httpx, "request", request)
    target = get_target("batch:")
    assert target._request("GET", "/work_pools/mlops").status_code == 200
    assert len(calls) == 3

    calls.clear()
    answers[:] = [httpx.Response(503)] * 10
    with pytest.raises(batch_target.BackendError, match="HTTP 503"):
        target._request("GET", "/work_pools/mlops")
    assert len(calls) == len(batch_target._RETRY_DELAYS) + 1  # bounded

    calls.clear()
    answers[:] = [httpx.ConnectError("refused")] * 10
    with pytest.raises(BackendUnavailableError, match="did not answer"):
        target._request("GET", "/work_pools/mlops")
    assert len(calls) == len(batch_target._RETRY_DELAYS) + 1

    calls.clear()
    answers[:] = [httpx.Response(500, json={"detail": "bug"})]
    with pytest.raises(batch_target.BackendError, match="HTTP 500"):
        target._request("GET", "/work_pools/mlops")  # not transient: no retry
    assert len(calls) == 1


# -- 1. a changed batch: target is a conflict, and list/status show the whole URI -------------


def test_redeploying_a_name_with_other_folders_or_schedule_is_a_conflict(
    api: str,
    iris_model,  # noqa: F811 - the fixture imported above
    tmp_path,
    monkeypatch,
) -> None:
    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    for folder in ("landing", "other"):
        (tmp_path / folder).mkdir()
    first = f"batch:{tmp_path / 'landing'}?output={tmp_path / 'scored'}&cron=0 * * * *"
    deployed = runner.invoke(
        app, ["deploy", "models:/iris/1", "--name", "iris-b2", "--target", first]
    )
    assert deployed.exit_code == 0, deployed.output
    try:
        # the same target written another way is the same deployment: an update
        same = "batch:landing?cron=0  * * * *&output=scored&tz=UTC"
        again = runner.invoke(
            app, ["deploy", "models:/iris/1", "--name", "iris-b2", "--target", same]
        )
        assert again.exit_code == 0, again.output

        for changed in (
            "batch:other?output=scored&cron=0 * * * *",
            "batch:landing?output=scored2&cron=0 * * * *",
            "batch:landing?output=scored&cron=30 * * * *",
            "batch:landing?output=scored&cron=0 * * * *&format=csv",
        ):
            refused = runner.invoke(
                app, ["deploy", "models:/iris/1", "--name", "iris-b2", "--target", changed]
            )
            assert refused.exit_code == 4, (changed, refused.output)
            assert first in refused.output and "undeploy" in refused.output
        found = prefect_deployment(api, "iris-b2")
        assert found["parameters"]["input"] == str(tmp_path / "landing")  # untouched

        listed = runner.invoke(app, ["deployments", "list", "--target", "batch:", "--json"])
        assert [d["target_uri"] for d in json.loads(listed.stdout)] == [first]
        shown = runner.invoke(app, ["status", "iris-b2", "--json"])
        assert json.loads(shown.stdout)["target_uri"] == first
    finally:
        runner.invoke(app, ["undeploy", "iris-b2"])


# -- 3. one bad landing file does not block the others ----------------------------------------


def this_run(out: Path) -> dict:
    """The run's counts in `_SUCCESS` (top level, or `this_run` of a whole-folder manifest)."""
    manifest = json.loads((out / "_SUCCESS").read_text())
    return manifest.get("this_run", manifest)


def test_a_bad_landing_file_is_recorded_skipped_until_it_changes_and_others_are_scored(
    iris_model,  # noqa: F811 - the fixture imported above
    iris_features: pd.DataFrame,
    tmp_path: Path,
    monkeypatch,
) -> None:
    from mlops_pipeline.batch import watermark
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.batch import score_batch

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    landing, out = tmp_path / "landing", tmp_path / "scored"
    landing.mkdir()
    iris_features.iloc[:40].to_parquet(landing / "a.parquet", index=False)
    bad = iris_features.iloc[40:50].astype({IRIS_COLUMNS[0]: object})
    bad.loc[bad.index[:3], IRIS_COLUMNS[0]] = "abc"  # 3 rows rejected, threshold 0
    bad.to_csv(landing / "b.csv", index=False)
    (landing / "c.csv").write_text("colour,size\nred,3\n")  # wrong columns
    iris_features.iloc[50:60].to_parquet(landing / "d.parquet", index=False)
    params = {
        "model_uri": iris_model["uri"],
        "input": str(landing),
        "output": str(out),
        "deployment": "iris-landing",
    }

    with pytest.raises(ValidationFailedError, match="2 landing file") as raised:
        run_flow(score_batch, **params)
    assert str(landing / "b.csv") in str(raised.value)
    success = this_run(out)  # BI reports still refresh
    assert (success["files_scored"], success["files_failed"], success["rows_scored"]) == (2, 2, 50)
    errors = {Path(f["input"]).name: f["error"] for f in success["files"] if f["error"]}
    assert "rejected" in errors["b.csv"] and "sepal_length" in errors["c.csv"]
    assert pd.read_parquet(out).shape[0] == 50
    failed = json.loads((out / "_FAILED").read_text())
    assert set(failed) == {str(landing / "b.csv"), str(landing / "c.csv")}
    assert set(watermark.scored_files("iris-landing")) == {
        str(landing / "a.parquet"),
        str(landing / "d.parquet"),
    }
    assert (out / "_rejects").exists()  # the reasons of b.csv's rows

    # unchanged: not tried again (same record), still visible as a failed run
    with pytest.raises(ValidationFailedError, match=r"2 landing file.*0 scored this run"):
        run_flow(score_batch, **params)
    assert json.loads((out / "_FAILED").read_text()) == failed

    # fixed files are scored by the next run, which completes
    iris_features.iloc[40:50].to_csv(landing / "b.csv", index=False)
    (landing / "c.csv").unlink()
    result = run_flow(score_batch, **params)
    assert (result["files_scored"], result["files_failed"], result["files_skipped"]) == (1, 0, 2)
    assert not (out / "_FAILED").exists()
    assert this_run(out)["files_failed"] == 0
    watermark.forget("iris-landing")


# -- 4. status shows the schedule and runs, and a failed run or no worker is not healthy -------


def test_status_shows_schedule_runs_and_is_degraded_without_worker_or_after_a_failure(
    api: str,
    iris_model,  # noqa: F811 - the fixture imported above
    tmp_path,
) -> None:
    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    (tmp_path / "landing").mkdir()
    target = f"batch:{tmp_path / 'landing'}?output={tmp_path / 'scored'}&cron=30 2 * * *"
    deployed = runner.invoke(
        app, ["deploy", "models:/iris/1", "--name", "iris-status", "--target", target]
    )
    assert deployed.exit_code == 0, deployed.output
    try:
        status = runner.invoke(app, ["status", "iris-status"], env={"COLUMNS": "200"})
        assert status.exit_code == 1, status.output  # nothing runs the schedule
        assert "schedule: 30 2 * * * (UTC); next run: " in status.output
        assert "last run: none yet" in status.output
        assert "health: degraded (no worker polls pool 'mlops'" in status.output
        # the first line agrees with the health line: never "(ready)" above "degraded"
        assert status.output.splitlines()[0].endswith("(degraded)"), status.output

        found = prefect_deployment(api, "iris-status")
        run = prefect_post(
            api,
            f"/deployments/{found['id']}/create_flow_run",
            {"state": {"type": "FAILED", "name": "Failed", "message": "1 landing file"}},
        )
        assert run["state"]["type"] == "FAILED"
        report = runner.invoke(app, ["status", "iris-status", "--json"])
        assert report.exit_code == 1
        health = json.loads(report.stdout)["health"]
        assert health["health"] == "degraded" and health["ready"] is False
        assert health["last_run"]["state"] == "Failed"
        assert "the last run Failed" in health["reasons"]
        text = runner.invoke(app, ["status", "iris-status"], env={"COLUMNS": "200"})
        assert "last run: Failed at " in text.output and "1 landing file" in text.output
    finally:
        runner.invoke(app, ["undeploy", "iris-status"])
