"""`mlops redeploy`, `mlops redeploys` and `mlops pipeline` through typer's runner: help and
--json everywhere, every decision exits 0, bad input exits with its code and one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlops_pipeline import ledger
from mlops_pipeline.cli import app
from mlops_pipeline.deployment import Deployment
from mlops_pipeline.flows.redeploy import NO_CHALLENGER
from typer.testing import CliRunner

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("command", ["redeploy", "redeploys", "pipeline"])
def test_every_loop_command_has_help_and_json(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "--json" in result.output


@pytest.fixture
def recorded_deployment(registered_model: dict) -> Deployment:
    """iris v1 recorded in the ledger as iris-prod (no service: a skipped redeploy needs none)."""
    return ledger.upsert_deployment(
        Deployment(
            name="iris-prod",
            target_uri="local:",
            model_name="iris",
            model_version="1",
            model_uri="models:/iris/1",
            endpoint_url="http://127.0.0.1:9",
        )
    )


def test_a_skipped_redeploy_exits_0_with_the_json_contract(recorded_deployment) -> None:
    result = invoke("redeploy", "iris-prod", "--reason", "drift", "--episode-id", "ep-7", "--json")

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["decision"] == "skipped" and out["reason"] == NO_CHALLENGER
    assert out["champion"]["version"] == "1" and out["challenger"]["version"] is None
    assert out["scores"] == {} and out["trigger"]["episode_id"] == "ep-7"

    human = invoke("redeploy", "iris-prod")
    assert human.exit_code == 0 and human.output.startswith("skipped")

    listed = invoke("redeploys", "iris-prod", "--json")
    assert listed.exit_code == 0
    assert [r["decision"] for r in json.loads(listed.stdout)] == ["skipped", "skipped"]
    table = invoke("redeploys")
    assert table.exit_code == 0 and "iris-prod" in table.output and "skipped" in table.output


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["redeploy", "ghost"], 3, "No deployment named 'ghost'"),
        (["redeploy", "iris-prod", "--metric", "accurracy"], 2, "Metric 'accurracy'"),
        (["redeploy", "iris-prod", "--min-improvement", "-1"], 2, "use a number of at least 0"),
        (["redeploy", "iris-prod", "--challenger", "models:/wine/1"], 3, "'wine' is not"),
        (["redeploy", "iris-prod", "--challenger", "nightly"], 3, "no alias 'nightly'"),
        (["pipeline", "/nope/model.pkl", "--name", "iris"], 3, "/nope/model.pkl"),
        (["pipeline", "x.pkl", "--name", "Bad Name"], 2, "Bad Name"),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(
    recorded_deployment, args: list[str], exit_code: int, message: str
) -> None:
    result = invoke(*args, "--json")
    assert result.exit_code == exit_code, result.output
    if result.stdout.startswith("{"):
        assert message in json.loads(result.stdout)["error"]["message"]
    else:  # the option parser's own check: a usage error (in a box) naming option and value
        text = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)
        assert "'--min-improvement'" in text and message in text
    assert "Traceback" not in result.output
    assert ledger.get_deployment("iris-prod").model_version == "1"


def test_redeploys_without_any_says_so(mlops_home: Path) -> None:
    result = invoke("redeploys")
    assert result.exit_code == 0 and "No redeploys recorded." in result.output


def test_redeploys_of_an_unknown_deployment_exits_3(mlops_home: Path) -> None:
    result = invoke("redeploys", "nosuch", "--json")

    assert result.exit_code == 3, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "not_found"
    assert error["message"].startswith("No deployment named 'nosuch' and no redeploys recorded")


def test_redeploys_of_a_known_deployment_without_any_says_so(recorded_deployment) -> None:
    result = invoke("redeploys", "iris-prod")

    assert result.exit_code == 0 and "No redeploys recorded." in result.output


def test_live_gate_is_an_option_and_a_bad_one_is_one_line(mlops_home: Path) -> None:
    assert "--live-gate" in invoke("redeploy", "--help").output
    bad = invoke("redeploy", "iris-prod", "--live-gate", "fast")
    assert bad.exit_code == 2, bad.output
    assert "--live-gate" in bad.stderr and "'fast' is not one of none, shadow, canary" in bad.stderr
    assert "Traceback" not in bad.output
