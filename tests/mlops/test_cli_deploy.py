"""Deploy commands through typer's runner: bad input gives one line, an exit code, no changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlops_pipeline import ledger
from mlops_pipeline.cli import app
from mlops_pipeline.deployment import Deployment
from mlops_pipeline.targets import known_schemes
from typer.testing import CliRunner

from tests.targets.plugin_support import install_plugin

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "command",
    [
        ["deploy"],
        ["update"],
        ["rollback"],
        ["undeploy"],
        ["status"],
        ["logs"],
        ["deployments", "list"],
        ["deployments", "show"],
        ["deployments", "history"],
    ],
)
def test_every_deploy_command_has_help_and_json(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "--json" in result.output


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["deploy", "models:/iris/9", "--name", "iris-prod"], 3, "has no version '9'"),
        (["deploy", "models:/wine/1", "--name", "iris-prod"], 3, "'wine' is not registered"),
        (["deploy", "iris", "--name", "iris-prod"], 2, "does not name a registered model"),
        (["deploy", "models:/iris/1", "--name", "Iris"], 2, "is not allowed"),
        (
            ["deploy", "models:/iris/1", "--name", "iris-prod", "--target", "nowhere:"],
            2,
            "Known targets: " + ", ".join(f"{s}:" for s in known_schemes()),
        ),
        (
            # the target is checked first, even when the model is unknown too
            ["deploy", "models:/ghost/1", "--name", "iris-prod", "--target", "k8s:/ns"],
            2,
            "Unknown deployment target 'k8s:'",
        ),
        (
            ["deploy", "models:/iris/1", "--name", "iris-prod", "--api-key-file", "/nope/keys"],
            2,
            "--api-key-file '/nope/keys' is not a file",
        ),
        (
            ["deploy", "models:/iris/1", "--name", "iris-prod", "--option", "replicas"],
            2,
            "--option 'replicas' is not KEY=VALUE",
        ),
        (
            ["deploy", "models:/iris/1", "--name", "iris-prod", "--dry-run"],
            2,
            "The local: target has no --dry-run",
        ),
        (["update", "iris-prod", "--model", "models:/iris/1"], 3, "No deployment named"),
        (["rollback", "iris-prod"], 3, "No deployment named"),
        (["undeploy", "iris-prod"], 3, "No deployment named"),
        (["status", "iris-prod"], 3, "No deployment named"),
        (["deployments", "show", "iris-prod"], 3, "No deployment named"),
        (["deployments", "history", "iris-prod"], 3, "No history"),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    registered_model: dict, mlops_home: Path, args: list[str], exit_code: int, message: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert ledger.list_deployments() == []
    assert not (mlops_home / "local").exists() or not any((mlops_home / "local").iterdir())


def test_json_errors_and_empty_list(registered_model: dict) -> None:
    listed = invoke("deployments", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output) == []
    failed = invoke("status", "nope", "--json")
    assert failed.exit_code == 3
    error = json.loads(failed.output.splitlines()[0])["error"]
    assert error["code"] == "not_found" and "nope" in error["message"]


@pytest.fixture
def narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> int:
    """An 80-column terminal as rich sees it (COLUMNS is read only when the console is made)."""
    from mlops_pipeline.cli import _output

    monkeypatch.setattr(_output.console, "width", 80)
    return 80


def seconds(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def test_history_shows_date_and_time_and_whole_reasons(
    registered_model: dict, narrow_terminal: int
) -> None:
    reason = "drift detected on alcohol, flavanoids and color_intensity after the nightly batch run"
    events = [
        ledger.record_event("iris-prod", "create", "succeeded", model_name="iris", to_version="1"),
        ledger.record_event(
            "iris-prod",
            "update",
            "failed",
            model_name="iris",
            from_version="1",
            to_version="2",
            image="mlops/iris:2",
            reason=reason,
        ),
    ]
    result = invoke("deployments", "history", "iris-prod")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output
    assert all(len(line) <= narrow_terminal for line in lines)
    for event, action in zip(events, ("create", "update"), strict=True):
        # the whole date and time, on the event's own line
        (row,) = [line for line in lines if f" {action} " in line]
        assert row.startswith(seconds(event.at))
    # a long reason wraps within its column, every character kept (nothing cut at 80)
    start = lines[0].index("reason")
    update = next(i for i, line in enumerate(lines) if " update " in line)
    column = "".join(line[start:] for line in lines[update:])
    assert "".join(column.split()) == "".join(reason.split())


def test_deployment_list_and_show_cut_nothing(
    registered_model: dict, narrow_terminal: int, tmp_path: Path
) -> None:
    capture = tmp_path / "captures-of-a-deployment-with-a-long-path" / ("x" * 40)
    stored = ledger.upsert_deployment(
        Deployment(
            name="iris-prod",
            target_uri="local:",
            model_name="iris",
            model_version="1",
            model_uri="models:/iris/1",
            endpoint_url="http://127.0.0.1:54321",
            capture_uri=str(capture),
        )
    )
    listed = invoke("deployments", "list")
    assert listed.exit_code == 0, listed.output
    assert "…" not in listed.output
    (row,) = [line for line in listed.output.splitlines() if line.startswith("iris-prod ")]
    assert "ready" in row and row.rstrip().endswith(seconds(stored.updated_at))
    # the endpoint folds in its column at 80 columns, but no character of it is lost
    assert "54321" in listed.output and "http://" in listed.output

    shown = invoke("deployments", "show", "iris-prod")
    assert shown.exit_code == 0, shown.output
    assert any(str(capture) in line for line in shown.output.splitlines())


def test_a_table_wider_than_the_terminal_keeps_names_whole(
    mlops_home: Path, iris_model_dir: Path, narrow_terminal: int
) -> None:
    """When even the unwrappable columns exceed the terminal, nothing is shortened."""
    long_model = "fraud-scoring-gradient-boosted-trees-for-card-not-present-transactions"
    assert invoke("register", str(iris_model_dir), "--name", long_model).exit_code == 0
    ledger.upsert_deployment(
        Deployment(
            name="iris-prod",
            target_uri="local:",
            model_name=long_model,
            model_version="1",
            model_uri=f"models:/{long_model}/1",
        )
    )
    listed = invoke("deployments", "list")
    assert listed.exit_code == 0, listed.output
    assert "…" not in listed.output
    (row,) = [line for line in listed.output.splitlines() if line.startswith("iris-prod ")]
    assert long_model in row and "ready" in row


MANIFEST_PLUGIN = r"""
from mlops_pipeline.targets.base import Target


