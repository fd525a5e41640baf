"""IoT Edge deployment manifests (schema 1.1) for one model module: pure data, no SDK, no I/O.

A manifest is the `modulesContent` that `az iot edge set-modules --content` and the hub's
`applyConfigurationContent` / configurations take:

* `$edgeAgent`: the docker runtime (registry credentials by reference), the system modules
  `edgeAgent` and `edgeHub`, and the model module: image, `createOptions` as a JSON *string*
  (Docker create options: port binding, env, the capture volume, labels), restart policy, status;
* `$edgeHub`: the route of the module's `captures` output to `$upstream`, and the
  store-and-forward time to live;
* the model module's twin: desired properties with the model's name, version, URI and capture
  settings.

A base manifest carries all of it; a layered one (fleet deployments on top of a base deployment)
carries only the module, its route and its twin, as `properties.desired.<path>` keys.

The module reads its settings from the env in `createOptions` (the scoring service knows no
twins); the twin's desired properties carry the same values for fleet tooling and the hub's
queries.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.images import IMAGE_MODEL_DIR, IMAGE_PORT
from mlops_pipeline.serving.settings import env_name
from mlops_pipeline.targets.base import DeployConfig, ModelRef, serving_env

SCHEMA_VERSION = "1.1"
CAPTURE_MOUNT = "/var/lib/mlops/capture"
API_KEY_PATH = "/run/mlops/api-keys"
# IoT Edge splits createOptions longer than this into createOptions01..07 (edgeAgent rejoins them)
CREATE_OPTIONS_CHUNK = 512
CREATE_OPTIONS_MAX_CHUNKS = 8
CAPTURE_OUTPUT = "captures"
#: the env var whose value replaces the registry password reference when a manifest is applied
REGISTRY_PASSWORD_REFERENCE = "$MLOPS_IOTEDGE_REGISTRY_PASSWORD"
MODULE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DEPLOYMENT_LABEL = "mlops.deployment"

#: DeployConfig.options the iotedge target reads, with their defaults
OPTION_DEFAULTS: dict[str, str] = {
    "edge_version": "1.5",
    "host_ip": "127.0.0.1",
    "restart_policy": "always",
    "status": "running",
    "ttl_seconds": "7200",
    "capture_dir": "/var/lib/mlops/capture/{name}",
    "registry": "",
    "registry_username": "",
    "wait_seconds": "0",
}
RESTART_POLICIES = ("never", "on-failure", "on-unhealthy", "always")
STATUSES = ("running", "stopped")
#: edge runtime versions whose system modules (azureiotedge-agent/-hub) take schema 1.1 manifests
#: (the azure-iot-cli-extension's deployment schemas); a patch such as 1.5.3 pins that release
EDGE_VERSIONS = ("1.4", "1.5")
EDGE_VERSION = re.compile(r"^(?P<minor>\d+\.\d+)(\.\d+)?$")
# a registry as an image reference starts with it: host[:port][/path], no scheme
REGISTRY = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]{1,5})?(/[a-z0-9._-]+)*$")
REGISTRY_USERNAME = re.compile(r"^[^\s]{1,256}$")


@dataclass(frozen=True)
class ModuleSpec:
    """What one model module is: resolved from a deployment's name, model, config and image.

    Build it with `module_spec`, which validates the options.
    """

    name: str
    model: ModelRef
    config: DeployConfig
    image: str
    host_ip: str
    host_port: int
    restart_policy: str
    status: str
    ttl_seconds: int
    capture_dir: str | None
    edge_version: str
    registry: str | None
    registry_username: str | None
    wait_seconds: int = 0
    env: dict[str, str] = field(default_factory=dict)


def option(config: DeployConfig, key: str) -> str:
    """The target option KEY of CONFIG, or its default."""
    return config.options.get(key, OPTION_DEFAULTS[key])


def module_spec(name: str, model: ModelRef, config: DeployConfig, image: str) -> ModuleSpec:
    """Validate the deployment's options and resolve the module it deploys.

    Args:
        name: the deployment name; also the module's name on the device (a DNS label).
        model: the resolved model version.
        config: the deployment settings; `options` may set the keys of `OPTION_DEFAULTS`.
        image: the model image `build-image` made, e.g. `mlops/iris:3`; with the option
            `registry` it is referenced as `<registry>/<image>`.

    Raises:
        InvalidInputError: an unknown option or an option value the manifest cannot carry.
    """
    unknown = sorted(set(config.options) - set(OPTION_DEFAULTS))
    if unknown:
        raise InvalidInputError(
            f"Unknown iotedge option(s) {', '.join(unknown)}.",
            hint=f"Known options: {', '.join(sorted(OPTION_DEFAULTS))}.",
            field="options",
            value=unknown,
        )
    if not MODULE_NAME.match(name):
        raise InvalidInputError(
            f"Deployment name '{name}' cannot name an IoT Edge module.",
            hint="Use letters, digits, '-' or '_' (at most 64).",
            field="name",
            value=name,
        )
    restart_policy, status = option(config, "restart_policy"), option(config, "status")
    for key, value, allowed in (
        ("restart_policy", restart_policy, RESTART_POLICIES),
        ("status", status, STATUSES),
    ):
        if value not in allowed:
            raise _bad_option(
                key,
                value,
                f"an IoT Edge {key} ({', '.join(allowed)})",
                " or ".join(f"{key}={a}" for a in allowed),
            )
    ttl = _int_option(config, "ttl_seconds", 0, 4294967295)
    wait_seconds = _int_option(config, "wait_seconds", 0, 86400)
    host_ip = _host_ip_option(config)
    edge_version = _edge_version_option(config)
    device_capture_dir = _capture_dir_option(config, name)
    registry, registry_username = _registry_options(config)
    if registry:
        image = f"{registry}/{image}"
    capture_dir = None
    if config.capture_uri and "://" not in config.capture_uri:
        # a local capture dir means a folder on the device, mounted into the module: that
        # folder (not the path given, which names none on the device) is what gets recorded
        capture_dir = device_capture_dir
        config = config.model_copy(update={"capture_uri": capture_dir})
    env = serving_env(IMAGE_MODEL_DIR, model, config, host="0.0.0.0", port=IMAGE_PORT, image=image)
    if capture_dir:
        env[env_name("capture_uri")] = CAPTURE_MOUNT
    if config.api_key_file:
        env[env_name("api_key_file")] = API_KEY_PATH
    return ModuleSpec(
        name=name,
        model=model,
        config=config,
        image=image,
        host_ip=host_ip,
        host_port=config.port or IMAGE_PORT,
        restart_policy=restart_policy,
        status=status,
        ttl_seconds=ttl,
        capture_dir=capture_dir,
        edge_version=edge_version,
        registry=registry,
        registry_username=registry_username,
        wait_seconds=wait_seconds,
        env=env,
    )


def create_options(spec: ModuleSpec) -> dict[str, Any]:
    """Docker create options of the model module (what edgeAgent passes to the engine).

    The scoring service listens on IMAGE_PORT in the container; the host port is bound on
    `host_ip` of the device. Labels let `get` read the deployment back from the manifest.
    """
    container_port = f"{IMAGE_PORT}/tcp"
    binds = []
    if spec.capture_dir:
        binds.append(f"{spec.capture_dir}:{CAPTURE_MOUNT}")
    if spec.config.api_key_file:
        binds.append(f"{spec.config.api_key_file}:{API_KEY_PATH}:ro")
    host_config: dict[str, Any] = {
        "PortBindings": {
            container_port: [{"HostIp": spec.host_ip, "HostPort": str(spec.host_port)}]
        }
    }
    if binds:
        host_config["Binds"] = binds
    return {
        "Env": [f"{key}={value}" for key, value in sorted(spec.env.items())],
        "ExposedPorts": {container_port: {}},
        "HostConfig": host_config,
        "Labels": {
            DEPLOYMENT_LABEL: spec.name,
            "mlops.model.name": spec.model.name,
            "mlops.model.version": spec.model.version,
            "mlops.config": spec.config.model_dump_json(exclude_defaults=True),
        },
    }


def module_settings(spec: ModuleSpec) -> dict[str, Any]:
    """`settings` of the module: the image and createOptions as a JSON string, split in chunks
    of 512 characters (`createOptions`, `createOptions01`, ...) as IoT Edge requires.

    Raises:
        InvalidInputError: the options exceed 8 chunks (4096 characters).
    """
    text = json.dumps(create_options(spec), separators=(",", ":"), sort_keys=True)
    chunks = [text[i : i + CREATE_OPTIONS_CHUNK] for i in range(0, len(text), CREATE_OPTIONS_CHUNK)]
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        raise InvalidInputError(
            f"The createOptions of module '{spec.name}' are {len(text)} characters; IoT Edge "
            f"takes at most {CREATE_OPTIONS_CHUNK * CREATE_OPTIONS_MAX_CHUNKS}.",
            hint="Shorten the capture_dir, api_key_file or capture_uri paths.",
            field="options",
        )
    settings = {"image": spec.image}
    for index, chunk in enumerate(chunks):
        settings["createOptions" if index == 0 else f"createOptions{index:02d}"] = chunk
    return settings


def read_create_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The Docker create options of a module's `settings`, chunks joined; {} when unreadable."""
    text = settings.get("createOptions", "")
    for index in range(1, CREATE_OPTIONS_MAX_CHUNKS):
        text += settings.get(f"createOptions{index:02d}", "")
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def module_definition(spec: ModuleSpec) -> dict[str, Any]:
    """The model module's entry under `$edgeAgent` `modules`."""
    return {
        "version": spec.model.version,
        "type": "docker",
        "status": spec.status,
        "restartPolicy": spec.restart_policy,
        "settings": module_settings(spec),
    }


