"""The IoT Hub side of the `iotedge:` target: settings, the `azure-iot-hub` SDK, its errors.

The SDK is an optional extra (`pip install 'mlops-pipeline[iotedge]'`): it pulls `uamqp`, which
has wheels only for CPython 3.11-3.13, so the core install leaves it out. It is imported on the
first call that talks to a hub, never at import time, so `deploy --dry-run` (render) works
without it.

The connection string is a `SecretStr` read from MLOPS_IOTEDGE_CONNECTION_STRING, or from the
Prefect Secret block MLOPS_IOTEDGE_CONNECTION_STRING_BLOCK names (`mlops_pipeline.secrets`); it
is handed to the SDK and to nothing else: no message, log line or repr here contains it (the
SDK's own `ConnectionString.__repr__` returns it whole, so SDK objects are never formatted
either).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from functools import cached_property
from types import ModuleType
from typing import Any, TypeVar

from mlops_pipeline.errors import (
    AuthError,
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.secrets import read_block
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

INSTALL_HINT = "Install the IoT Edge extra: pip install 'mlops-pipeline[iotedge]'."
CONNECTION_VARIABLE = "MLOPS_IOTEDGE_CONNECTION_STRING"
BLOCK_VARIABLE = "MLOPS_IOTEDGE_CONNECTION_STRING_BLOCK"
T = TypeVar("T")


class IoTEdgeSettings(BaseSettings):
    """Settings of the `iotedge:` target; every field reads MLOPS_IOTEDGE_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_IOTEDGE_", extra="ignore")

    connection_string: SecretStr | None = Field(
        default=None,
        description="IoT Hub connection string of a shared access policy with registry "
        "read/write and service connect (e.g. iothubowner): HostName=...;SharedAccessKeyName="
        "...;SharedAccessKey=...",
    )
    connection_string_block: str | None = Field(
        default=None,
        description="Prefect Secret block holding the connection string, read when "
        "MLOPS_IOTEDGE_CONNECTION_STRING is unset (through the CLI or a flow run).",
    )
    registry_password: SecretStr | None = Field(
        default=None,
        description="Container registry password the hub passes to edgeAgent; manifests name it "
        "only as $MLOPS_IOTEDGE_REGISTRY_PASSWORD.",
    )


def iotedge_settings() -> IoTEdgeSettings:
    """The target's settings from the environment, read on each call (tests and long-lived
    workers see changes).

    Raises:
        InvalidInputError: a value does not validate (names the variable, never the value).
    """
    try:
        return IoTEdgeSettings()
    except ValidationError as exc:
        variable = "MLOPS_IOTEDGE_" + str(exc.errors()[0]["loc"][0]).upper()
        raise InvalidInputError(
            f"Environment variable {variable} is invalid.", hint=f"Fix or unset {variable}."
        ) from None  # the validation error would carry the secret value


def import_sdk() -> ModuleType:
    """The `azure.iot.hub` module, with its `models` submodule loaded.

    Raises:
        InvalidInputError: the `iotedge` extra is not installed (or its `six` is missing).
    """
    try:
        importlib.import_module("azure.iot.hub.models")
        return importlib.import_module("azure.iot.hub")
    except ImportError as exc:
        raise InvalidInputError(
            f"The iotedge: target needs the azure-iot-hub SDK, which is not installed ({exc}).",
            hint=INSTALL_HINT,
            field="target",
        ) from exc


def _sdk_errors() -> tuple[type[BaseException], type[BaseException], type[BaseException]]:
    """The SDK's HTTP error, transport error and SAS signing error classes (SDK installed)."""
    from azure.iot.hub.sastoken import SasTokenError
    from msrest.exceptions import ClientRequestError, HttpOperationError

    return HttpOperationError, ClientRequestError, SasTokenError


