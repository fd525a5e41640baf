"""The `iotedge:` target: models as Azure IoT Edge modules, on one device or on a fleet.

Target URIs:

* `iotedge:/<hub>/<device-id>`: one device. The target reads the device's current deployment
  (its `$edgeAgent` and `$edgeHub` twins), adds, replaces or removes its own module and applies
  the whole manifest with `IoTHubConfigurationManager.apply_configuration_on_edge_device`, so
  the device's other modules, routes, system modules and runtime settings stay as they are.
  Delete applies the manifest without the module.
* `iotedge:/<hub>?target=<target condition>&priority=<n>[&layered=true]`: a fleet, as an
  IoT Hub configuration (`create_configuration`) with the target condition, the priority and
  labels naming the deployment. A configuration's content cannot change, so an update creates
  the new version's configuration next to the old one (same priority, newer: the hub applies
  it) and then deletes the old one. `layered=true` makes a layered deployment that adds the
  module to each device's base deployment; it must have a higher priority than every base
  deployment on the hub, which `create` checks.

Status comes from the twins: `$edgeAgent` reports each module's `runtimeStatus` and image. The
hub does not relay HTTP to devices, so `create` and `update` return once the hub accepted the
manifest (status `creating` until edgeAgent reports) unless the option `wait_seconds` asks them to
wait for edgeAgent to report the module running; if it does not, `create` removes the module and
`update` re-applies the previous deployment. `predict` is refused and `health` reads the twins.
An update on a device restarts the module (edgeAgent pulls the new image, then replaces the
container): unlike the docker: target it is not zero-downtime on that device.

Settings (`DeployConfig.options`, see iotedge_manifest.OPTION_DEFAULTS): `host_ip` (the device
address the port binds, default 127.0.0.1), `registry` and `registry_username` (the image is
`<registry>/<image>`; the password is MLOPS_IOTEDGE_REGISTRY_PASSWORD), `capture_dir` (the
device folder for captures), `restart_policy`, `status`, `ttl_seconds` (edgeHub store and
forward), `edge_version` (of the system modules), `wait_seconds` (0: do not wait for the
devices); iotedge_manifest.module_spec checks every value, so a dry run refuses bad ones. A local
capture dir only switches capture on: the deployment records the device folder `capture_dir`
as its capture URI. The hub connection string is MLOPS_IOTEDGE_CONNECTION_STRING
(targets/iotedge_hub.py).

`render` (the dry run) prints, for one device, the manifest as `az iot edge set-modules
--content` takes it; for a fleet, the configuration `create` makes: `id`, `targetCondition`,
`priority`, `labels`, `layered` and `content` (what `az iot edge deployment create` takes as
--deployment-id, --target-condition, --priority, --labels, --layered and --content).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from mlops_pipeline.errors import (
    BackendError,
    ConflictError,
    DeploymentError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.images import default_tag
from mlops_pipeline.targets.base import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    ModelRef,
    Target,
)
from mlops_pipeline.targets.iotedge_hub import Hub, import_sdk, iotedge_settings
from mlops_pipeline.targets.iotedge_manifest import (
    DEPLOYMENT_LABEL,
    base_manifest,
    layered_manifest,
    module_spec,
    others_on_device,
    read_create_options,
    resolve_secrets,
)

logger = logging.getLogger(__name__)

HUB_NAME = re.compile(r"^[a-zA-Z0-9-]{3,50}$")
# IoT Hub device ids: up to 128 ASCII letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '
DEVICE_ID = re.compile(r"^[a-zA-Z0-9\-.+%_#*!(),:=@$']{1,128}$")
AGENT, EDGE_HUB = "$edgeAgent", "$edgeHub"
LABEL_DEPLOYMENT, LABEL_MODEL, LABEL_VERSION = "mlopsDeployment", "mlopsModel", "mlopsVersion"
# the hub caps `top` at its own limit (100 configurations on standard tiers): ask for all
MAX_CONFIGURATIONS = 1000
POLL_SECONDS = 1.0
AGENT_QUERY = "SELECT * FROM devices.modules WHERE moduleId = '$edgeAgent'"
# how each edgeAgent runtimeStatus reads as ours; worst first, for a fleet's summary
RUNTIME_STATUS = {
    "failed": DeploymentStatus.FAILED,
    "backoff": DeploymentStatus.UNHEALTHY,
    "unhealthy": DeploymentStatus.UNHEALTHY,
    "stopped": DeploymentStatus.STOPPED,
    "running": DeploymentStatus.READY,
}
SEVERITY = [
    DeploymentStatus.FAILED,
    DeploymentStatus.UNHEALTHY,
    DeploymentStatus.STOPPED,
    DeploymentStatus.UPDATING,
    DeploymentStatus.CREATING,
    DeploymentStatus.READY,
]


@dataclass(frozen=True)
class EdgeLocation:
    """A parsed `iotedge:` location: a hub and either one device or a fleet's condition."""

    hub: str
    device: str | None = None
    condition: str | None = None
    priority: int | None = None
    layered: bool = False

    @property
    def uri(self) -> str:
        """The canonical target URI (what the ledger records)."""
        if self.device is not None:
            return f"iotedge:/{self.hub}/{self.device}"
        layered = "&layered=true" if self.layered else ""
        return f"iotedge:/{self.hub}?target={self.condition}&priority={self.priority}{layered}"