def runtime(spec: ModuleSpec) -> dict[str, Any]:
    """The docker runtime; the registry password only as a reference."""
    settings: dict[str, Any] = {"minDockerVersion": "v1.25", "loggingOptions": ""}
    if spec.registry and spec.registry_username:
        settings["registryCredentials"] = {
            _credential_name(spec.registry): {
                "username": spec.registry_username,
                "password": REGISTRY_PASSWORD_REFERENCE,
                "address": spec.registry,
            }
        }
    return {"type": "docker", "settings": settings}


def system_modules(edge_version: str) -> dict[str, Any]:
    """The edgeAgent and edgeHub modules every base deployment names."""
    hub_ports = {p: [{"HostPort": p.split("/")[0]}] for p in ("5671/tcp", "8883/tcp", "443/tcp")}
    return {
        "edgeAgent": {
            "type": "docker",
            "settings": {
                "image": f"mcr.microsoft.com/azureiotedge-agent:{edge_version}",
                "createOptions": "{}",
            },
        },
        "edgeHub": {
            "type": "docker",
            "status": "running",
            "restartPolicy": "always",
            "settings": {
                "image": f"mcr.microsoft.com/azureiotedge-hub:{edge_version}",
                "createOptions": json.dumps(
                    {"HostConfig": {"PortBindings": hub_ports}}, separators=(",", ":")
                ),
            },
        },
    }


