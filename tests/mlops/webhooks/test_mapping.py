"""The mapping: routes, templates (typed), conditions, fan-out over served deployments, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.webhooks.mapping import (
    DEFAULT_MAPPING,
    UnmappableEventError,
    WebhookMapping,
    load_mapping,
    plan_runs,
)

EXAMPLE = Path(__file__).resolve().parents[3] / ".ci" / "examples" / "webhooks.yaml"

PUSH = {
    "ref": "refs/heads/main",
    "after": "abc123",
    "deleted": False,
    "repository": {"name": "churn", "full_name": "team/churn"},
}


def served(*deployments: dict) -> callable:
    return lambda model: [d for d in deployments if d["model_name"] == model]


def test_example_file_push_starts_the_pipeline_with_payload_parameters() -> None:
    runs = plan_runs(load_mapping(EXAMPLE), "github", "push", PUSH, "g-1")
    assert [r.deployment for r in runs] == ["mlops-pipeline/pipeline"]
    assert runs[0].parameters == {
        "source": "/srv/models/churn/abc123/model",
        "name": "churn",
        "deployment": "churn",
        "reference_data": "/srv/models/churn/abc123/reference.csv",
        "tags": {"git_commit": "abc123", "git_repository": "team/churn"},
    }
    assert runs[0].idempotency_key.startswith("github:g-1:")
    assert "delivery:g-1" in runs[0].tags
    # another branch: the route's condition is false, nothing starts
    other = {**PUSH, "ref": "refs/heads/feature"}
    assert plan_runs(load_mapping(EXAMPLE), "github", "push", other, "g-2") == []


def test_example_file_release_and_workflow_run() -> None:
    mapping = load_mapping(EXAMPLE)
    release = {
        "action": "published",
        "release": {"tag_name": "v2", "name": None},
        "repository": PUSH["repository"],
    }
    (run,) = plan_runs(mapping, "github", "release", release, "g-3")
    assert run.parameters["alias"] == "challenger"
    assert run.parameters["description"] == "v2"
    assert plan_runs(mapping, "github", "release", {**release, "action": "created"}, "g-4") == []
    workflow = {
        "action": "completed",
        "workflow_run": {
            "conclusion": "success",
            "name": "model",
            "head_branch": "main",
            "html_url": "https://github.com/team/churn/actions/runs/1",
        },
        "repository": PUSH["repository"],
    }
    (run,) = plan_runs(mapping, "github", "workflow_run", workflow, "g-5")
    assert run.deployment == "redeploy/redeploy"
    assert run.parameters["challenger"] == "challenger"


def test_alias_champion_updates_each_deployment_serving_the_model_once() -> None:
    deployments = served(
        {"name": "churn-eu", "model_name": "churn", "model_version": "3"},
        {"name": "churn-us", "model_name": "churn", "model_version": "4"},
        {"name": "fraud", "model_name": "fraud", "model_version": "4"},
    )
    payload = {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "churn", "alias": "champion", "version": "4"},
    }
    for mapping in (DEFAULT_MAPPING, load_mapping(EXAMPLE)):
        runs = plan_runs(
            mapping, "mlflow", "model_version_alias.created", payload, "m-1", deployments
        )
        # churn-us already serves v4: only churn-eu switches
        assert [(r.deployment, r.parameters["name"]) for r in runs] == [
            ("update-deployment/update", "churn-eu")
        ]
        assert runs[0].parameters["model_uri"] == "models:/churn/4"
    other_alias = {**payload, "data": {**payload["data"], "alias": "staging"}}
    event = "model_version_alias.created"
    assert plan_runs(DEFAULT_MAPPING, "mlflow", event, other_alias, "m-2", deployments) == []


def test_new_version_redeploys_but_not_the_redeploys_own_retrains() -> None:
    deployments = served({"name": "churn", "model_name": "churn", "model_version": "1"})
    data = {"name": "churn", "version": "2", "tags": {}}
    payload = {"entity": "model_version", "action": "created", "data": data}
    mapping = load_mapping(EXAMPLE)
    (run,) = plan_runs(mapping, "mlflow", "model_version.created", payload, "m-3", deployments)
    assert run.parameters["challenger"] == "models:/churn/2"
    retrained = {**payload, "data": {**data, "tags": {"mlops.parent_version": "1"}}}
    assert (
        plan_runs(mapping, "mlflow", "model_version.created", retrained, "m-4", deployments) == []
    )


def test_a_single_expression_keeps_its_type_and_text_makes_a_string() -> None:
    mapping = WebhookMapping.model_validate(
        {
            "github": {
                "push": [
                    {
                        "deployment": "deploy/deploy",
                        "parameters": {
                            "port": "{{ payload.port }}",
                            "sample_rate": "{{ payload.rate * 2 }}",
                            "name": "m-{{ payload.port }}",
                            "fixed": 3,
                        },
                    }
                ]
            }
        }
    )
    (run,) = plan_runs(mapping, "github", "push", {"port": 8000, "rate": 0.25}, "g-6")
    assert run.parameters == {"port": 8000, "sample_rate": 0.5, "name": "m-8000", "fixed": 3}


def test_a_field_the_payload_lacks_is_unmappable_not_a_crash() -> None:
    with pytest.raises(UnmappableEventError, match="mlops-pipeline/pipeline") as caught:
        plan_runs(load_mapping(EXAMPLE), "github", "push", {"ref": "refs/heads/main"}, "g-7")
    assert caught.value.http_status == 422


def test_templates_cannot_reach_python_internals() -> None:
    mapping = WebhookMapping.model_validate(
        {
            "github": {
                "push": [
                    {
                        "deployment": "a/b",
                        "parameters": {"x": "{{ payload.__class__.__mro__ }}"},
                    }
                ]
            }
        }
    )
    with pytest.raises(UnmappableEventError):
        plan_runs(mapping, "github", "push", {}, "g-8")


@pytest.mark.parametrize(
    ("text", "suffix", "problem"),
    [
        ("github: {push: [{deployment: no-slash}]}", ".yaml", "github.push.0.deployment"),
        ("github: {push: [{deployment: a/b, colour: red}]}", ".yaml", "colour"),
        ("gitlab: {}", ".yaml", "gitlab"),
        ("github: {push: [{deployment: a/b, when: 'a ==='}]}", ".yaml", "when"),
        ("github: [unclosed", ".yaml", "not valid YAML"),
        ("{", ".json", "not valid JSON"),
    ],
)
def test_bad_mapping_files_are_named(tmp_path: Path, text: str, suffix: str, problem: str) -> None:
    path = tmp_path / f"mapping{suffix}"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match="MLOPS_WEBHOOK_MAPPING_FILE") as caught:
        load_mapping(path)
    assert problem in str(caught.value)


def test_missing_file_and_json_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_mapping(tmp_path / "nope.yaml")
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"mlflow": {"model_version.created": [{"deployment": "a/b"}]}}))
    assert load_mapping(path).routes("mlflow", "model_version.created")[0].deployment == "a/b"
    assert load_mapping(None) is DEFAULT_MAPPING