class Hub:
    """One IoT hub reached with the SDK's configuration and registry managers.

    Args:
        hub: the hub name from the target URI; the connection string's HostName must be that
            hub (`<hub>.azure-devices.net`, or `<hub>` / `<hub>:<port>` for a local stand-in).
        connection_string: the hub connection string, or None to read the settings.

    Raises:
        InvalidInputError: no connection string, a malformed one, or one of another hub.
    """

    def __init__(self, hub: str, connection_string: SecretStr | None = None) -> None:
        self.hub = hub
        settings = iotedge_settings()
        secret = connection_string or settings.connection_string
        if secret is None and settings.connection_string_block:
            secret = read_block(settings.connection_string_block, BLOCK_VARIABLE)
        if secret is None or not secret.get_secret_value().strip():
            raise InvalidInputError(
                f"No connection string for IoT hub '{hub}'.",
                hint=f"Set {CONNECTION_VARIABLE} to the hub's connection string (Azure portal: "
                f"IoT Hub > Shared access policies), or {BLOCK_VARIABLE} to the name of a "
                "Prefect Secret block holding it.",
                field=CONNECTION_VARIABLE,
            )
        self._secret = secret
        fields = dict(
            part.split("=", 1) for part in secret.get_secret_value().split(";") if "=" in part
        )
        self.host = fields.get("HostName", "")
        if not self.host or not {"SharedAccessKeyName", "SharedAccessKey"} <= set(fields):
            raise InvalidInputError(
                f"{CONNECTION_VARIABLE} is not an IoT Hub service connection string.",
                hint="It has the form HostName=<hub>.azure-devices.net;SharedAccessKeyName="
                "<policy>;SharedAccessKey=<key>.",
                field=CONNECTION_VARIABLE,
            )
        if hub not in {self.host, self.host.split(".")[0], self.host.split(":")[0]}:
            raise InvalidInputError(
                f"{CONNECTION_VARIABLE} is for hub '{self.host}', not '{hub}'.",
                hint=f"Use the connection string of hub '{hub}', or target iotedge:/"
                f"{self.host.split('.')[0]}/....",
                field="target",
                value=hub,
            )

    def __repr__(self) -> str:
        return f"Hub({self.host!r})"

    @cached_property
    def configurations(self) -> Any:
        """The SDK's IoTHubConfigurationManager for this hub."""
        sdk = import_sdk()
        return self._client(sdk.IoTHubConfigurationManager.from_connection_string)

    @cached_property
    def registry(self) -> Any:
        """The SDK's IoTHubRegistryManager for this hub."""
        sdk = import_sdk()
        return self._client(sdk.IoTHubRegistryManager.from_connection_string)

    def _client(self, factory: Callable[[str], T]) -> T:
        try:
            return factory(self._secret.get_secret_value())
        except ValueError as exc:
            # the SDK's parse errors name no value; keep it that way
            raise InvalidInputError(
                f"{CONNECTION_VARIABLE} was rejected by the SDK: {exc}.",
                hint="Copy the connection string of a shared access policy from the Azure portal.",
                field=CONNECTION_VARIABLE,
            ) from None

    def call(self, action: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call, turning its errors into ours.

        Args:
            action: what the call does, for messages ("apply the manifest to device 'd1'").
            call: the SDK method; args/kwargs are passed through.

        Raises:
            AuthError: HTTP 401/403 (wrong key, policy without the needed rights).
            NotFoundError: HTTP 404 (unknown device, module or configuration).
            ConflictError: HTTP 409/412 (exists already, changed meanwhile).
            BackendUnavailableError: the hub cannot be reached (DNS, TLS, connection).
            BackendError: any other HTTP error.
            InvalidInputError: the connection string's key is not base64.
        """
        http_error, request_error, sas_error = _sdk_errors()
        try:
            return call(*args, **kwargs)
        except http_error as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            detail = _error_detail(exc)
            where = f"IoT hub {self.host}"
            if status in (401, 403):
                raise AuthError(
                    f"{where} refused to {action}: HTTP {status} {detail}".rstrip(),
                    hint=f"Check {CONNECTION_VARIABLE}: its key, and that its policy has "
                    "registry write and service connect rights.",
                    status=status,
                ) from exc
            if status == 404:
                raise NotFoundError(
                    f"{where} could not {action}: not found (HTTP 404) {detail}".rstrip(),
                    status=status,
                ) from exc
            if status in (409, 412):
                raise ConflictError(
                    f"{where} could not {action}: HTTP {status} {detail}".rstrip(),
                    hint="Something else changed it meanwhile; try again.",
                    status=status,
                ) from exc
            raise BackendError(
                f"{where} could not {action}: HTTP {status} {detail}".rstrip(), status=status
            ) from exc
        except request_error as exc:
            raise BackendUnavailableError(
                f"IoT hub {self.host} could not be reached to {action}: {type(exc).__name__}.",
                hint="Check the network, and the HostName in " + CONNECTION_VARIABLE + ".",
            ) from exc
        except sas_error as exc:
            raise InvalidInputError(
                f"The SharedAccessKey in {CONNECTION_VARIABLE} is not base64.",
                hint="Copy the key of a shared access policy from the Azure portal.",
                field=CONNECTION_VARIABLE,
            ) from exc


def _error_detail(exc: BaseException) -> str:
    """The hub's own error text (its JSON `Message`), at most 200 characters, in brackets."""
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else {}
        text = str(body.get("Message") or body.get("message") or "")
    except ValueError:
        text = (getattr(response, "text", "") or "").strip()
    return f"({text[:200]})" if text else ""