def route_name(module: str) -> str:
    return f"{module.replace('-', '_')}_captures_to_upstream"


def route(module: str) -> str:
    return f"FROM /messages/modules/{module}/outputs/{CAPTURE_OUTPUT}/* INTO $upstream"


def twin_desired(spec: ModuleSpec) -> dict[str, Any]:
    """The model module twin's desired properties (the same values the module's env carries)."""
    config = spec.config
    return {
        "model": {
            "name": spec.model.name,
            "version": spec.model.version,
            "uri": spec.model.uri,
            "image": spec.image,
        },
        "capture": {
            "enabled": bool(config.capture_uri),
            "uri": CAPTURE_MOUNT if spec.capture_dir else config.capture_uri,
            "sampleRate": config.sample_rate,
            "output": CAPTURE_OUTPUT,
        },
        DEPLOYMENT_LABEL.replace(".", "_"): spec.name,
    }


def base_manifest(spec: ModuleSpec, device: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete deployment (`{"modulesContent": ...}`) with the model module.

    Args:
        spec: the model module.
        device: what the device's deployment holds besides this module (`others_on_device`):
            its other modules, routes and registry credentials are kept, and so are its system
            modules, runtime settings and store-and-forward time to live unless the options
            `edge_version` / `ttl_seconds` are set; None (render) for a device with nothing.
    """
    device = device or {}
    options = spec.config.options
    ours = runtime(spec)
    settings = copy.deepcopy((device.get("runtime") or {}).get("settings") or {})
    settings = {**ours["settings"], **settings}
    credentials = {
        **(settings.get("registryCredentials") or {}),
        **(ours["settings"].get("registryCredentials") or {}),
    }
    if credentials:
        settings["registryCredentials"] = credentials
    system = device.get("systemModules")
    if "edge_version" in options or not system:
        system = system_modules(spec.edge_version)
    ttl = device.get("timeToLiveSecs")
    if "ttl_seconds" in options or ttl is None:
        ttl = spec.ttl_seconds
    modules = {**copy.deepcopy(device.get("modules") or {}), spec.name: module_definition(spec)}
    routes = {**(device.get("routes") or {}), route_name(spec.name): route(spec.name)}
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": SCHEMA_VERSION,
                    "runtime": {"type": "docker", "settings": settings},
                    "systemModules": copy.deepcopy(system),
                    "modules": modules,
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": SCHEMA_VERSION,
                    "routes": routes,
                    "storeAndForwardConfiguration": {"timeToLiveSecs": ttl},
                }
            },
            spec.name: {"properties.desired": twin_desired(spec)},
        }
    }


def layered_manifest(spec: ModuleSpec) -> dict[str, Any]:
    """A layered deployment: only the module, its route and its twin, as path keys, so it adds
    to the base deployment of each device instead of replacing it."""
    content: dict[str, Any] = {
        "$edgeAgent": {f"properties.desired.modules.{spec.name}": module_definition(spec)},
        "$edgeHub": {f"properties.desired.routes.{route_name(spec.name)}": route(spec.name)},
        spec.name: {"properties.desired": twin_desired(spec)},
    }
    if spec.registry and spec.registry_username:
        name, credential = next(iter(runtime(spec)["settings"]["registryCredentials"].items()))
        key = f"properties.desired.runtime.settings.registryCredentials.{name}"
        content["$edgeAgent"][key] = credential
    return {"modulesContent": content}


def others_on_device(
    agent_desired: dict[str, Any], hub_desired: dict[str, Any], name: str
) -> dict[str, Any]:
    """What a device's current `$edgeAgent`/`$edgeHub` desired properties hold besides module
    NAME (the `device` argument of `base_manifest`): `modules`, `routes`, `runtime`,
    `systemModules` and `timeToLiveSecs` (None when unset)."""
    modules = {k: v for k, v in (agent_desired.get("modules") or {}).items() if k != name}
    routes = {k: v for k, v in (hub_desired.get("routes") or {}).items() if k != route_name(name)}
    store = hub_desired.get("storeAndForwardConfiguration") or {}
    return {
        "modules": modules,
        "routes": routes,
        "runtime": agent_desired.get("runtime") or {},
        "systemModules": agent_desired.get("systemModules") or {},
        "timeToLiveSecs": store.get("timeToLiveSecs"),
    }


def resolve_secrets(manifest: dict[str, Any], registry_password: str | None) -> dict[str, Any]:
    """A copy of MANIFEST with the registry password reference replaced by its value, for the
    hub only (render and logs keep the reference).

    Raises:
        InvalidInputError: the manifest references the password and none is configured.
    """
    text = json.dumps(manifest)
    reference = json.dumps(REGISTRY_PASSWORD_REFERENCE)
    if reference not in text:
        return manifest
    if not registry_password:
        raise InvalidInputError(
            "The manifest names registry credentials but no password is configured.",
            hint=f"Set {REGISTRY_PASSWORD_REFERENCE.lstrip('$')}, or drop the "
            "registry_username option for an anonymous registry.",
            field="registry_password",
        )
    return json.loads(text.replace(reference, json.dumps(registry_password)))


def _int_option(config: DeployConfig, key: str, low: int, high: int) -> int:
    value = option(config, key)
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise _bad_option(
            key, value, f"a whole number from {low} to {high}", f"e.g. {key}={OPTION_DEFAULTS[key]}"
        )
    return number


def _bad_option(key: str, value: str, what: str, write: str) -> InvalidInputError:
    return InvalidInputError(
        f"Option {key}='{value}' is not {what}.",
        hint=f"Write {write}.",
        field=f"options.{key}",
        value=value,
    )


def _host_ip_option(config: DeployConfig) -> str:
    """The device address the port binds: an IPv4 or IPv6 address, as Docker's HostIp takes it."""
    value = option(config, "host_ip")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise _bad_option(
            "host_ip",
            value,
            "an IPv4 or IPv6 address",
            "e.g. host_ip=127.0.0.1 (the device only), host_ip=0.0.0.0 (its network) or an "
            "address of the device such as host_ip=192.168.1.20 or host_ip=::1",
        ) from None


def _edge_version_option(config: DeployConfig) -> str:
    """The edge runtime version of the system modules: one the manifest's schema 1.1 fits."""
    value = option(config, "edge_version")
    match = EDGE_VERSION.match(value)
    if not match or match["minor"] not in EDGE_VERSIONS:
        raise _bad_option(
            "edge_version",
            value,
            f"an IoT Edge version the manifest supports ({', '.join(EDGE_VERSIONS)})",
            " or ".join(f"edge_version={v}" for v in EDGE_VERSIONS)
            + " (or a patch release of one, e.g. edge_version=1.5.3)",
        )
    return value


def _capture_dir_option(config: DeployConfig, name: str) -> str:
    """The capture folder on the device: an absolute path the bind can carry (no ':')."""
    value = option(config, "capture_dir")
    write = "an absolute path on the device, e.g. capture_dir=/var/lib/mlops/capture/{name}"
    try:
        path = value.format(name=name)
    except (KeyError, IndexError, ValueError):
        raise _bad_option(
            "capture_dir", value, "a path ({name} is the only placeholder)", write
        ) from None
    if not path.startswith("/") or ":" in path or "," in path or "//" in path:
        raise _bad_option("capture_dir", value, "an absolute device path without ':'", write)
    return path.rstrip("/") or "/"


def _registry_options(config: DeployConfig) -> tuple[str | None, str | None]:
    """`registry` (host[:port][/path], no scheme) and `registry_username` (needs a registry)."""
    registry = option(config, "registry").strip("/")
    if registry and not REGISTRY.match(registry):
        raise _bad_option(
            "registry",
            registry,
            "a registry as image names start with it (host[:port][/path], no https://)",
            "e.g. registry=myacr.azurecr.io or registry=registry.local:5000",
        )
    username = option(config, "registry_username")
    if username and not REGISTRY_USERNAME.match(username):
        raise _bad_option(
            "registry_username", username, "a user name", "it without spaces, e.g. puller"
        )
    if username and not registry:
        raise _bad_option(
            "registry_username",
            username,
            "usable without a registry",
            "registry=<host> with it, or drop registry_username",
        )
    return registry or None, username or None


def _credential_name(registry: str) -> str:
    """A registryCredentials key for REGISTRY (letters and digits only)."""
    return re.sub(r"[^a-zA-Z0-9]", "", registry.split(":")[0]) or "registry"
