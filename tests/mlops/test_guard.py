"""The mlops-guard MLflow server app refuses REST/UI deletes of in-use versions with 409."""

from __future__ import annotations

import httpx
import pytest
from mlflow import MlflowClient
from mlops_pipeline import inuse

from tests.servers import mlflow_server


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", "mlops-guard") as url:
        yield url


def make_versions(client: MlflowClient, name: str, count: int) -> None:
    client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(name, "s3://example-bucket/model")


@pytest.mark.parametrize("api", ["api", "ajax-api"])
def test_rest_delete_of_in_use_version_is_409(guarded_server, api):
    client = MlflowClient(guarded_server, registry_uri=guarded_server)
    name = f"guarded-{api}"
    make_versions(client, name, 2)
    inuse.mark_in_use(client, name, "1", "prod", "docker:")

    refused = httpx.request(
        "DELETE",
        f"{guarded_server}/{api}/2.0/mlflow/model-versions/delete",
        json={"name": name, "version": "1"},
    )
    assert refused.status_code == 409
    assert "version 1 by prod (docker:)" in refused.json()["message"]
    whole_model = httpx.request(
        "DELETE", f"{guarded_server}/{api}/2.0/mlflow/registered-models/delete", json={"name": name}
    )
    assert whole_model.status_code == 409

    # a version no deployment uses deletes normally
    client.delete_model_version(name, "2")
    inuse.release(client, name, "1", "prod")
    client.delete_model_version(name, "1")
    assert client.search_model_versions(f"name='{name}'") == []


def test_mlflow_client_sees_the_refusal(guarded_server):
    from mlflow.exceptions import MlflowException

    client = MlflowClient(guarded_server, registry_uri=guarded_server)
    make_versions(client, "client-guarded", 1)
    inuse.mark_in_use(client, "client-guarded", "1", "edge", "iotedge:/hub/device")
    with pytest.raises(MlflowException, match="in use by active deployments"):
        client.delete_registered_model("client-guarded")
    assert client.get_model_version("client-guarded", "1").version == "1"


def test_unknown_model_delete_is_still_mlflows_404(guarded_server):
    response = httpx.request(
        "DELETE",
        f"{guarded_server}/api/2.0/mlflow/model-versions/delete",
        json={"name": "ghost", "version": "1"},
    )
    assert response.status_code == 404