class ManifestTarget(Target):
    scheme = "manifest"
    needs_image = True

    def create(self, name, model, config, *, image=None):
        raise AssertionError("a dry run never creates")

    update = create

    def delete(self, name):
        raise AssertionError("a dry run never deletes")

    def list(self):
        return []

    def get(self, name):
        raise KeyError(name)

    def logs(self, name, tail=100):
        return "".join(f"{name} line {i}\n" for i in range(1, 6)[-tail:])

    def preflight(self, config):
        from mlops_pipeline.errors import BackendUnavailableError

        if config.options.get("cluster") == "down":
            raise BackendUnavailableError("The manifest cluster at 127.0.0.1:1 is down.")

    def render(self, name, model, config, *, image=None):
        options = ",".join(f"{k}={v}" for k, v in sorted(config.options.items()))
        return f"kind: Manifest\nname: {name}\nmodel: {model.uri}\nimage: {image}\n" + (
            f"options: {options}\nworkers: {config.workers}\n"
        )
"""


@pytest.fixture
def manifest_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A third-party target that renders a manifest, as Kubernetes and IoT Edge do."""
    yield from install_plugin(
        tmp_path,
        monkeypatch,
        "manifest_plugin",
        MANIFEST_PLUGIN,
        {"manifest": "manifest_plugin:ManifestTarget"},
    )


def test_dry_run_prints_the_manifest_and_changes_nothing(
    registered_model: dict, manifest_plugin: None
) -> None:
    from mlops_pipeline.inuse import deployments_from_tags
    from mlops_pipeline.registry import get_model_version

    args = ["deploy", "models:/iris@champion", "--name", "iris-edge", "--target", "manifest:/x"]
    args += ["--option", "replicas=3", "--option", "cpu=500m=burst", "--workers", "2"]
    result = invoke(*args, "--dry-run")
    assert result.exit_code == 0, result.output
    # exactly the rendered text on stdout, ready for `kubectl apply -f -` and the like
    assert result.stdout == (
        "kind: Manifest\nname: iris-edge\nmodel: models:/iris/1\nimage: mlops/iris:1\n"
        "options: cpu=500m=burst,replicas=3\nworkers: 2\n\n"
    )
    as_json = json.loads(invoke(*args, "--dry-run", "--json").stdout)
    assert as_json["image"] == "mlops/iris:1" and as_json["target_uri"] == "manifest:/x"
    assert as_json["manifest"].startswith("kind: Manifest\nname: iris-edge\n")
    # nothing recorded, nothing tagged in use, no image built
    assert ledger.list_deployments() == []
    assert ledger.find_deployment("iris-edge") is None
    assert deployments_from_tags(get_model_version("iris", version="1").tags) == {}


