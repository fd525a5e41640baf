"""Fixtures of the iotedge: target tests: the stand-in IoT hub, wired to the real SDK by env."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.iothub import IoTHubStandIn, iothub_standin


def serve_standin(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[IoTHubStandIn]:
    """A stand-in hub whose connection string and CA the SDK gets from the environment (the
    body of the test modules' `standin` fixture)."""
    directory = tmp_path_factory.mktemp("iothub")
    with iothub_standin(directory) as hub:
        monkeypatch.setenv("MLOPS_IOTEDGE_CONNECTION_STRING", hub.connection_string)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(directory / "ca.pem"))
        monkeypatch.delenv("MLOPS_IOTEDGE_REGISTRY_PASSWORD", raising=False)
        yield hub


def applied_content(hub: IoTHubStandIn, device: str) -> dict[str, Any]:
    """The last `modulesContent` the hub received for DEVICE."""
    return [body for target, body in hub.applied if target == device][-1]["modulesContent"]


def create_options(module: dict[str, Any]) -> dict[str, Any]:
    """A module's createOptions (chunks joined), parsed."""
    settings = module["settings"]
    keys = ["createOptions"] + sorted(k for k in settings if k.startswith("createOptions0"))
    return json.loads("".join(settings[k] for k in keys))


def running(image: str) -> dict[str, Any]:
    """What edgeAgent reports for a module that runs IMAGE."""
    return {"runtimeStatus": "running", "settings": {"image": image}}
