"""The iotedge: target: URIs, the manifest, and the real azure-iot-hub SDK against a local
stand-in hub (tests/fakes/iothub.py): what arrives for one device and for a fleet, errors,
idempotent delete, status from twins. Nothing here reaches a real IoT hub or device."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest
from mlops_pipeline import ledger
from mlops_pipeline.errors import (
    AuthError,
    BackendUnavailableError,
    ConflictError,
    DeploymentError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.targets.base import (
    DeployConfig,
    DeploymentStatus,
    ModelRef,
    get_target,
    renderable_schemes,
)
from mlops_pipeline.targets.iotedge import IoTEdgeTarget, parse_location
from mlops_pipeline.targets.iotedge_hub import INSTALL_HINT
from mlops_pipeline.targets.operations import create_deployment, delete_deployment, get_status

from tests.fakes.iothub import IoTHubStandIn, iothub_standin
from tests.targets.iotedge_support import (
    applied_content,
    create_options,
    running,
    serve_standin,
)

V1, V2 = ModelRef("iris", "1"), ModelRef("iris", "2")
IMAGE1, IMAGE2 = "mlops/iris:1", "mlops/iris:2"
FLEET = "iotedge:/localhost?target=tags.site='plant-7'&priority=10"
OTHER_MODULE = {
    "version": "1.0",
    "type": "docker",
    "status": "running",
    "restartPolicy": "always",
    "settings": {"image": "example/sensor:1", "createOptions": "{}"},
}


@pytest.fixture
def standin(tmp_path_factory, monkeypatch) -> Iterator[IoTHubStandIn]:
    yield from serve_standin(tmp_path_factory, monkeypatch)


@pytest.fixture
def no_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import azure.iot.hub` fails, as without the iotedge extra."""
    monkeypatch.setitem(sys.modules, "azure.iot.hub", None)
    monkeypatch.setitem(sys.modules, "azure.iot.hub.models", None)


# --- target URIs -------------------------------------------------------------------------------


def test_both_uri_forms_parse_to_their_canonical_uri():
    device = get_target("iotedge:/my-hub/edge-01")
    assert isinstance(device, IoTEdgeTarget)
    assert (device.target_uri, device.edge.device) == ("iotedge:/my-hub/edge-01", "edge-01")
    fleet = get_target("iotedge:/my-hub?target=tags.site='a' AND tags.ring='2'&priority=20")
    assert fleet.edge.device is None
    assert (fleet.edge.condition, fleet.edge.priority) == ("tags.site='a' AND tags.ring='2'", 20)
    assert fleet.target_uri == "iotedge:/my-hub?target=tags.site='a' AND tags.ring='2'&priority=20"
    layered = parse_location("u", "/my-hub?target=tags.x='y'&priority=5&layered=true")
    assert layered.layered and layered.uri.endswith("&layered=true")


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("iotedge:", "names no IoT hub"),
        ("iotedge:/h", "'h' in 'iotedge:/h' is not an IoT hub name"),
        ("iotedge:/my_hub/dev", "'my_hub'"),
        ("iotedge:/my-hub", "names neither a device nor a fleet"),
        ("iotedge:/my-hub/a/b", "more than a hub and a device"),
        ("iotedge:/my-hub/dev 1", "'dev 1' in"),
        ("iotedge:/my-hub/dev?priority=1", "names a device and a fleet query"),
        ("iotedge:/my-hub?priority=3", "has no target condition"),
        (
            "iotedge:/my-hub?target=tags.a='b'",
            "the fleet URI needs &priority=N (a whole number >= 0; layered deployments above "
            "their base)",
        ),
        ("iotedge:/my-hub?target=tags.a='b'&priority=", "the fleet URI needs &priority=N"),
        ("iotedge:/my-hub?target=tags.a='b'&priority=-1", "priority='-1' in"),
        ("iotedge:/my-hub?target=tags.a='b'&priority=1&layered=maybe", "layered='maybe'"),
        ("iotedge:/my-hub?target=tags.a='b'&priority=1&ring=2", "Unknown parameter(s) ring"),
    ],
)
def test_bad_uris_are_invalid_input_naming_the_value(uri: str, named: str):
    with pytest.raises(InvalidInputError) as caught:
        get_target(uri)
    assert named in str(caught.value)
    assert "iotedge:/<hub>/<device-id>" in str(caught.value)