def test_dry_run_renders_the_image_that_bakes_scoring_code_and_pinned_members(
    registered_model: dict, manifest_plugin: None, iris_model_dir: Path, tmp_path: Path
) -> None:
    from mlops_pipeline.deployment import EnsembleConfig, ModelRef
    from mlops_pipeline.images.build import image_tag

    assert invoke("register", str(iris_model_dir), "--name", "iris").exit_code == 0
    assert invoke("models", "alias", "set", "iris", "next", "--version", "2").exit_code == 0
    code = tmp_path / "score.py"
    code.write_text("def init(model):\n    pass\n\ndef run(data):\n    return data\n")
    args = ["deploy", "models:/iris@champion", "--name", "iris-ens", "--target", "manifest:/x"]
    args += ["--scoring-code", str(code), "--member", "models:/iris@next:2"]
    args += ["--combiner", "weighted_mean", "--dry-run", "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output

    # the tag deploy would build: the digest covers the code and the members pinned to versions
    pinned = EnsembleConfig.model_validate(
        {
            "members": [
                {"model_uri": "models:/iris/1"},
                {"model_uri": "models:/iris/2", "weight": 2.0},
            ],
            "combiner": "weighted_mean",
        }
    )
    expected = image_tag(ModelRef("iris", "1"), str(code), pinned)
    assert expected.startswith("mlops/iris:1-") and expected != "mlops/iris:1"
    assert json.loads(result.stdout)["image"] == expected
    assert ledger.find_deployment("iris-ens") is None


def test_the_target_is_checked_before_an_image_is_built(
    registered_model: dict, manifest_plugin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target that cannot be reached fails in seconds, not after a build of minutes."""
    from mlops_pipeline.flows import deploy as deploy_flows

    def no_build(*args, **kwargs):
        raise AssertionError("the image was built before the target was checked")

    monkeypatch.setattr(deploy_flows, "build_image_tag", no_build)
    args = ["deploy", "models:/iris/1", "--name", "iris-edge", "--target", "manifest:/x"]
    failed = invoke(*args, "--option", "cluster=down")
    assert failed.exit_code == 6, failed.output
    assert "The manifest cluster at 127.0.0.1:1 is down." in failed.stderr
    assert ledger.find_deployment("iris-edge") is None


def test_the_split_reads_as_one_line() -> None:
    from mlops_pipeline.cli.deploy import describe_split

    primary = {"upstream": "http://127.0.0.1:1", "version": "1"}
    canary = {"upstream": "http://127.0.0.1:2", "version": "2", "percent": 10.0}
    shadow = {"upstream": "http://127.0.0.1:3", "version": "3", "percent": 100.0}
    routes = {"primary": primary, "canary": canary, "shadow": None, "sticky_header": "X-Client"}
    assert describe_split(routes) == ("version 1 90 %, canary version 2 10 % (sticky by X-Client)")
    routes |= {"canary": None, "shadow": shadow, "sticky_header": None}
    assert describe_split(routes) == "version 1 100 %; shadow version 3 gets a copy of 100 %"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--combiner", "majority_vote"], "--combiner majority_vote needs an ensemble"),
        (["--member", "models:/iris/1:abc"], "--member models:/iris/1:abc: weight 'abc' is not"),
    ],
)
def test_ensemble_flags_that_cannot_be_used_say_why(registered_model: dict, extra, message):
    result = invoke("deploy", "models:/iris/1", "--name", "iris-ens", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert ledger.find_deployment("iris-ens") is None


def test_logs_prints_the_targets_log_tail(registered_model: dict, manifest_plugin: None) -> None:
    ledger.upsert_deployment(
        Deployment(
            name="iris-edge",
            target_uri="manifest:/x",
            model_name="iris",
            model_version="1",
            model_uri="models:/iris/1",
        )
    )
    try:
        printed = invoke("logs", "iris-edge", "--tail", "2")
        assert printed.exit_code == 0, printed.output
        assert printed.stdout == "iris-edge line 4\niris-edge line 5\n"
        as_json = json.loads(invoke("logs", "iris-edge", "--tail", "2", "--json").stdout)
        assert as_json == {
            "name": "iris-edge",
            "tail": 2,
            "lines": ["iris-edge line 4", "iris-edge line 5"],
        }
    finally:
        ledger.delete_deployment("iris-edge")
    unknown = invoke("logs", "iris-edge")
    assert unknown.exit_code == 3 and "iris-edge" in unknown.stderr
