"""`mlops canary` and `mlops shadow` through typer's runner: help, input errors as one line with
their exit code, a sticky canary end to end on a local deployment; and through the `mlops`
console script (Prefect's console handler prints to the process's own stderr, which typer's
runner does not capture): progress lines once each, and --fail-on-rollback's exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlops_pipeline.cli import app
from mlops_pipeline.cli import redeploy as redeploy_cli
from mlops_pipeline.cli import rollout as rollout_cli
from mlops_pipeline.targets import operations
from mlops_pipeline.targets.local import LocalTarget
from typer.testing import CliRunner

from tests.mlops.rollout.support import (  # noqa: F401
    VersionClient,
    fast_rollout,
    iris_prod,
    register_behaviour,
)
from tests.targets.local_support import register_version, served_version

runner = CliRunner()


def mlops(*args: str) -> subprocess.CompletedProcess:
    """The `mlops` console script in a subprocess, in direct mode (no Prefect API)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return subprocess.run(
        [str(Path(sys.executable).with_name("mlops")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("command", ["canary", "shadow"])
def test_rollout_commands_have_help_and_json(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "--json" in result.output and "--model" in result.output


def test_bad_steps_exit_2_naming_the_option(registered_model: dict) -> None:
    result = runner.invoke(
        app, ["canary", "iris-prod", "--model", "models:/iris/1", "--steps", "50,10", "--json"]
    )
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "invalid_input" and error["details"]["field"] == "steps"
    assert "--steps '50,10' must be increasing percents" in error["message"]


@pytest.mark.parametrize(
    "header", ["", "X Client", "Connection", "host", "X-Shadow-Of", "X-Client-ID:", "a" * 65]
)
def test_an_invalid_sticky_header_exits_2_before_any_challenger_starts(
    header: str, mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(
        LocalTarget, "start_challenger", lambda self, name, *a, **kw: started.append(name)
    )
    args = ["canary", "iris-prod", "--model", "models:/iris/2", "--sticky-header", header]

    result = runner.invoke(app, args)
    as_json = runner.invoke(app, [*args, "--json"])

    # refused at once, before the deployment or the model is even looked up (no such
    # deployment here: a later check would exit 3) and before anything starts
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --sticky-header {header!r} is not a header name")
    assert "X-Client-ID" in line  # what to do
    error = json.loads(as_json.stdout)["error"]
    assert as_json.exit_code == 2 and error["code"] == "invalid_input"
    assert error["details"] == {"field": "sticky_header", "value": header}
    assert started == []


@pytest.mark.parametrize(
    "args",
    [
        ["canary", "iris-prod", "--model", "models:/iris/2", "--interval", "inf"],
        ["canary", "iris-prod", "--model", "models:/iris/2", "--interval", "nan"],
        ["canary", "iris-prod", "--model", "models:/iris/2", "--max-p95-ratio", "nan"],
        ["shadow", "iris-prod", "--model", "models:/iris/2", "--duration", "inf"],
    ],
)
def test_a_number_that_is_not_finite_exits_2_before_any_challenger_starts(
    args: list[str], mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an infinite interval or duration would hold the challenger forever
    started: list[str] = []
    monkeypatch.setattr(
        LocalTarget, "start_challenger", lambda self, name, *a, **kw: started.append(name)
    )

    result = runner.invoke(app, args)

    # the option parser's own check: a usage error naming the option and the value (the
    # installed `mlops` prints it as one line: tests/mlops/test_cli.py)
    assert result.exit_code == 2, result.output
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)
    assert f"Invalid value for '{args[-2]}': '{args[-1]}' is not a finite number" in text
    assert "Traceback" not in result.output and started == []


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        (["canary", "--steps", "100"], "steps", "--steps '100' needs a step below 100"),
        (["shadow", "--metric", "nosuchmetric"], "metric", "--metric 'nosuchmetric' is not a"),
        (["shadow", "--metric", "roc_auc"], "metric", "--metric 'roc_auc' needs probabilities"),
        (["shadow", "--report", "--metric", "x"], "metric", "--metric 'x' is not a metric"),
    ],
)
def test_bad_steps_or_metric_exit_2_before_any_challenger_starts(
    args: list[str], field: str, message: str, mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(
        LocalTarget, "start_challenger", lambda self, name, *a, **kw: started.append(name)
    )
    command, *options = args

    result = runner.invoke(app, [command, "iris-prod", "--model", "models:/iris/2", *options])
    as_json = runner.invoke(
        app, [command, "iris-prod", "--model", "models:/iris/2", *options, "--json"]
    )

    # refused before the deployment is even looked up (there is none: a later check exits 3)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {message}")
    assert ("10,50,100" if field == "steps" else "accuracy, balanced_accuracy") in line
    error = json.loads(as_json.stdout)["error"]
    assert error["details"] == {"field": field, "value": options[-1]}
    assert started == []


@pytest.mark.parametrize("header", [None, "X-Client-ID", "x-tenant"])
def test_parse_sticky_keeps_a_valid_header_name(header: str | None) -> None:
    from mlops_pipeline.rollout.canary import parse_sticky

    assert parse_sticky(header) == header


ROLLED_BACK = {
    "decision": "rolled_back",
    "kind": "canary",
    "deployment": "iris-prod",
    "model_name": "iris",
    "challenger_version": "2",
    "champion_version": "1",
    "reason": "at 10%: error rate 0.5 > champion's 0 + 0.01",
    "steps": [],
}


@pytest.mark.parametrize("fail_on_rollback", [False, True])
def test_fail_on_rollback_makes_a_rolled_back_canary_exit_1_after_its_result(
    fail_on_rollback: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout_cli, "run_flow", lambda flow, **params: ROLLED_BACK)
    flag = ["--fail-on-rollback"] if fail_on_rollback else []

    result = runner.invoke(app, ["canary", "iris-prod", "--model", "models:/iris/2", *flag])
    as_json = runner.invoke(
        app, ["canary", "iris-prod", "--model", "models:/iris/2", "--json", *flag]
    )

    assert result.exit_code == as_json.exit_code == (1 if fail_on_rollback else 0)
    assert "rolled_back: canary of iris v2 on iris-prod" in result.stdout
    assert json.loads(as_json.stdout)["decision"] == "rolled_back"  # the result, still whole
    if fail_on_rollback:
        [line] = as_json.stderr.splitlines()
        assert line == (
            "error: The canary of iris-prod rolled back (--fail-on-rollback): "
            f"{ROLLED_BACK['reason']}"
        )


@pytest.mark.parametrize(
    ("decision", "code"), [("rolled_back", 1), ("promoted", 0), ("rejected", 0)]
)
def test_fail_on_rollback_makes_a_rolled_back_redeploy_exit_1(
    decision: str, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    result_json = {
        "decision": decision,
        "reason": "canary rolled_back: at 10%: error rate",
        "champion": {"name": "iris", "version": "1"},
        "challenger": {"name": "iris", "version": "2"},
    }
    monkeypatch.setattr(redeploy_cli, "run_flow", lambda flow, **params: result_json)

    result = runner.invoke(
        app, ["redeploy", "iris-prod", "--live-gate", "canary", "--fail-on-rollback", "--json"]
    )

    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["decision"] == decision
    assert ("--fail-on-rollback" in result.stderr) == (code == 1)


@pytest.mark.parametrize("command", ["canary", "redeploy"])
def test_fail_on_rollback_is_documented_in_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert "--fail-on-rollback" in result.output
    assert "1 rolled back" in " ".join(result.output.split())


def test_unknown_deployment_exits_3(registered_model: dict) -> None:
    result = runner.invoke(app, ["shadow", "nope", "--model", "models:/iris/1"])
    assert result.exit_code == 3
    assert "No deployment named 'nope'" in result.stderr


def test_sticky_canary_through_the_cli_keeps_each_client_on_one_version(
    iris_prod: dict,  # noqa: F811
    iris_model_dir,
) -> None:
    v2 = register_version(iris_model_dir)
    endpoint = iris_prod["endpoint_url"]
    load = VersionClient(endpoint, header="X-Client-ID", clients=40, max_seconds=150)
    splits: list[dict] = []
    done = threading.Event()

    def watch_status() -> None:  # what `mlops status --json` shows while the canary runs
        while not done.is_set():
            routes = operations.get_status("iris-prod").health.model_dump().get("routes")
            if routes and routes.get("canary"):
                splits.append(routes)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch_status, daemon=True)
    load.start()
    watcher.start()
    try:
        result = runner.invoke(
            app,
            [
                "canary", "iris-prod", "--model", f"models:/iris/{v2}", "--steps", "50,100",
                "--interval", "3", "--sticky-header", "X-Client-ID", "--max-p95-ratio", "50",
                "--json",
            ],
        )  # fmt: skip
    finally:
        done.set()
        load.stop()
        watcher.join(10)

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["decision"] == "promoted" and out["sticky_header"] == "X-Client-ID"
    assert load.failures == []
    # every client moved at most once, from v1 to v2, never back (random routing would flip
    # most of the 40 clients back and forth at 50 %)
    by_client: dict[str, list[str]] = {}
    for who, _, version, _ in load.seen:
        by_client.setdefault(who, []).append(version)
    for who, versions in by_client.items():
        changes = sum(a != b for a, b in zip(versions, versions[1:], strict=False))
        assert changes <= 1 and versions == sorted(versions), who
    # at 50 % some clients were on the challenger while others stayed on the champion
    first_v2 = next(i for i, s in enumerate(load.seen) if s[2] == v2)
    still_on_v1 = {s[0] for s in load.seen[first_v2:] if s[2] == "1"}
    assert 5 <= len(still_on_v1) <= 35
    # `mlops status` showed the split while it ran
    assert any(
        s["canary"]["percent"] == 50.0 and s["sticky_header"] == "X-Client-ID" for s in splits
    )


@pytest.fixture
def ctrl_c_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal: a run started in the background
    (`make test &`) inherits SIGINT ignored, which Python keeps (and the command with it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_canary_ended_by_a_signal_puts_all_traffic_back_and_stops_the_challenger(
    sig: signal.Signals,
    iris_prod: dict,  # noqa: F811
    iris_model_dir,
    mlops_home,
    ctrl_c_interrupts: None,
) -> None:
    # a CI job's timeout sends SIGTERM: it used to kill the command mid-step, leaving 50 % of
    # the traffic on an unjudged challenger that no command could stop
    v2 = register_version(iris_model_dir)
    seen: list[dict] = []
    before = signal.getsignal(signal.SIGTERM)

    def signal_at_the_first_step() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            routes = operations.get_status("iris-prod").health.model_dump().get("routes")
            if routes and routes.get("canary"):
                seen.append(routes)
                os.kill(os.getpid(), sig)  # delivered to the main thread, which runs the CLI
                return
            time.sleep(0.2)

    sender = threading.Thread(target=signal_at_the_first_step, daemon=True)
    sender.start()
    result = runner.invoke(
        app,
        ["canary", "iris-prod", "--model", f"models:/iris/{v2}", "--steps", "50,100",
         "--interval", "60"],
    )  # fmt: skip
    sender.join(10)
    routes = operations.get_status("iris-prod").health.model_dump().get("routes") or {}
    state = json.loads((mlops_home / "local" / "iris-prod" / "state.json").read_text())

    assert seen and seen[0]["canary"]["percent"] == 50.0  # it was signalled mid-step
    how, code = ("terminated", 143) if sig == signal.SIGTERM else ("interrupted", 130)
    assert result.exit_code == code, result.output
    assert f"{how}: all of iris-prod's traffic is back on the champion" in result.stderr
    assert routes.get("canary") is None and state["challenger"] is None
    assert served_version(iris_prod["endpoint_url"]) == "1"
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_a_rolled_back_canary_prints_each_progress_line_once_and_fails_on_rollback(
    iris_prod: dict,  # noqa: F811
    iris_features,
    tmp_path: Path,
) -> None:
    v2 = register_behaviour(tmp_path, "faulty", iris_features)  # every IRIS_ROW fails on v2
    load = VersionClient(iris_prod["endpoint_url"], max_seconds=120)
    load.start()
    try:
        result = mlops(
            "canary", "iris-prod", "--model", f"models:/iris/{v2}", "--steps", "30,100",
            "--interval", "2", "--fail-on-rollback", "--json",
        )  # fmt: skip
    finally:
        load.stop()

    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)  # the result is printed whole before the exit code
    assert out["decision"] == "rolled_back" and out["challenger_version"] == v2
    lines = result.stderr.splitlines()

    def count(pattern: str) -> int:
        return sum(bool(re.search(pattern, line)) for line in lines)

    # the challenger's start is announced before its (long) start-up, then its readiness
    assert count(rf"starting challenger models:/iris/{v2} of 'iris-prod' on local:") == 1
    assert count(rf"challenger models:/iris/{v2} of 'iris-prod' is ready at http") == 1
    # a step's progress, its judgement and the rollback: once each (they used to show twice)
    assert count(rf"canary v{v2} at 30%: \d+/2 s") >= 1
    assert count(rf"canary v{v2} at 30% after \d+ s: regressed") == 1
    assert count(rf"canary v{v2} rolled back at 30%") == 1
    assert len(set(lines)) == len(lines)  # a record printed twice repeats its timestamp
    assert lines[-1].startswith("error: The canary of iris-prod rolled back (--fail-on-rollback)")
    assert served_version(iris_prod["endpoint_url"]) == "1"