# --- the manifest (dry run) --------------------------------------------------------------------


def test_render_is_the_set_modules_content_with_secrets_as_references(monkeypatch):
    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("MLOPS_IOTEDGE_REGISTRY_PASSWORD", "registry-secret-value")
    config = DeployConfig(
        port=9001,
        capture_uri="/var/captures",
        sample_rate=0.5,
        options={
            "registry": "myacr.azurecr.io",
            "registry_username": "puller",
            "ttl_seconds": "60",
        },
    )
    target = get_target("iotedge:/my-hub/edge-01")

    text = target.render("iris-edge", V1, config, image=IMAGE1)

    assert "registry-secret-value" not in text
    content = json.loads(text)["modulesContent"]
    assert sorted(content) == ["$edgeAgent", "$edgeHub", "iris-edge"]
    agent = content["$edgeAgent"]["properties.desired"]
    assert agent["schemaVersion"] == "1.1"
    assert agent["runtime"] == {
        "type": "docker",
        "settings": {
            "minDockerVersion": "v1.25",
            "loggingOptions": "",
            "registryCredentials": {
                "myacrazurecrio": {
                    "username": "puller",
                    "password": "$MLOPS_IOTEDGE_REGISTRY_PASSWORD",
                    "address": "myacr.azurecr.io",
                }
            },
        },
    }
    assert sorted(agent["systemModules"]) == ["edgeAgent", "edgeHub"]
    assert agent["systemModules"]["edgeHub"]["settings"]["image"] == (
        "mcr.microsoft.com/azureiotedge-hub:1.5"
    )
    module = agent["modules"]["iris-edge"]
    assert {k: module[k] for k in ("type", "status", "restartPolicy", "version")} == {
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "version": "1",
    }
    assert module["settings"]["image"] == "myacr.azurecr.io/mlops/iris:1"
    assert isinstance(module["settings"]["createOptions"], str)
    assert all(len(v) <= 512 for k, v in module["settings"].items() if k != "image")
    options = create_options(module)
    assert options["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9001"}]
    }
    assert options["HostConfig"]["Binds"] == [
        "/var/lib/mlops/capture/iris-edge:/var/lib/mlops/capture"
    ]
    env = dict(item.split("=", 1) for item in options["Env"])
    assert env["MLOPS_SERVING_MODEL_VERSION"] == "1"
    assert env["MLOPS_SERVING_CAPTURE_URI"] == "/var/lib/mlops/capture"
    assert env["MLOPS_SERVING_SAMPLE_RATE"] == "0.5"
    assert options["Labels"]["mlops.deployment"] == "iris-edge"
    assert content["$edgeHub"]["properties.desired"] == {
        "schemaVersion": "1.1",
        "routes": {
            "iris_edge_captures_to_upstream": (
                "FROM /messages/modules/iris-edge/outputs/captures/* INTO $upstream"
            )
        },
        "storeAndForwardConfiguration": {"timeToLiveSecs": 60},
    }
    assert content["iris-edge"]["properties.desired"] == {
        "model": {
            "name": "iris",
            "version": "1",
            "uri": "models:/iris/1",
            "image": "myacr.azurecr.io/mlops/iris:1",
        },
        "capture": {
            "enabled": True,
            "uri": "/var/lib/mlops/capture",
            "sampleRate": 0.5,
            "output": "captures",
        },
        "mlops_deployment": "iris-edge",
    }
    assert "iotedge:" in renderable_schemes()


def test_render_without_an_image_names_the_build_image_tag_and_layered_form():
    target = get_target("iotedge:/my-hub?target=tags.a='b'&priority=20&layered=true")
    rendered = json.loads(target.render("iris-edge", V1, DeployConfig()))
    assert rendered["layered"] is True and rendered["priority"] == 20
    content = rendered["content"]["modulesContent"]
    assert sorted(content["$edgeAgent"]) == ["properties.desired.modules.iris-edge"]
    assert sorted(content["$edgeHub"]) == [
        "properties.desired.routes.iris_edge_captures_to_upstream"
    ]
    module = content["$edgeAgent"]["properties.desired.modules.iris-edge"]
    assert module["settings"]["image"] == "mlops/iris:1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "red"}, "Unknown iotedge option(s) colour"),
        ({"restart_policy": "sometimes"}, "Option restart_policy='sometimes'"),
        ({"ttl_seconds": "soon"}, "Option ttl_seconds='soon'"),
    ],
)
def test_bad_options_are_invalid_input(options: dict, message: str):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_target("iotedge:/my-hub/d").render("x", V1, DeployConfig(options=options))


