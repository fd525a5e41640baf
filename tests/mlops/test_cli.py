"""The `mlops` CLI through typer's runner, and once as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlops_pipeline.cli import app
from typer.testing import CliRunner

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def versions(name: str) -> list[str]:
    result = invoke("models", "list", "--name", name, "--json")
    assert result.exit_code == 0, result.output
    return [v["version"] for v in json.loads(result.stdout)]


def test_register_twice_gives_versions_1_and_2(mlops_home, iris_pickle, iris_reference_csv):
    args = ["register", str(iris_pickle), "--name", "iris", "--tag", "team=risk", "--json"]
    first = invoke(*args, "--reference-data", str(iris_reference_csv))
    second = invoke(*args, "--description", "retrained", "--alias", "champion")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["version"] == "1"
    assert json.loads(second.stdout)["version"] == "2"
    shown = json.loads(invoke("models", "show", "iris", "--alias", "champion", "--json").stdout)
    assert shown["version"] == "2" and shown["description"] == "retrained"
    assert versions("iris") == ["2", "1"]


def test_tag_alias_and_delete_commands(registered_model):
    assert invoke("models", "tag", "iris", "--version", "1", "--tag", "stage=gold").exit_code == 0
    filtered = invoke("models", "list", "--tag", "stage=gold", "--json")
    assert [v["version"] for v in json.loads(filtered.stdout)] == ["1"]
    assert invoke("models", "alias", "set", "iris", "backup", "--version", "1").exit_code == 0
    assert invoke("models", "alias", "remove", "iris", "backup").exit_code == 0
    deleted = invoke("models", "delete", "iris", "--json")
    assert deleted.exit_code == 0 and json.loads(deleted.stdout)["deleted_versions"] == ["1"]


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["register", "missing.pkl", "--name", "iris"], 3, "'missing.pkl' does not exist"),
        (["register", "{not_pickle}", "--name", "iris"], 2, "not a loadable pickle"),
        (["register", "{no_predict}", "--name", "iris"], 2, "has no predict method"),
        (["register", "{model_dir}", "--name", "bad name"], 2, "'bad name' is not a valid"),
        (
            ["register", "{model_dir}", "--name", "iris", "--reference-data", "{bad_ref}"],
            2,
            "lacks column 'sepal_length'",
        ),
        (["register", "{model_dir}", "--name", "iris", "--tag", "oops"], 2, "KEY=VALUE"),
        (["models", "show", "iris", "--version", "7"], 3, "no version '7'"),
        (["models", "show", "iris", "--alias", "ghost"], 3, "no alias 'ghost'"),
        (["models", "delete", "nobody"], 3, "'nobody' is not registered"),
    ],
)
def test_bad_input_is_one_clear_line_and_no_new_version(
    registered_model, tmp_path, iris_model_dir, args, exit_code, message
):
    import joblib

    (tmp_path / "not.pkl").write_text("plain text")
    joblib.dump([1, 2, 3], tmp_path / "list.joblib")
    (tmp_path / "bad.csv").write_text("colour\nred\n")
    paths = {
        "not_pickle": tmp_path / "not.pkl",
        "no_predict": tmp_path / "list.joblib",
        "model_dir": iris_model_dir,
        "bad_ref": tmp_path / "bad.csv",
    }
    result = invoke(*[a.format(**paths) for a in args])
    assert result.exit_code == exit_code, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert versions("iris") == ["1"]


def test_json_errors_are_machine_readable(mlops_home):
    result = invoke("models", "show", "ghost", "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["error"]["code"] == "not_found"


def test_every_command_has_help():
    for path in (
        [],
        ["register"],
        ["models"],
        ["models", "list"],
        ["models", "show"],
        ["models", "tag"],
        ["models", "delete"],
        ["models", "alias", "set"],
    ):
        result = invoke(*path, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["score-batch", "models:/x/1", "--input", "a", "--output", "b", "--chunk-rows", "0"],
            "error: Invalid value for '--chunk-rows': Input should be greater than or equal to 1. "
            "See `mlops score-batch --help`.",
        ),
        (
            ["canary", "x", "--model", "models:/x/1", "--interval", "inf"],
            "error: Invalid value for '--interval': 'inf' is not a finite number. "
            "See `mlops canary --help`.",
        ),
        (
            ["redeploy", "x", "--live-gate", "fast"],
            "error: Invalid value for '--live-gate': 'fast' is not one of none, shadow, canary. "
            "See `mlops redeploy --help`.",
        ),
        (  # a flow parameter's own check: one line too, not Prefect's log of every parameter
            ["redeploy", "", "--challenger", "models:/x/1"],
            "error: Flow 'redeploy' parameter name='': String should have at least 1 character. "
            "Check the command's options (`--help`).",
        ),
        (["nosuch"], "error: No such command 'nosuch'. See `mlops --help`."),
        (["models", "show"], "error: Missing argument 'name'. See `mlops models show --help`."),
    ],
)
def test_usage_errors_of_the_console_script_are_one_line_exit_2(mlops_home, args, message):
    """Typer's boxed usage panel is replaced by the one-line error every command uses."""
    mlops = Path(sys.executable).with_name("mlops")
    env = {**os.environ, "MLOPS_HOME": str(mlops_home), "COLUMNS": "200"}
    done = subprocess.run([str(mlops), *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [message]
    as_json = subprocess.run(
        [str(mlops), *args, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["code"] == "invalid_input"


def test_installed_console_script(mlops_home, iris_pickle, iris_reference_csv):
    mlops = Path(sys.executable).with_name("mlops")
    env = {**os.environ, "MLOPS_HOME": str(mlops_home)}
    done = subprocess.run(
        [
            str(mlops),
            "register",
            str(iris_pickle),
            "--name",
            "cli-iris",
            "--json",
            "--reference-data",
            str(iris_reference_csv),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) | {"version": "1"} == json.loads(done.stdout)
    missing = subprocess.run(
        [str(mlops), "models", "show", "cli-iris", "--version", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 3
    assert "Traceback" not in missing.stderr and "no version '5'" in missing.stderr


@pytest.fixture
def narrow_terminal(monkeypatch):
    """An 80-column terminal as rich sees it (COLUMNS is read only when the console is made)."""
    from mlops_pipeline.cli import _output

    monkeypatch.setattr(_output.console, "width", 80)
    return 80


def test_models_list_cuts_nothing_in_a_narrow_terminal(registered_model, narrow_terminal):
    tags = ["owner=fraud-analytics-platform-team", "dataset=card-not-present-2026-q4-snapshot"]
    args = [f"--tag={t}" for t in tags]
    assert invoke("models", "tag", "iris", "--version", "1", *args).exit_code == 0
    listed = invoke("models", "list")
    assert listed.exit_code == 0, listed.output
    assert "…" not in listed.output
    lines = listed.output.splitlines()
    assert all(len(line) <= narrow_terminal for line in lines)
    (row,) = [line for line in lines if line.startswith("iris ")]
    assert row.split()[:3] == ["iris", "1", "champion"]
    # the tags fold within their column; every character is still there
    start = lines[0].index("tags")
    end = lines[0].index("deployments")
    column = "".join(line[start:end] for line in lines[lines.index(row) :])
    expected = ", ".join(sorted(["team=risk", *tags]))
    assert "".join(column.split()) == "".join(expected.split())


def decision(kind: str, champion: str, challenger: str, scores: dict, reason: str) -> dict:
    return {
        "decision": kind,
        "reason": reason,
        "champion": {"name": "iris", "version": champion},
        "challenger": {"name": "iris", "version": challenger},
        "scores": scores,
        "metric": "accuracy",
        "holdout": {"source": "labelled_captures", "rows": 1500},
        "bake": None,
    }


def test_demo_summary_prints_decisions_failed_requests_and_where_to_look(
    registered_model, narrow_terminal, tmp_path, monkeypatch
):
    from mlops_pipeline.cli import demo as demo_cli
    from mlops_pipeline.flows.demo import run_demo

    reports = tmp_path / "demo" / "monitor" / "wine-demo" / "reports"
    after = reports / "20261130T104512654321Z" / "report.html"
    assert len(str(after)) > narrow_terminal
    versions = json.loads(invoke("models", "list", "--name", "iris", "--json").stdout)

    def finished_demo(flow, **params):
        assert flow is run_demo and params == {"keep_serving": True}
        return {
            "model": "iris",
            "endpoint_url": "http://127.0.0.1:54321",
            "monitor_before_drift": {"drift": False, "drifted": []},
            "rejected_challenger": decision(
                "rejected", "1", "2", {"champion": 1.0, "challenger": 0.65}, "does not pass"
            ),
            "monitor_after_drift": {
                "drift": True,
                "drifted": ["alcohol", "color_intensity", "prediction"],
                "report": str(after),
            },
            "redeploy_trigger": "event: mlops.drift.detected -> automation -> redeploy",
            "redeploy": decision(
                "promoted", "1", "3", {"champion": 0.95, "challenger": 1.0}, "passes"
            ),
            "traffic_during_redeploy": {"requests": 812, "failed": 0, "statuses": {"200": 812}},
            "prefect_ui": "http://127.0.0.1:4200",
            "still_serving": True,
            "versions": versions,
        }

    monkeypatch.setattr(demo_cli, "run_flow", finished_demo)
    result = invoke("demo", "--keep-serving")
    assert result.exit_code == 0, result.output
    lines = [line.rstrip() for line in result.output.splitlines()]
    assert "rejected: iris v2 vs champion v1" in lines and "reason: does not pass" in lines
    assert "promoted: iris v3 vs champion v1" in lines
    assert "failed requests during the redeploy: 0 of 812" in lines
    # the report path stays whole on its line, to be copied or opened
    assert f"  drift report: {after}" in lines
    assert "  Prefect UI (flow runs, events, automations): http://127.0.0.1:4200" in lines
    assert any(
        line.startswith("  MLflow UI: mlflow ui --backend-store-uri sqlite:") for line in lines
    )
    assert any(line.endswith("http://127.0.0.1:54321 (mlops undeploy wine-demo)") for line in lines)


def test_drift_report_path_is_one_line(tmp_path, narrow_terminal, iris_reference_csv):
    report = tmp_path / "reports-for-the-quarterly-review" / "iris-reference-vs-itself.html"
    result = invoke(
        "drift",
        "--reference",
        str(iris_reference_csv),
        "--current",
        str(iris_reference_csv),
        "--report",
        str(report),
    )
    assert result.exit_code == 0, result.output
    assert len(str(report)) > narrow_terminal - len("Report: ")
    assert f"Report: {report}" in result.output.splitlines()


def test_a_failed_tracked_step_is_one_error_line_and_its_run_log_keeps_the_traceback(
    prefect_harness, mlops_home, tmp_path
):
    """With a Prefect API (as under `mlops up`) each step is a flow run; when it fails on bad
    input, the terminal shows the one error line, not Prefect's two tracebacks of the run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "MLOPS_ORCHESTRATE": "auto",
        "MLOPS_HOME": str(mlops_home),
    }
    model = f"nothing-{uuid.uuid4().hex[:8]}"  # the harness is shared: find this run's log
    args = ["score-batch", f"models:/{model}/1", "--input", str(tmp_path / "in.csv")]
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mlops")), *args, "--output", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line or "error:" in line]
    assert errors == [
        f"error: Model '{model}' is not registered. List models with `mlops models list`."
    ]
    with get_client(sync_client=True) as client:
        failed = [r.id for r in client.read_flow_runs() if r.state_name == "Failed"]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=failed)))
    assert any("Traceback" in log.message and model in log.message for log in logs)