def parse_location(target_uri: str, location: str) -> EdgeLocation:
    """Parse `/<hub>/<device-id>` or `/<hub>?target=<condition>&priority=<n>[&layered=true]`.

    Raises:
        InvalidInputError: naming the part of TARGET_URI that is wrong and the right form.
    """
    forms = "iotedge:/<hub>/<device-id> or iotedge:/<hub>?target=<condition>&priority=<n>"

    def bad(message: str, value: str) -> InvalidInputError:
        return InvalidInputError(message, hint=f"Use {forms}.", field="target", value=value)

    path, has_query, query = location.partition("?")
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not parts:
        raise bad(f"Target URI '{target_uri}' names no IoT hub.", target_uri)
    hub = parts[0]
    if not HUB_NAME.match(hub):
        raise bad(
            f"'{hub}' in '{target_uri}' is not an IoT hub name (3-50 letters, digits, -).", hub
        )
    if len(parts) > 2:
        raise bad(f"Target URI '{target_uri}' has more than a hub and a device.", target_uri)
    if len(parts) == 2:
        device = parts[1]
        if has_query:
            raise bad(f"Target URI '{target_uri}' names a device and a fleet query.", target_uri)
        if not DEVICE_ID.match(device):
            raise bad(f"'{device}' in '{target_uri}' is not an IoT Hub device id.", device)
        return EdgeLocation(hub=hub, device=device)
    if not has_query:
        raise bad(f"Target URI '{target_uri}' names neither a device nor a fleet.", target_uri)
    # keep '+' as is: target conditions may contain it, and nobody form-encodes them
    params = dict(parse_qsl(query.replace("+", "%2B"), keep_blank_values=True))
    unknown = sorted(set(params) - {"target", "priority", "layered"})
    if unknown:
        raise bad(f"Unknown parameter(s) {', '.join(unknown)} in '{target_uri}'.", target_uri)
    condition = params.get("target", "").strip()
    if not condition:
        raise bad(
            f"Target URI '{target_uri}' has no target condition, e.g. target=tags.site='x'.",
            target_uri,
        )
    priority_text = params.get("priority", "").strip()
    if not priority_text:
        raise bad(
            f"Target URI '{target_uri}' has no priority: the fleet URI needs &priority=N "
            "(a whole number >= 0; layered deployments above their base).",
            target_uri,
        )
    if not priority_text.isdigit() or int(priority_text) > 2**31 - 1:
        raise bad(
            f"priority='{priority_text}' in '{target_uri}' is not a whole number >= 0.",
            priority_text,
        )
    layered = params.get("layered", "false").lower()
    if layered not in {"true", "false"}:
        raise bad(f"layered='{layered}' in '{target_uri}' is not true or false.", layered)
    return EdgeLocation(
        hub=hub, condition=condition, priority=int(priority_text), layered=layered == "true"
    )


