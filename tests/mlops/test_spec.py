"""Deployment spec files: round-trip, errors at their line, and the JSON Schema editors read."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from mlops_pipeline.cli import app
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.spec.load import dump_spec, load_spec, parse_spec
from mlops_pipeline.spec.model import DeploymentSpec, json_schema
from typer.testing import CliRunner

FULL = """\
# yaml-language-server: $schema=./deploy.schema.json
name: iris-prod
model: models:/iris@champion
scoring_code: score.py
target:
  uri: kubernetes:/prod
  port: 8080
  options:
    service_type: NodePort
    service_port: 30080
replicas: 3
max_replicas: 6
resources:
  cpu: {request: 250m, limit: 1}
  memory: {request: 512Mi, limit: 1Gi}
capture:
  uri: captures/
  sample_rate: 0.25
auth:
  primary: {env: IRIS_API_KEY}
  secondary: {block: iris-api-key-next}
monitoring:
  schedule: "0 * * * *"
  drift:
    alpha: 0.05
    thresholds: {psi: 0.2}
    features:
      sepal_length: {psi: 0.3}
redeploy:
  metric: f1_macro
  min_improvement: 0.01
  bake_seconds: 300
  live_gate: canary
"""

ENSEMBLE = """\
name: iris-ensemble
models:
  - uri: models:/iris/1
    weight: 2
  - uri: models:/iris-b@champion
