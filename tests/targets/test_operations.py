"""Deployment operations against a real sqlite MLflow registry and ledger (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlops_pipeline import ledger
from mlops_pipeline.deployment import Deployment
from mlops_pipeline.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_pipeline.registry import resolve_model_uri
from mlops_pipeline.targets import ModelRef
from mlops_pipeline.targets.operations import (
    DeploymentHealth,
    DeploymentStatusReport,
    find_rollback_version,
    get_status,
    plan_deployment,
    target_needs_image,
    validate_deployment_name,
)
from mlops_pipeline.tracking import connect

from tests.targets.local_support import register_version


def test_resolve_model_uri_by_version_alias_and_latest(
    registered_model: dict, iris_model_dir: Path
) -> None:
    v2 = register_version(iris_model_dir)
    assert resolve_model_uri("models:/iris/1") == ModelRef("iris", "1")
    assert resolve_model_uri("models:/iris@champion") == ModelRef("iris", "1")
    assert resolve_model_uri("models:/iris/latest") == ModelRef("iris", v2)


@pytest.mark.parametrize(
    ("uri", "error", "message"),
    [
        ("iris", InvalidInputError, "does not name a registered model version"),
        ("runs:/abc/model", InvalidInputError, "does not name a registered model version"),
        ("models:/iris/one", InvalidInputError, "is not a number"),
        ("models:/iris/7", NotFoundError, "Model 'iris' has no version '7'"),
        ("models:/iris@nope", NotFoundError, "Model 'iris' has no alias 'nope'"),
        ("models:/wine/1", NotFoundError, "Model 'wine' is not registered"),
    ],
)
def test_resolve_model_uri_rejects_clearly(
    registered_model: dict, uri: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        resolve_model_uri(uri)


def test_deployment_names_are_dns_labels() -> None:
    assert validate_deployment_name("iris-prod-2") == "iris-prod-2"
    for bad in ("Iris", "iris_prod", "-iris", "x" * 64, ""):
        with pytest.raises(InvalidInputError, match="is not allowed"):
            validate_deployment_name(bad)


def test_only_image_targets_need_an_image() -> None:
    assert target_needs_image("local:") is False
    assert target_needs_image("docker:") is True


def test_plan_refuses_a_name_used_by_another_model_or_target(registered_model: dict) -> None:
    assert plan_deployment("iris-prod", ModelRef("iris", "1"), "local:") == "create"
    ledger.upsert_deployment(
        Deployment(
            name="iris-prod",
            target_uri="local:",
            model_name="iris",
            model_version="1",
            model_uri="models:/iris/1",
            config={"port": 18123},
        )
    )
    assert plan_deployment("iris-prod", ModelRef("iris", "1"), "local") == "update"
    with pytest.raises(ConflictError, match="already serves model 'iris'.*not 'wine'"):
        plan_deployment("iris-prod", ModelRef("wine", "1"), "local:")
    with pytest.raises(ConflictError, match="runs on local:, not docker:"):
        plan_deployment("iris-prod", ModelRef("iris", "1"), "docker:")
    with pytest.raises(ConflictError, match="already listens on port 18123"):
        plan_deployment("iris-prod", ModelRef("iris", "1"), "local:", 18124)


def test_rollback_needs_an_earlier_version_that_still_exists(
    registered_model: dict, iris_model_dir: Path
) -> None:
    v2 = register_version(iris_model_dir)
    ledger.upsert_deployment(
        Deployment(
            name="iris-prod",
            target_uri="local:",
            model_name="iris",
            model_version=v2,
            model_uri=f"models:/iris/{v2}",
        )
    )
    ledger.record_event("iris-prod", "create", "succeeded", model_name="iris", to_version="1")
    with pytest.raises(ConflictError, match="no earlier version"):
        find_rollback_version("iris-prod")
    ledger.record_event("iris-prod", "update", "succeeded", model_name="iris", to_version=v2)
    # recorded without settings (as by an older release): the current ones stay on rollback
    assert find_rollback_version("iris-prod") == (ModelRef("iris", "1"), None, None)

    connect().delete_model_version("iris", "1")
    with pytest.raises(NotFoundError, match="no longer exists"):
        find_rollback_version("iris-prod")


def test_health_leaves_out_what_the_target_could_not_learn() -> None:
    down = DeploymentHealth.model_validate(
        {"endpoint_url": "http://127.0.0.1:1", "ready": False, "error": "refused"}
    )
    assert down.model_dump(mode="json") == {
        "endpoint_url": "http://127.0.0.1:1",
        "ready": False,
        "error": "refused",
    }
    up = DeploymentHealth.model_validate(
        {"endpoint_url": "http://x", "ready": True, "version": {"model_version": "3"}, "pid": 7}
    )
    assert up.ready and up.version == {"model_version": "3"} and up.error is None
    # fields a target adds of its own are kept
    assert up.model_dump(mode="json")["pid"] == 7


def test_status_of_a_deployment_its_target_no_longer_runs_is_missing(
    registered_model: dict,
) -> None:
    ledger.upsert_deployment(
        Deployment(
            name="iris-gone",
            target_uri="local:",
            model_name="iris",
            model_version="1",
            model_uri="models:/iris/1",
            endpoint_url="http://127.0.0.1:18125",
        )
    )
    report = get_status("iris-gone")
    assert isinstance(report, DeploymentStatusReport)
    assert report.status == "missing" and report.model == ModelRef("iris", "1")
    assert report.health == DeploymentHealth(ready=False, error="local: does not run it")
    shown = report.model_dump(mode="json")
    # the JSON `mlops status --json` printed before it was typed
    assert shown["status"] == "missing" and shown["endpoint_url"] == "http://127.0.0.1:18125"
    assert shown["health"] == {"ready": False, "error": "local: does not run it"}
    assert DeploymentStatusReport.model_validate(shown) == report
    with pytest.raises(NotFoundError):
        get_status("nobody")
