"""Deploy flows as real Prefect flow runs on the local target, checked through the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlops_pipeline import inuse, ledger
from mlops_pipeline.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_pipeline.flows.deploy import deploy, rollback_deployment, undeploy, update_deployment
from mlops_pipeline.registry.versions import get_model_version
from mlops_pipeline.tracking import connect

from tests.targets.local_support import register_version, served_version


def in_use(version: str) -> dict[str, str]:
    return inuse.deployments_using(connect(), "iris", version)


def test_deploy_update_rollback_undeploy(
    prefect_harness: None,
    undeploy_all: None,
    registered_model: dict,
    iris_model_dir: Path,
    tmp_path: Path,
) -> None:
    v2 = register_version(iris_model_dir)
    register_version(iris_model_dir, name="other")

    captures = str(tmp_path / "captures")
    created = deploy(
        model_uri="models:/iris@champion", name="iris-prod", ready_timeout=90, capture_uri=captures
    )
    endpoint = created["endpoint_url"]
    assert created["model_version"] == "1" and created["status"] == "ready"
    assert in_use("1") == {"iris-prod": "local:"}

    with pytest.raises(ConflictError, match="already serves model 'iris'"):
        deploy(model_uri="models:/other/1", name="iris-prod")
    with pytest.raises(InvalidInputError, match="Unknown deployment target 'nowhere:'"):
        deploy(model_uri="models:/iris/1", name="iris-dev", target="nowhere:")
    with pytest.raises(NotFoundError, match="no version '9'"):
        update_deployment(name="iris-prod", model_uri="models:/iris/9")

    # deploying the same model under the same name updates it in place: the settings given
    # change, the others keep their recorded values
    moved = deploy(model_uri=f"models:/iris/{v2}", name="iris-prod", workers=2, sample_rate=0.5)
    assert moved["endpoint_url"] == endpoint and served_version(endpoint) == v2
    config = ledger.get_deployment("iris-prod").deploy_config
    assert (config.workers, config.sample_rate) == (2, 0.5)
    assert (config.capture_uri, config.ready_timeout) == (captures, 90)
    assert moved["config"]["workers"] == 2  # what the target runs, not only the record
    assert in_use("1") == {} and in_use(v2) == {"iris-prod": "local:"}

    back = rollback_deployment(name="iris-prod", reason="drift on v2")
    assert back["model_version"] == "1" and served_version(endpoint) == "1"
    assert in_use("1") == {"iris-prod": "local:"} and in_use(v2) == {}
    # v2 was never promoted (an update does not move aliases): `champion` stays on v1
    assert get_model_version("iris", alias="champion").version == "1"

    removed = undeploy(name="iris-prod")
    assert removed["name"] == "iris-prod" and removed["status"] == "stopped"
    assert in_use("1") == {} and ledger.list_deployments() == []
    events = [
        (e.action, e.result, e.from_version, e.to_version) for e in ledger.history("iris-prod")
    ]
    assert events == [
        ("create", "succeeded", None, "1"),
        ("update", "succeeded", "1", v2),
        ("rollback", "succeeded", v2, "1"),
        ("delete", "succeeded", "1", None),
    ]
    assert ledger.history("iris-prod")[2].reason == "drift on v2"
    with pytest.raises(NotFoundError, match="No deployment named 'iris-prod'"):
        undeploy(name="iris-prod")