@pytest.mark.parametrize(
    ("key", "value", "write"),
    [
        ("host_ip", "notanip", "host_ip=0.0.0.0"),
        ("host_ip", "", "host_ip=127.0.0.1"),
        ("host_ip", "10.0.0.300", "host_ip=127.0.0.1"),
        ("capture_dir", "relative/dir", "capture_dir=/var/lib/mlops/capture/{name}"),
        ("capture_dir", "/data/{model}", "capture_dir=/var/lib/mlops/capture/{name}"),
        ("capture_dir", "C:/captures", "capture_dir=/var/lib/mlops/capture/{name}"),
        ("capture_dir", "/data/a:b", "capture_dir=/var/lib/mlops/capture/{name}"),
        ("edge_version", "9.9", "edge_version=1.4 or edge_version=1.5"),
        ("edge_version", "1.2", "edge_version=1.4 or edge_version=1.5"),
        ("edge_version", "latest", "edge_version=1.4 or edge_version=1.5"),
        ("registry", "https://myacr.azurecr.io", "registry=myacr.azurecr.io"),
        ("registry", "my acr", "registry=myacr.azurecr.io"),
        ("registry_username", "puller", "registry=<host> with it"),
        ("restart_policy", "sometimes", "restart_policy=always"),
        ("status", "paused", "status=running or status=stopped"),
        ("ttl_seconds", "-1", "ttl_seconds=7200"),
        ("wait_seconds", "1.5", "wait_seconds=0"),
        ("wait_seconds", "100000", "wait_seconds=0"),
    ],
)
def test_every_option_is_checked_naming_option_value_and_fix(key: str, value: str, write: str):
    with pytest.raises(InvalidInputError) as caught:
        get_target("iotedge:/my-hub/d").render("x", V1, DeployConfig(options={key: value}))
    text = str(caught.value)
    assert f"Option {key}='{value}' is not" in text and write in text
    assert "\n" not in text and caught.value.details["field"] == f"options.{key}"


def test_the_cli_dry_run_refuses_bad_options_with_exit_2(registered_model, monkeypatch):
    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING", raising=False)
    for setting in ("host_ip=notanip", "capture_dir=relative/dir", "edge_version=9.9"):
        args = ["deploy", "models:/iris@champion", "--name", "iris-edge", "--target"]
        args += ["iotedge:/my-hub/edge-01", "--option", setting, "--dry-run"]
        result = CliRunner().invoke(app, args)
        key, value = setting.split("=")
        assert result.exit_code == 2, result.output
        assert f"{key}='{value}'" in result.output, result.output


@pytest.mark.parametrize(
    "options",
    [
        {"host_ip": "0.0.0.0"},
        {"host_ip": "192.168.1.20"},
        {"host_ip": "::1"},
        {"edge_version": "1.4"},
        {"edge_version": "1.5.3"},
        {"capture_dir": "/data/captures/{name}"},
        {"registry": "registry.local:5000/team", "registry_username": "puller"},
        {"restart_policy": "on-failure", "status": "stopped", "wait_seconds": "86400"},
    ],
)
def test_valid_options_render(options: dict):
    text = get_target("iotedge:/my-hub/d").render("x", V1, DeployConfig(options=options))
    assert json.loads(text)["modulesContent"]


def test_capture_dir_records_the_device_folder_the_module_binds(standin):
    standin.add_device("edge-01")
    target = get_target("iotedge:/localhost/edge-01")
    config = DeployConfig(capture_uri="/home/me/captures", options={"capture_dir": "/data/{name}"})

    created = target.create("iris-edge", V1, config, image=IMAGE1)

    module = applied_content(standin, "edge-01")["$edgeAgent"]["properties.desired"]["modules"]
    assert create_options(module["iris-edge"])["HostConfig"]["Binds"] == [
        "/data/iris-edge:/var/lib/mlops/capture"
    ]
    assert created.capture_uri == "/data/iris-edge"
    assert created.config["capture_uri"] == "/data/iris-edge"
    assert target.get("iris-edge").capture_uri == "/data/iris-edge"
    assert "/home/me/captures" not in json.dumps(applied_content(standin, "edge-01"))
    remote = target.update("iris-edge", V2, DeployConfig(capture_uri="s3://b/c"), image=IMAGE2)
    assert remote.capture_uri == "s3://b/c"  # a remote URI is passed through as it is