combiner: weighted_mean
"""


def write(tmp_path: Path, text: str, name: str = "deploy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    for text in (FULL.replace("f1_macro", "f1"), ENSEMBLE):
        first = load_spec(write(tmp_path, text)).spec
        again = parse_spec(dump_spec(first), tmp_path / "again.yaml").spec
        assert again == first
        # the dump leaves defaults out, so it is what a person would write
        assert "sample_rate: 1.0" not in dump_spec(again)
    full = load_spec(write(tmp_path, FULL.replace("f1_macro", "f1"))).spec
    assert full.target.options == {"service_type": "NodePort", "service_port": "30080"}
    assert full.monitoring.drift.for_feature("sepal_length").psi == 0.3
    assert full.auth.secondary.block == "iris-api-key-next"


def error_lines(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InvalidInputError) as raised:
        load_spec(write(tmp_path, text))
    assert raised.value.exit_code == 2
    return raised.value.message.splitlines()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a YAML syntax error: the line of the unclosed flow mapping's end
        (
            "name: iris\nmodel: models:/iris/1\ncapture: {uri: c\n",
            ["deploy.yaml:4: not valid YAML"],
        ),
        (
            "name: iris\nmodel: models:/iris/1\ncapture:\n  uri: c\n  sample_rate: 1.5\n",
            ["deploy.yaml:5: capture.sample_rate: 1.5 is not <= 1; use a value between 0 and 1"],
        ),
        (
            "name: iris\nmodel: models:/iris/1\n\nreplica: 2\n",
            ["deploy.yaml:4: replica: unknown field; did you mean 'replicas'?"],
        ),
        (
            "name: iris\nmodel: models:/iris/1\nmonitoring:\n  drift:\n    alfa: 0.1\n",
            ["deploy.yaml:5: monitoring.drift.alfa: unknown field; did you mean 'alpha'?"],
        ),
        (
            "name: iris\nmodel: iris\n",
            ["deploy.yaml:2: model: 'iris' is not valid here; use models:/NAME/VERSION"],
        ),
        ("name: iris\nmodel: models:/iris/1\nname: x\n", ["deploy.yaml:3: name: duplicate key"]),
        (
            "name: iris\nmodel: models:/iris/1\ntarget: {uri: 'docker:'}\n"
            "resources:\n  cpu: {request: 1}\n",
            ["deploy.yaml:4: resources: applies to kubernetes: targets only"],
        ),
        (
            "name: iris\nmodels:\n  - uri: models:/iris/1\n  - uri: models:/iris/2\n"
            "    weight: 0\n",
            ["deploy.yaml:5: models.1.weight: 0 is not > 0; use a value > 0"],
        ),
        ("model: models:/iris/1\n", ["deploy.yaml:1: name: is required; add it"]),
        (
            "name: iris\nmodel: models:/iris/1\nredeploy:\n  metric: nope\n",
            ["deploy.yaml:4: redeploy.metric: Metric 'nope' is not supported"],
        ),
        (
            "name: iris\nmodel: models:/iris/1\nauth:\n  primary: {env: A, block: b}\n",
            ["deploy.yaml:4: auth.primary: give exactly one of env"],
        ),
    ],
)
def test_an_error_names_the_file_the_line_and_the_field(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    lines = error_lines(tmp_path, text)
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), lines


def test_every_error_is_reported_one_line_each(tmp_path: Path) -> None:
    text = "name: Iris\nmodel: models:/iris/1\nreplicas: 0\ncapture:\n  uri: c\n  bogus: 1\n"
    lines = error_lines(tmp_path, text)
    assert [line.split(": ")[0] for line in lines] == [
        "deploy.yaml:1",
        "deploy.yaml:3",
        "deploy.yaml:6",
    ]


def test_the_schema_is_valid_json_schema_and_agrees_with_the_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["spec", "schema", "--json"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema == json_schema()
    validator = jsonschema.Draft202012Validator
    validator.check_schema(schema)
    good = yaml.safe_load(FULL.replace("f1_macro", "f1"))
    validator(schema).validate(good)
    assert DeploymentSpec.model_validate(good).name == "iris-prod"
    for bad in ({**good, "replica": 2}, {**good, "capture": {"uri": "c", "sample_rate": 1.5}}):
        assert list(validator(schema).iter_errors(bad)), bad
    # editors complete the fields from their descriptions
    assert "sample_rate" in schema["$defs"]["CaptureSpec"]["properties"]
    assert schema["additionalProperties"] is False


def test_schema_without_json_is_the_same_document() -> None:
    result = CliRunner().invoke(app, ["spec", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output) == json_schema()


def test_the_applied_spec_gives_the_redeploy_policy_under_the_given_options(
    mlops_home: Path, tmp_path: Path
) -> None:
    from mlops_pipeline.spec.store import find_applied, redeploy_options, save_applied

    given = {"metric": None, "min_improvement": None, "bake_seconds": 5.0, "live_gate": None}
    assert redeploy_options("iris-prod", **given) == given  # no spec: the settings apply
    spec = load_spec(write(tmp_path, FULL.replace("f1_macro", "f1"))).spec
    save_applied(spec, str(tmp_path / "deploy.yaml"), "ab" * 32)
    assert redeploy_options("iris-prod", **given) == {
        "metric": "f1",
        "min_improvement": 0.01,
        "bake_seconds": 5.0,  # an option given wins over the spec
        "live_gate": "canary",
    }
    assert redeploy_options("iris-prod", **{**given, "live_gate": "none"})["live_gate"] == "none"
    applied = find_applied("iris-prod")
    assert applied.spec == spec and applied.scoring_code_sha256 == "ab" * 32
    # applying again replaces the record
    save_applied(spec.model_copy(update={"redeploy": None}), "other.yaml")
    assert redeploy_options("iris-prod", **given) == given


def test_the_monitor_takes_its_drift_settings_from_the_applied_spec(
    mlops_home: Path, registered_model: dict, iris_features, tmp_path: Path
) -> None:
    import datetime as dt

    from mlops_pipeline.spec.store import save_applied

    from tests.mlops.monitoring.capture_support import capture_table, write_capture

    capture = tmp_path / "capture"
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    frame = iris_features.assign(prediction=0)
    write_capture(
        capture, capture_table(frame, at, "r", version="1"), at, model="iris", version="1"
    )
    text = "name: iris-prod\nmodel: models:/iris/1\nmonitoring:\n  drift: {min_samples: 120}\n"
    save_applied(load_spec(write(tmp_path, text)).spec, str(tmp_path / "deploy.yaml"))

    def monitor(name: str) -> str:
        args = ["monitor", name, "--capture-uri", str(capture), "--model-uri", "models:/iris/1"]
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["status"]

    # 150 captured rows: enough for the spec's min_samples 120, not for the default 500
    assert monitor("iris-prod") in ("ok", "drift")
    assert monitor("iris-other") == "insufficient_data"
