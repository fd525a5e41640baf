"""`mlops canary` and `mlops shadow` through typer's runner: help, input errors as one line with
their exit code, and a sticky canary end to end on a local deployment."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from mlops_pipeline.cli import app
from mlops_pipeline.targets import operations
from typer.testing import CliRunner

from tests.mlops.rollout.support import VersionClient, fast_rollout, iris_prod  # noqa: F401
from tests.targets.local_support import register_version, served_version

runner = CliRunner()


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_canary_ended_by_a_signal_puts_all_traffic_back_and_stops_the_challenger(
    sig: signal.Signals,
    iris_prod: dict,  # noqa: F811
    iris_model_dir,
    mlops_home,
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
