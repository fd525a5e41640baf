"""While a live challenger (a canary's or a shadow's) runs, nothing switches the champion under
it: update, rollback, deploy over the name and redeploy exit 4 naming it and what to do; after
the challenger stops they work again, and undeploy always works (the challenger goes too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlops_pipeline import ledger
from mlops_pipeline.cli import app
from mlops_pipeline.errors import ConflictError
from mlops_pipeline.targets import ModelRef, operations
from mlops_pipeline.targets.local_protocol import pid_alive
from typer.testing import CliRunner

from tests.targets.local_support import register_version, served_version

runner = CliRunner()


def _challenger_pid(mlops_home: Path, name: str) -> int | None:
    state = json.loads((mlops_home / "local" / name / "state.json").read_text())
    return (state["challenger"] or {}).get("pid")


def test_a_running_challenger_blocks_every_champion_switch_until_it_stops(
    registered_model: dict, iris_model_dir: Path, mlops_home: Path, undeploy_all: None
) -> None:
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.deploy import deploy, update_deployment

    challenger, newer = register_version(iris_model_dir), register_version(iris_model_dir)
    deployed = run_flow(deploy, model_uri="models:/iris/1", name="iris-c", ready_timeout=90.0)
    run_flow(update_deployment, name="iris-c", model_uri=f"models:/iris/{newer}")  # rollback: v1
    upstream = operations.start_challenger("iris-c", ModelRef("iris", challenger))
    # as a canary runs it: 10 % of the traffic on the challenger
    operations.proxy_admin("iris-c").set_routes(
        canary={"upstream": upstream, "percent": 10, "version": challenger}
    )

    attempts = {
        "update": ["update", "iris-c", "--model", "models:/iris/1"],
        "rollback": ["rollback", "iris-c"],
        "deploy": ["deploy", "models:/iris/1", "--name", "iris-c"],
        "redeploy": ["redeploy", "iris-c", "--challenger", "models:/iris/1"],
    }
    for action, args in attempts.items():
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 4, (action, result.output)
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "conflict" and "\n" not in error["message"]
        assert error["message"].startswith(
            f"Deployment 'iris-c' runs a live challenger (version {challenger} as a canary at "
            f"10 %); {'update' if action == 'deploy' else action} would switch its champion"
        ), error["message"]
        assert "Ctrl+C" in error["message"] and "mlops undeploy iris-c" in error["message"]
    # a second canary or shadow is refused before it builds or starts anything
    pid = _challenger_pid(mlops_home, "iris-c")
    for kind in ("canary", "shadow"):
        args = [kind, "iris-c", "--model", "models:/iris/1", "--json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 4, (kind, result.output)
        message = json.loads(result.stdout)["error"]["message"]
        assert f"10 %); a {kind} would start a second challenger beside it" in message, message
        assert _challenger_pid(mlops_home, "iris-c") == pid and pid_alive(pid)
    with pytest.raises(ConflictError):  # the operation itself refuses too, for any caller
        operations.switch_deployment("iris-c", ModelRef("iris", "1"))
    assert served_version(deployed["endpoint_url"]) == newer
    assert ledger.get_deployment("iris-c").model_version == newer
    last = ledger.history("iris-c")[-1]  # nothing attempted was recorded
    assert (last.action, last.result, last.to_version) == ("update", "succeeded", newer)

    operations.proxy_admin("iris-c").set_routes(canary=None)
    operations.stop_challenger("iris-c", ModelRef("iris", challenger))
    result = runner.invoke(app, ["update", "iris-c", "--model", "models:/iris/1", "--json"])
    assert result.exit_code == 0, result.output
    assert served_version(deployed["endpoint_url"]) == "1"


def test_undeploy_removes_a_running_challenger_too(
    registered_model: dict, iris_model_dir: Path, mlops_home: Path, undeploy_all: None
) -> None:
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.deploy import deploy

    challenger = register_version(iris_model_dir)
    run_flow(deploy, model_uri="models:/iris/1", name="iris-u", ready_timeout=90.0)
    operations.start_challenger("iris-u", ModelRef("iris", challenger))
    pid = _challenger_pid(mlops_home, "iris-u")
    assert pid is not None and pid_alive(pid)

    result = runner.invoke(app, ["undeploy", "iris-u", "--json"])

    assert result.exit_code == 0, result.output
    assert not pid_alive(pid)
    assert ledger.find_deployment("iris-u") is None