def test_fleet_dry_run_prints_the_deployment_create_parts(registered_model, monkeypatch):
    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("MLOPS_IOTEDGE_REGISTRY_PASSWORD", "registry-secret-value")
    args = ["deploy", "models:/iris@champion", "--name", "iris-fleet", "--target", FLEET]
    args += ["--option", "registry=myacr.azurecr.io", "--option", "registry_username=u"]

    result = CliRunner().invoke(app, [*args, "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "registry-secret-value" not in result.output
    rendered = json.loads(result.stdout)
    assert sorted(rendered) == ["content", "id", "labels", "layered", "priority", "targetCondition"]
    assert rendered["id"].startswith("mlops-iris-fleet-v1-")
    assert (rendered["targetCondition"], rendered["priority"]) == ("tags.site='plant-7'", 10)
    assert rendered["labels"] == {
        "mlopsDeployment": "iris-fleet",
        "mlopsModel": "iris",
        "mlopsVersion": "1",
    }
    assert rendered["layered"] is False
    agent = rendered["content"]["modulesContent"]["$edgeAgent"]["properties.desired"]
    credential = agent["runtime"]["settings"]["registryCredentials"]["myacrazurecrio"]
    assert credential["password"] == "$MLOPS_IOTEDGE_REGISTRY_PASSWORD"


def test_without_the_extra_the_error_says_how_to_install_it(no_sdk):
    target = get_target("iotedge:/my-hub/edge-01")
    assert target.render("iris-edge", V1, DeployConfig(), image=IMAGE1)  # needs no SDK
    with pytest.raises(InvalidInputError) as caught:
        target.create("iris-edge", V1, DeployConfig(), image=IMAGE1)
    assert "pip install 'mlops-pipeline[iotedge]'" in str(caught.value)
    assert INSTALL_HINT in str(caught.value)


def test_missing_or_foreign_connection_string_is_invalid_input(monkeypatch):
    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING", raising=False)
    with pytest.raises(InvalidInputError, match="Set MLOPS_IOTEDGE_CONNECTION_STRING"):
        get_target("iotedge:/my-hub/d").list()
    monkeypatch.setenv(
        "MLOPS_IOTEDGE_CONNECTION_STRING",
        "HostName=other-hub.azure-devices.net;SharedAccessKeyName=p;SharedAccessKey=c2VjcmV0",
    )
    with pytest.raises(InvalidInputError, match="is for hub 'other-hub.azure-devices.net'"):
        get_target("iotedge:/my-hub/d").list()


# --- one device, through the SDK and the stand-in ----------------------------------------------


def test_device_create_applies_the_manifest_keeping_the_device_deployment(standin, monkeypatch):
    standin.add_device("edge-01")
    # the device's own deployment: a runtime 1.4 with a registry, a sensor module, a route
    device_runtime = {
        "type": "docker",
        "settings": {
            "minDockerVersion": "v1.25",
            "registryCredentials": {
                "sensors": {"username": "u", "password": "device-pw", "address": "sensors.io"}
            },
        },
    }
    device_system = {
        "edgeAgent": {"type": "docker", "settings": {"image": "azureiotedge-agent:1.4"}},
        "edgeHub": {
            "type": "docker",
            "status": "running",
            "restartPolicy": "always",
            "settings": {"image": "azureiotedge-hub:1.4"},
        },
    }
    standin.desired("edge-01", "$edgeAgent").update(
        {
            "schemaVersion": "1.1",
            "runtime": device_runtime,
            "systemModules": device_system,
            "modules": {"sensor": OTHER_MODULE},
        }
    )
    sensor_route = "FROM /messages/modules/sensor/* INTO $upstream"
    standin.desired("edge-01", "$edgeHub").update(
        {
            "schemaVersion": "1.1",
            "routes": {"sensorToUpstream": sensor_route},
            "storeAndForwardConfiguration": {"timeToLiveSecs": 600},
        }
    )
    monkeypatch.setenv("MLOPS_IOTEDGE_REGISTRY_PASSWORD", "acr-password")
    target = get_target("iotedge:/localhost/edge-01")
    options = {"registry": "myacr.azurecr.io", "registry_username": "puller"}
    config = DeployConfig(port=9001, capture_uri="/var/captures", options=options)

    deployment = target.create("iris-edge", V1, config, image=IMAGE1)

    assert (deployment.model_version, deployment.image) == ("1", f"myacr.azurecr.io/{IMAGE1}")
    assert deployment.status == DeploymentStatus.CREATING  # edgeAgent has not reported yet
    content = applied_content(standin, "edge-01")
    # the rendered module, route and twin, added to what the device ran: its system modules,
    # runtime, store-and-forward, sensor module and route stay; the password is sent resolved
    expected = json.loads(target.render("iris-edge", V1, config, image=IMAGE1))["modulesContent"]
    agent = expected["$edgeAgent"]["properties.desired"]
    agent["systemModules"] = device_system
    agent["modules"]["sensor"] = OTHER_MODULE
    agent["runtime"]["settings"]["registryCredentials"]["myacrazurecrio"]["password"] = (
        "acr-password"
    )
    agent["runtime"]["settings"]["registryCredentials"]["sensors"] = device_runtime["settings"][
        "registryCredentials"
    ]["sensors"]
    edge_hub = expected["$edgeHub"]["properties.desired"]
    edge_hub["routes"]["sensorToUpstream"] = sensor_route
    edge_hub["storeAndForwardConfiguration"] = {"timeToLiveSecs": 600}
    assert content == expected
    assert "acr-password" not in target.render("iris-edge", V1, config, image=IMAGE1)
    assert standin.desired("edge-01", "iris-edge")["model"]["version"] == "1"
    with pytest.raises(ConflictError, match="'iris-edge' already exists"):
        target.create("iris-edge", V2, config, image=IMAGE2)


def test_device_update_get_list_and_idempotent_delete(standin):
    standin.add_device("edge-01")
    target = get_target("iotedge:/localhost/edge-01")
    target.create("iris-edge", V1, DeployConfig(), image=IMAGE1)
    standin.report("edge-01", "$edgeAgent", {"modules": {"iris-edge": running(IMAGE1)}})
    assert target.get("iris-edge").status == DeploymentStatus.READY
    assert target.health("iris-edge")["ready"] is True

    updated = target.update("iris-edge", V2, DeployConfig(), image=IMAGE2)

    modules = applied_content(standin, "edge-01")["$edgeAgent"]["properties.desired"]["modules"]
    assert modules["iris-edge"]["settings"]["image"] == IMAGE2
    assert (updated.model_version, updated.status) == ("2", DeploymentStatus.UPDATING)
    standin.report(
        "edge-01",
        "$edgeAgent",
        {"modules": {"iris-edge": {"runtimeStatus": "backoff", "settings": {"image": IMAGE2}}}},
    )
    assert target.get("iris-edge").status == DeploymentStatus.UNHEALTHY
    assert [(d.name, d.model_version) for d in target.list()] == [("iris-edge", "2")]
    with pytest.raises(InvalidInputError, match="scores on the IoT Edge device"):
        target.predict("iris-edge", {"inputs": [[1, 2, 3, 4]]})
    with pytest.raises(NotFoundError, match="edge-01"):
        target.logs("iris-edge")  # no device is online at the stand-in

    target.delete("iris-edge")
    applies = len(standin.applied)
    target.delete("iris-edge")

    assert len(standin.applied) == applies  # nothing left to remove: no second apply
    content = applied_content(standin, "edge-01")
    assert content["$edgeAgent"]["properties.desired"]["modules"] == {}
    assert content["$edgeHub"]["properties.desired"]["routes"] == {}
    with pytest.raises(NotFoundError, match="'iris-edge' does not exist"):
        target.get("iris-edge")
    assert target.list() == []
    get_target("iotedge:/localhost/gone-device").delete("iris-edge")  # unknown device: done


# --- a fleet -----------------------------------------------------------------------------------


def test_fleet_create_update_status_and_delete(standin):
    for device in ("edge-01", "edge-02"):
        standin.add_device(device)
    target = get_target(FLEET)

    target.create("iris-fleet", V1, DeployConfig(), image=IMAGE1)

    [(config_id, stored)] = standin.configurations.items()
    assert config_id.startswith("mlops-iris-fleet-v1-")
    assert stored["targetCondition"] == "tags.site='plant-7'"
    assert stored["priority"] == 10
    assert stored["labels"] == {
        "mlopsDeployment": "iris-fleet",
        "mlopsModel": "iris",
        "mlopsVersion": "1",
    }
    rendered = json.loads(target.render("iris-fleet", V1, DeployConfig(), image=IMAGE1))
    assert {k: rendered[k] for k in ("id", "targetCondition", "priority", "labels")} == {
        k: stored[k] for k in ("id", "targetCondition", "priority", "labels")
    }
    assert stored["content"] == rendered["content"]
    [(method, path, body)] = [r for r in standin.requests if r[0] == "PUT"]
    assert (method, path) == ("PUT", f"/configurations/{config_id}")
    assert body["content"] == rendered["content"]
    assert body["targetCondition"] == "tags.site='plant-7'"
    content = body["content"]["modulesContent"]
    module = content["$edgeAgent"]["properties.desired"]["modules"]["iris-fleet"]
    assert (module["settings"]["image"], module["status"]) == (IMAGE1, "running")
    assert content["iris-fleet"]["properties.desired"]["model"]["uri"] == "models:/iris/1"
    assert content["$edgeHub"]["properties.desired"]["routes"] == {
        "iris_fleet_captures_to_upstream": (
            "FROM /messages/modules/iris-fleet/outputs/captures/* INTO $upstream"
        )
    }
    assert target.get("iris-fleet").status == DeploymentStatus.CREATING
    standin.report("edge-01", "$edgeAgent", {"modules": {"iris-fleet": running(IMAGE1)}})
    standin.report("edge-02", "$edgeAgent", {"modules": {"iris-fleet": running(IMAGE1)}})
    assert target.get("iris-fleet").status == DeploymentStatus.READY
    assert target.health("iris-fleet")["devices"] == 2
    with pytest.raises(ConflictError):
        target.create("iris-fleet", V1, DeployConfig(), image=IMAGE1)

    updated = target.update("iris-fleet", V2, DeployConfig(), image=IMAGE2)

    [(new_id, stored)] = standin.configurations.items()
    assert new_id.startswith("mlops-iris-fleet-v2-") and new_id != config_id
    assert stored["labels"]["mlopsVersion"] == "2"
    assert (updated.model_version, updated.status) == ("2", DeploymentStatus.UPDATING)
    standin.report(
        "edge-02",
        "$edgeAgent",
        {"modules": {"iris-fleet": {"runtimeStatus": "failed", "settings": {"image": IMAGE2}}}},
    )
    assert target.get("iris-fleet").status == DeploymentStatus.FAILED  # worst device wins
    assert [d.name for d in target.list()] == ["iris-fleet"]
    assert get_target("iotedge:/localhost?target=tags.site='x'&priority=10").list() == []

    target.delete("iris-fleet")
    target.delete("iris-fleet")

    assert standin.configurations == {}
    with pytest.raises(NotFoundError):
        target.get("iris-fleet")


def test_layered_fleet_needs_a_priority_above_every_base(standin):
    base = get_target("iotedge:/localhost?target=tags.site='plant-7'&priority=10")
    base.create("base-model", V1, DeployConfig(), image=IMAGE1)
    low = get_target("iotedge:/localhost?target=tags.ring='1'&priority=10&layered=true")

    with pytest.raises(InvalidInputError, match="Layered priority 10 is not above base"):
        low.create("iris-layer", V1, DeployConfig(), image=IMAGE1)

    high = get_target("iotedge:/localhost?target=tags.ring='1'&priority=11&layered=true")
    high.create("iris-layer", V1, DeployConfig(), image=IMAGE1)
    layered = next(c for i, c in standin.configurations.items() if "iris-layer" in i)
    assert sorted(layered["content"]["modulesContent"]["$edgeAgent"]) == [
        "properties.desired.modules.iris-layer"
    ]
    assert high.get("iris-layer").model_version == "1"


# --- errors through the deployment operations: nothing recorded --------------------------------


def test_unauthorised_and_unknown_device_record_nothing_and_leak_no_secret(
    registered_model,
    standin,
    tmp_path,
    monkeypatch,
    caplog,
):
    caplog.set_level(logging.DEBUG)
    standin.add_device("edge-01")
    key = standin.key
    good = standin.connection_string
    # a key the hub does not know: its signatures fail, so the 401 is the stand-in's check
    with iothub_standin(tmp_path, key=b"another-key") as other:
        wrong_key = other.key
    monkeypatch.setenv("MLOPS_IOTEDGE_CONNECTION_STRING", good.replace(key, wrong_key))

    with pytest.raises(AuthError) as unauthorised:
        create_deployment("iris-edge", V1, "iotedge:/localhost/edge-01", DeployConfig(), IMAGE1)

    assert "HTTP 401" in str(unauthorised.value)
    assert "MLOPS_IOTEDGE_CONNECTION_STRING" in str(unauthorised.value)
    monkeypatch.setenv("MLOPS_IOTEDGE_CONNECTION_STRING", good)
    with pytest.raises(NotFoundError) as unknown:
        create_deployment("iris-edge", V1, "iotedge:/localhost/edge-99", DeployConfig(), IMAGE1)
    assert "Device 'edge-99' is not an IoT Edge device of hub 'localhost'" in str(unknown.value)

    assert ledger.find_deployment("iris-edge") is None
    assert [e.result for e in ledger.history("iris-edge")] == ["failed", "failed"]
    assert standin.applied == []
    for secret in (key, wrong_key, good):
        for text in (caplog.text, str(unauthorised.value), str(unknown.value)):
            assert secret not in text
        assert secret not in repr(unauthorised.value.to_dict())
    assert key not in repr(IoTEdgeTarget("iotedge:/localhost/edge-01").hub)


def test_deploy_and_undeploy_through_operations_records_the_canonical_uri(
    registered_model,
    standin,
):
    standin.add_device("edge-01")
    deployment = create_deployment(
        "iris-edge", V1, "iotedge:/localhost/edge-01/", DeployConfig(), IMAGE1
    )
    assert deployment.target_uri == "iotedge:/localhost/edge-01"
    assert ledger.find_deployment("iris-edge").model_version == "1"
    standin.report("edge-01", "$edgeAgent", {"modules": {"iris-edge": running(IMAGE1)}})
    report = get_status("iris-edge")
    assert (report.status, report.health.ready) == (DeploymentStatus.READY, True)
    delete_deployment("iris-edge")
    assert ledger.find_deployment("iris-edge") is None
    modules = applied_content(standin, "edge-01")["$edgeAgent"]["properties.desired"]["modules"]
    assert modules == {}


def test_cli_dry_run_prints_the_set_modules_content(registered_model, monkeypatch):
    from mlops_pipeline.cli import app
    from typer.testing import CliRunner

    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING", raising=False)
    args = ["deploy", "models:/iris@champion", "--name", "iris-edge", "--target"]
    args += ["iotedge:/my-hub/edge-01", "--option", "host_ip=0.0.0.0", "--dry-run"]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    content = json.loads(result.stdout)["modulesContent"]
    module = content["$edgeAgent"]["properties.desired"]["modules"]["iris-edge"]
    assert module["settings"]["image"] == "mlops/iris:1"
    binding = create_options(module)["HostConfig"]["PortBindings"]["8080/tcp"]
    assert binding == [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    assert ledger.find_deployment("iris-edge") is None


def test_wait_seconds_waits_for_edge_agent_and_rolls_back_a_failed_update(standin):
    standin.add_device("edge-01")
    target = get_target("iotedge:/localhost/edge-01")
    config = DeployConfig(options={"wait_seconds": "20"})
    reporter = threading.Timer(
        1.0,
        standin.report,
        ("edge-01", "$edgeAgent", {"modules": {"iris-edge": running(IMAGE1)}}),
    )
    reporter.start()

    created = target.create("iris-edge", V1, config, image=IMAGE1)

    assert created.status == DeploymentStatus.READY
    failed = {"runtimeStatus": "failed", "settings": {"image": IMAGE2}}
    reporter = threading.Timer(
        1.0, standin.report, ("edge-01", "$edgeAgent", {"modules": {"iris-edge": failed}})
    )
    reporter.start()

    with pytest.raises(
        DeploymentError, match="'iris-edge' on iotedge:/localhost/edge-01 is failed"
    ):
        target.update("iris-edge", V2, config, image=IMAGE2)

    images = [
        body["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["iris-edge"][
            "settings"
        ]["image"]
        for _, body in standin.applied
    ]
    assert images == [IMAGE1, IMAGE2, IMAGE1]  # the previous deployment, applied again
    assert standin.desired("edge-01", "iris-edge")["model"]["version"] == "1"
    assert target.get("iris-edge").model_version == "1"


def test_wait_seconds_removes_a_fleet_module_that_never_runs(standin):
    standin.add_device("edge-01")
    target = get_target(FLEET)
    with pytest.raises(DeploymentError, match="is creating after 2 s"):
        target.create("iris-fleet", V1, DeployConfig(options={"wait_seconds": "2"}), image=IMAGE1)
    assert standin.configurations == {}


def test_the_sdk_verifies_the_hub_certificate(standin, monkeypatch):
    standin.add_device("edge-01")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # the stand-in's CA is then trusted by nobody

    with pytest.raises(BackendUnavailableError, match="could not be reached") as caught:
        get_target("iotedge:/localhost/edge-01").list()

    assert "SSL" in repr(caught.value.__cause__)
    assert standin.requests == []


def test_the_connection_string_can_come_from_a_prefect_secret_block(
    registered_model, standin, prefect_harness, monkeypatch, caplog
):
    """MLOPS_IOTEDGE_CONNECTION_STRING_BLOCK names a real Prefect Secret block (read by the
    tasks layer's reader, `mlops_pipeline.secrets`); the secret is never logged."""
    import mlops_pipeline.tasks  # noqa: F401 - registers the block reader, as flow runs do
    from prefect.blocks.system import Secret

    caplog.set_level(logging.DEBUG)
    Secret(value=standin.connection_string).save("edge-hub", overwrite=True)
    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING")
    monkeypatch.setenv("MLOPS_IOTEDGE_CONNECTION_STRING_BLOCK", "edge-hub")
    standin.add_device("edge-01")
    deployment = create_deployment(
        "iris-edge", V1, "iotedge:/localhost/edge-01", DeployConfig(), IMAGE1
    )
    assert deployment.model_version == "1"
    assert [target for target, _ in standin.applied] == ["edge-01"]
    assert standin.key not in caplog.text

    monkeypatch.setenv("MLOPS_IOTEDGE_CONNECTION_STRING_BLOCK", "no-such-block")
    # a credential that cannot be read is its own error: never "no such deployment", and
    # never an idempotent delete that succeeds without reaching the hub
    target = IoTEdgeTarget("iotedge:/localhost/edge-01")
    for call in (lambda: target.get("iris-edge"), lambda: target.delete("iris-edge")):
        with pytest.raises(NotFoundError, match="No Prefect Secret block named 'no-such-block'"):
            call()
    monkeypatch.setenv("MLOPS_IOTEDGE_CONNECTION_STRING_BLOCK", "edge-hub")
    delete_deployment("iris-edge")
    assert ledger.find_deployment("iris-edge") is None


def test_preflight_checks_options_extra_and_credentials_before_any_build(monkeypatch, no_sdk):
    """What `deploy` checks in seconds before it builds the module's image."""
    target = IoTEdgeTarget("iotedge:/localhost/edge-01")
    with pytest.raises(InvalidInputError, match="host_ip='notanip'"):
        target.preflight(DeployConfig(options={"host_ip": "notanip"}))
    with pytest.raises(InvalidInputError) as missing:
        target.preflight(DeployConfig())
    assert INSTALL_HINT in str(missing.value.to_dict())


def test_preflight_needs_a_connection_string_for_the_hub(monkeypatch):
    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("MLOPS_IOTEDGE_CONNECTION_STRING_BLOCK", raising=False)
    with pytest.raises(InvalidInputError, match="No connection string for IoT hub 'localhost'"):
        IoTEdgeTarget("iotedge:/localhost/edge-01").preflight(DeployConfig())