def configuration_id(name: str, model: ModelRef, manifest: dict[str, Any]) -> str:
    """`mlops-<name>-v<version>-<hash of the manifest>`, lowercase as the hub requires: unique
    per content, which a hub configuration cannot change."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:8]
    version = re.sub(r"[^a-z0-9]", "", model.version.lower())[:16]
    return f"mlops-{name.lower()}-v{version}-{digest}"[:128]


class IoTEdgeTarget(Target):
    """Deployments as IoT Edge modules applied through an IoT hub."""

    scheme = "iotedge"
    needs_image = True

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.edge = parse_location(target_uri, self.location)
        self.target_uri = self.edge.uri
        self._hub: Hub | None = None

    @property
    def hub(self) -> Hub:
        """The hub client; InvalidInputError without a matching connection string."""
        if self._hub is None:
            self._hub = Hub(self.edge.hub)
        return self._hub

    # --- Target interface -------------------------------------------------------------------

    def preflight(self, config: DeployConfig) -> None:
        """Before an image build: the options (exit 2), the SDK extra (exit 2), and a
        connection string for this hub from the environment or its Secret block (exit 2/3).

        The hub itself is not called: `create` reads the device's deployment first anyway.
        """
        # the options are checked as the manifest will use them (module name and version are
        # placeholders here: no option depends on them)
        module_spec("preflight", ModelRef("preflight", "1"), config, "preflight:1")
        import_sdk()
        _ = self.hub

    def render(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> str:
        """What `create` would apply; the registry password stays a reference.

        For one device: the manifest as `az iot edge set-modules --content` takes it
        (`{"modulesContent": ...}`), the device's complete deployment with only this module
        (the device's other modules are not read: rendering reaches no hub). For a fleet: the
        whole configuration `create` makes, as `az iot edge deployment create` takes its parts:
        `{"id", "targetCondition", "priority", "labels", "content": {"modulesContent": ...}}`,
        the content layered for a layered deployment. Without IMAGE, the tag `build-image`
        gives the model.
        """
        spec = module_spec(name, model, config, image or default_tag(model))
        manifest = layered_manifest(spec) if self.edge.layered else base_manifest(spec)
        if self.edge.device is not None:
            return json.dumps(manifest, indent=2)
        fleet = {
            "id": configuration_id(name, model, manifest),
            "targetCondition": self.edge.condition,
            "priority": self.edge.priority,
            "labels": _labels(name, model),
            "layered": self.edge.layered,
            "content": manifest,
        }
        return json.dumps(fleet, indent=2)

    def create(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Apply the module to the device, or create the fleet's configuration.

        Returns once the hub accepted it (status `creating` until edgeAgent reports), or with
        the option `wait_seconds`, once edgeAgent reports the module running.

        Raises:
            ConflictError: NAME already runs on this device or as a configuration.
            DeploymentError: with `wait_seconds`, the module did not run in time (removed).
            NotFoundError: the device is not an IoT Edge device of the hub.
            InvalidInputError: a bad option, no image, no connection string; a layered
                deployment whose priority is not above every base deployment's.
            AuthError, BackendError, BackendUnavailableError: the hub refused or is unreachable.
        """
        spec = module_spec(name, model, config, self._require_image(image))
        import_sdk()
        if self.edge.device is not None:
            agent, edge_hub = self._device_deployment()
            if name in (agent.get("modules") or {}):
                raise self._exists(name)
            self._apply(name, base_manifest(spec, others_on_device(agent, edge_hub, name)))
        else:
            if self._configurations(name):
                raise self._exists(name)
            manifest = layered_manifest(spec) if self.edge.layered else base_manifest(spec)
            if self.edge.layered:
                self._check_layered_priority()
            self._create_configuration(name, model, manifest)
        try:
            return self._wait(name, spec.wait_seconds)
        except BaseException:
            self.delete(name)  # nothing half-deployed
            raise

    def update(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Apply the new version's manifest (device), or replace the configuration (fleet).

        With `wait_seconds`, a module that does not run in time is rolled back: the device's
        previous deployment is applied again, or the new configuration deleted.

        Raises:
            NotFoundError: NAME is not deployed here.
            DeploymentError: with `wait_seconds`, the new version did not run in time.
            The errors of `create`.
        """
        spec = module_spec(name, model, config, self._require_image(image))
        import_sdk()
        if self.edge.device is not None:
            agent, edge_hub = self._device_deployment()
            if name not in (agent.get("modules") or {}):
                raise self._missing(name)
            previous = {
                AGENT: {"properties.desired": agent},
                EDGE_HUB: {"properties.desired": edge_hub},
            }
            module_twin = self._module_desired(name)
            if module_twin is not None:
                previous[name] = {"properties.desired": module_twin}
            self._apply(name, base_manifest(spec, others_on_device(agent, edge_hub, name)))
            try:
                return self._wait(name, spec.wait_seconds)
            except BaseException:
                logger.warning("Re-applying the previous deployment of device %s", self.edge.device)
                self._apply(name, {"modulesContent": previous})
                raise
        existing = self._configurations(name)
        if not existing:
            raise self._missing(name)
        manifest = layered_manifest(spec) if self.edge.layered else base_manifest(spec)
        new_id = configuration_id(name, model, manifest)
        if new_id not in {c.id for c in existing}:
            self._create_configuration(name, model, manifest)
            try:
                self._wait(name, spec.wait_seconds)
            except BaseException:
                self._delete_configuration(new_id)  # the old configuration still applies
                raise
        for old in existing:
            if old.id != new_id:
                self._delete_configuration(old.id)
        return self.get(name)

    def delete(self, name: str) -> None:
        """Apply the device's deployment without the module, or delete the configurations.

        Idempotent: an unknown device, module or configuration is already deleted.
        """
        import_sdk()
        if self.edge.device is not None:
            self.hub  # noqa: B018 - a missing credential fails here, never reads as a gone device
            try:
                agent, edge_hub = self._device_deployment()
            except NotFoundError:
                logger.info("Device %s is gone from the hub; nothing to delete", self.edge.device)
                return
            if name not in (agent.get("modules") or {}):
                return
            others = others_on_device(agent, edge_hub, name)
            agent["modules"] = others["modules"]
            edge_hub["routes"] = others["routes"]
            self._apply(
                name,
                {
                    "modulesContent": {
                        AGENT: {"properties.desired": agent},
                        EDGE_HUB: {"properties.desired": edge_hub},
                    }
                },
            )
            return
        for configuration in self._configurations(name):
            self._delete_configuration(configuration.id)

    def list(self) -> list[Deployment]:
        """The mlops modules on the device, or the mlops configurations of this fleet target."""
        import_sdk()
        if self.edge.device is not None:
            twin = self._agent_twin()
            if twin is None:
                return []
            names = [
                name
                for name, module in (_desired(twin).get("modules") or {}).items()
                if DEPLOYMENT_LABEL
                in read_create_options(module.get("settings") or {}).get("Labels", {})
            ]
            return [self._device_deployment_of(name, twin) for name in names]
        names = sorted({c.labels[LABEL_DEPLOYMENT] for c in self._mlops_configurations()})
        return [self.get(name) for name in names]

    def get(self, name: str) -> Deployment:
        """NAME as the device's `$edgeAgent` twin, or the fleet's configuration, describes it,
        with the status edgeAgent reports.

        Raises:
            NotFoundError: NAME is not deployed here (or the device is unknown).
        """
        import_sdk()
        if self.edge.device is not None:
            twin = self._agent_twin()
            if twin is None or name not in (_desired(twin).get("modules") or {}):
                raise self._missing(name)
            return self._device_deployment_of(name, twin)
        configurations = self._configurations(name)
        if not configurations:
            raise self._missing(name)
        newest = max(configurations, key=lambda c: c.created_time_utc or c.id)
        module = _module_in_content(newest.content.modules_content or {}, name)
        statuses = [
            _device_status(reported, module) for reported in self._reported_modules(name).values()
        ]
        status = min(statuses, key=SEVERITY.index) if statuses else DeploymentStatus.CREATING
        return _deployment(name, self.target_uri, module, status, newest.created_time_utc)

    def logs(self, name: str, tail: int = 100) -> str:
        """The module's log tail, from edgeAgent's GetModuleLogs direct method (device only).

        Raises:
            InvalidInputError: a fleet target (ask one device).
            NotFoundError: the device is offline or unknown, or NAME is not deployed there.
        """
        if self.edge.device is None:
            raise InvalidInputError(
                "Logs come from one device; a fleet target has many.",
                hint=f"Read them with --target iotedge:/{self.edge.hub}/<device-id>.",
                field="target",
            )
        self.get(name)
        sdk = import_sdk()
        request = sdk.models.CloudToDeviceMethod(
            method_name="GetModuleLogs",
            payload={
                "schemaVersion": "1.0",
                "items": [{"id": name, "filter": {"tail": tail}}],
                "encoding": "none",
                "contentType": "text",
            },
            response_timeout_in_seconds=30,
        )
        result = self.hub.call(
            f"read the logs of module '{name}' on device '{self.edge.device}' (is it online?)",
            self.hub.registry.invoke_device_module_method,
            self.edge.device,
            AGENT,
            request,
        )
        items = result.payload if isinstance(result.payload, list) else []
        return "".join(str(item.get("payload", "")) for item in items if item.get("id") == name)

    def predict(
        self, name: str, payload: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> Any:
        """Refused: the hub relays no HTTP, the module scores on the device."""
        port = self.get(name).config.get("port") or 8080
        raise InvalidInputError(
            f"Deployment '{name}' scores on the IoT Edge device, not through the hub.",
            hint=f"POST to http://<device>:{port}/invocations from the device (or its network "
            "with options host_ip=0.0.0.0).",
            field="target",
        )

    def health(self, name: str) -> dict[str, Any]:
        """The twins' view: ready when every reporting device runs the desired image."""
        deployment = self.get(name)
        result: dict[str, Any] = {
            "endpoint_url": None,
            "ready": deployment.status == DeploymentStatus.READY,
            "status": str(deployment.status),
        }
        if self.edge.device is None:
            result["devices"] = len(self._reported_modules(name))
        return result

    # --- the hub ----------------------------------------------------------------------------

    def _wait(self, name: str, seconds: int) -> Deployment:
        """NAME once edgeAgent reports it running its desired image (every reporting device of
        a fleet); at once when SECONDS is 0.

        Raises:
            DeploymentError: a device reports it failed, or it is not ready within SECONDS.
        """
        deployment = self.get(name)
        deadline = time.monotonic() + seconds
        while seconds and deployment.status != DeploymentStatus.READY:
            if deployment.status == DeploymentStatus.FAILED or time.monotonic() >= deadline:
                raise DeploymentError(
                    f"Module '{name}' on {self.target_uri} is {deployment.status} after "
                    f"{seconds} s of wait_seconds, not running.",
                    hint="The previous state was restored; on the device, `iotedge logs "
                    f"{name}` says why.",
                )
            time.sleep(POLL_SECONDS)
            deployment = self.get(name)
        return deployment

    def _module_desired(self, name: str) -> dict[str, Any] | None:
        """Module NAME's twin desired properties on the device; None before edgeAgent made it."""
        hub = self.hub  # outside the try: a missing credential is not a missing twin
        try:
            twin = hub.call(
                f"read the twin of module '{name}' on device '{self.edge.device}'",
                hub.registry.get_module_twin,
                self.edge.device,
                name,
            )
        except NotFoundError:
            return None
        return _desired(twin)

    def _agent_twin(self) -> Any | None:
        """The device's `$edgeAgent` module twin; None when the hub has no such device/module."""
        hub = self.hub  # outside the try: a missing credential is not a missing twin
        try:
            return hub.call(
                f"read the $edgeAgent twin of device '{self.edge.device}'",
                hub.registry.get_module_twin,
                self.edge.device,
                AGENT,
            )
        except NotFoundError:
            return None

    def _device_deployment(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The device's current `$edgeAgent` and `$edgeHub` desired properties (without twin
        metadata).

        Raises:
            NotFoundError: the device is not registered, or not as an IoT Edge device.
        """
        twin = self._agent_twin()
        if twin is None:
            raise NotFoundError(
                f"Device '{self.edge.device}' is not an IoT Edge device of hub '{self.edge.hub}'.",
                hint="Register it with `az iot hub device-identity create --edge-enabled "
                f"--device-id {self.edge.device} --hub-name {self.edge.hub}`, or fix the "
                "target URI.",
                field="target",
                value=self.edge.device,
            )
        edge_hub = self.hub.call(
            f"read the $edgeHub twin of device '{self.edge.device}'",
            self.hub.registry.get_module_twin,
            self.edge.device,
            EDGE_HUB,
        )
        return _desired(twin), _desired(edge_hub)

    def _apply(self, name: str, manifest: dict[str, Any]) -> None:
        sdk = import_sdk()
        content = resolve_secrets(manifest, _registry_password())["modulesContent"]
        logger.info(
            "Applying the deployment of device %s with module %s (hub %s)",
            self.edge.device,
            name,
            self.hub.host,
        )
        self.hub.call(
            f"apply the deployment to device '{self.edge.device}'",
            self.hub.configurations.apply_configuration_on_edge_device,
            self.edge.device,
            sdk.models.ConfigurationContent(modules_content=content),
        )

    def _mlops_configurations(self) -> list[Any]:
        """The hub's configurations of this fleet target made by mlops (by their labels)."""
        found = self.hub.call(
            "list configurations", self.hub.configurations.get_configurations, MAX_CONFIGURATIONS
        )
        return [
            c
            for c in found or []
            if (c.labels or {}).get(LABEL_DEPLOYMENT)
            and c.target_condition == self.edge.condition
            and c.priority == self.edge.priority
        ]

    def _configurations(self, name: str) -> list[Any]:
        return [c for c in self._mlops_configurations() if c.labels[LABEL_DEPLOYMENT] == name]

    def _create_configuration(self, name: str, model: ModelRef, manifest: dict[str, Any]) -> None:
        sdk = import_sdk()
        content = resolve_secrets(manifest, _registry_password())["modulesContent"]
        configuration = sdk.models.Configuration(
            id=configuration_id(name, model, manifest),
            schema_version="1.0",
            labels=_labels(name, model),
            content=sdk.models.ConfigurationContent(modules_content=content),
            target_condition=self.edge.condition,
            priority=self.edge.priority,
        )
        logger.info(
            "Creating configuration %s (priority %s) on hub %s",
            configuration.id,
            self.edge.priority,
            self.hub.host,
        )
        self.hub.call(
            f"create configuration '{configuration.id}'",
            self.hub.configurations.create_configuration,
            configuration,
        )

    def _delete_configuration(self, configuration_id: str) -> None:
        logger.info("Deleting configuration %s on hub %s", configuration_id, self.hub.host)
        with contextlib.suppress(NotFoundError):  # deleted meanwhile: what we wanted
            self.hub.call(
                f"delete configuration '{configuration_id}'",
                self.hub.configurations.delete_configuration,
                configuration_id,
                "*",
            )

    def _check_layered_priority(self) -> None:
        """A layered deployment only adds to devices whose base deployment it outranks."""
        found = self.hub.call(
            "list configurations", self.hub.configurations.get_configurations, MAX_CONFIGURATIONS
        )
        bases = [
            c
            for c in found or []
            if "properties.desired"
            in ((c.content and c.content.modules_content) or {}).get(AGENT, {})
        ]
        blocking = [c for c in bases if (c.priority or 0) >= (self.edge.priority or 0)]
        if blocking:
            highest = max(blocking, key=lambda c: c.priority or 0)
            raise InvalidInputError(
                f"Layered priority {self.edge.priority} is not above base deployment "
                f"'{highest.id}' (priority {highest.priority}).",
                hint=f"Use priority={int(highest.priority or 0) + 1} or more in the target URI.",
                field="target",
                value=self.edge.priority,
            )

    def _reported_modules(self, name: str) -> dict[str, dict[str, Any]]:
        """Per device id, what its edgeAgent reports of module NAME (devices that report it)."""
        registry = self.hub.registry
        spec = import_sdk().models.QuerySpecification(query=AGENT_QUERY)
        found: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            page = self.hub.call(
                "query the $edgeAgent twins", registry.query_iot_hub, spec, token, 1000
            )
            for twin in page.items or []:
                reported = ((twin.properties and twin.properties.reported) or {}).get("modules")
                if isinstance(reported, dict) and name in reported:
                    found[twin.device_id] = reported[name]
            token = page.continuation_token
            if not token:
                return found

    def _device_deployment_of(self, name: str, twin: Any) -> Deployment:
        module = _desired(twin)["modules"][name]
        reported = ((twin.properties.reported or {}).get("modules") or {}).get(name)
        status = _device_status(reported, module) if reported else DeploymentStatus.CREATING
        return _deployment(name, self.target_uri, module, status, None)

    # --- messages ---------------------------------------------------------------------------

    def _require_image(self, image: str | None) -> str:
        if not image:
            raise InvalidInputError(
                "The iotedge target needs an image.",
                hint="Build one with `mlops build-image MODEL_URI` (mlops deploy does it) and "
                "push it to a registry the devices can pull from.",
                field="image",
            )
        return image

    def _exists(self, name: str) -> ConflictError:
        return ConflictError(
            f"Deployment '{name}' already exists on {self.target_uri}.",
            hint=f"Update it with `mlops update {name}` or remove it with `mlops undeploy {name}`.",
            field="name",
            value=name,
        )

    def _missing(self, name: str) -> NotFoundError:
        return NotFoundError(
            f"Deployment '{name}' does not exist on {self.target_uri}.",
            hint="List deployments with `mlops deployments list`.",
            field="name",
            value=name,
        )


def _labels(name: str, model: ModelRef) -> dict[str, str]:
    """The labels of a fleet deployment's configuration (how `list` finds it)."""
    return {LABEL_DEPLOYMENT: name, LABEL_MODEL: model.name, LABEL_VERSION: model.version}


def _registry_password() -> str | None:
    secret = iotedge_settings().registry_password
    return secret.get_secret_value() if secret else None


def _desired(twin: Any) -> dict[str, Any]:
    """A twin's desired properties without the hub's `$metadata`/`$version` keys."""
    desired = (twin.properties and twin.properties.desired) or {}
    return {k: v for k, v in desired.items() if not k.startswith("$")}


def _module_in_content(modules_content: dict[str, Any], name: str) -> dict[str, Any]:
    """Module NAME's `$edgeAgent` entry in a base or layered configuration's content."""
    agent = modules_content.get(AGENT) or {}
    if "properties.desired" in agent:
        return agent["properties.desired"].get("modules", {}).get(name, {})
    return agent.get(f"properties.desired.modules.{name}", {})


def _device_status(reported: dict[str, Any] | None, desired: dict[str, Any]) -> DeploymentStatus:
    """A device's status of the module: its runtimeStatus, `updating` while it still runs
    another image than the desired one."""
    if not reported:
        return DeploymentStatus.CREATING
    status = RUNTIME_STATUS.get(str(reported.get("runtimeStatus", "")).lower())
    if status is None:
        return DeploymentStatus.CREATING
    image = (reported.get("settings") or {}).get("image")
    wanted = (desired.get("settings") or {}).get("image")
    if status == DeploymentStatus.READY and image and wanted and image != wanted:
        return DeploymentStatus.UPDATING
    return status


def _deployment(
    name: str, target_uri: str, module: dict[str, Any], status: DeploymentStatus, created: Any
) -> Deployment:
    """The deployment as the module's createOptions labels describe it."""
    settings = module.get("settings") or {}
    labels = read_create_options(settings).get("Labels") or {}
    try:
        config = json.loads(labels.get("mlops.config", "{}"))
    except json.JSONDecodeError:
        config = {}
    model_name, version = labels.get("mlops.model.name", ""), labels.get("mlops.model.version", "")
    if not model_name:
        raise BackendError(
            f"Module '{name}' on {target_uri} carries no mlops labels in its createOptions.",
            hint="It was not deployed by mlops; leave it alone or remove it with az iot edge.",
        )
    extra = {"created_at": created, "updated_at": created} if created else {}
    return Deployment(
        name=name,
        target_uri=target_uri,
        model_name=model_name,
        model_version=version,
        model_uri=f"models:/{model_name}/{version}",
        image=settings.get("image"),
        endpoint_url=None,
        status=status,
        capture_uri=config.get("capture_uri"),
        config=config,
        **extra,
    )


__all__ = ["EdgeLocation", "IoTEdgeTarget", "parse_location"]
