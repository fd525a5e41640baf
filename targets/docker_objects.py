"""The engine objects of `docker:` deployments: network, proxy and model containers, labels.

`DockerObjects` creates, lists and removes the objects of one deployment NAME on
one engine, and reads the deployment's state back from their labels (`mlops.deployment=NAME`,
`mlops.role`, the model, image, port and config labels written here). The `docker:` target
(targets/docker.py) drives the lifecycle with it.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import requests
from docker.models.containers import Container
from mlops_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.images import IMAGE_MODEL_DIR, IMAGE_PORT, IMAGE_USER
from mlops_pipeline.serving.settings import PROXY_ENV_PREFIX, ProxySettings, env_name
from mlops_pipeline.targets.base import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    ModelRef,
    serving_env,
)

DEPLOYMENT_LABEL = "mlops.deployment"
ROLE_LABEL = "mlops.role"
# a model container started as a live challenger (canary or shadow) beside the active one
CHALLENGER_LABEL = "mlops.challenger"
CAPTURE_MOUNT = "/var/lib/mlops/capture"
SECRETS_DIR = "/run/mlops"
API_KEY_PATH = f"{SECRETS_DIR}/api-keys"
PROXY_STATE_FILE = "/tmp/mlops-proxy-upstream.json"
# the proxy container's settings, by field: {"token": "MLOPS_SERVING_PROXY_TOKEN", ...}
PROXY_ENV = {field: env_name(field, PROXY_ENV_PREFIX) for field in ProxySettings.model_fields}


def _is_local_path(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


class DockerObjects:
    """The labelled networks and containers of deployments on one engine client."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    # --- networks ---------------------------------------------------------------------------

    def create_network(self, name: str) -> str:
        """Create the deployment's bridge network `mlops-NAME`; return its name."""
        network = self.call(
            "create the network",
            self.client.networks.create,
            f"mlops-{name}",
            driver="bridge",
            labels={DEPLOYMENT_LABEL: name},
        )
        return network.name

    def remove_networks(self, name: str) -> None:
        for network in self.call(
            "list networks",
            self.client.networks.list,
            filters={"label": f"{DEPLOYMENT_LABEL}={name}"},
        ):
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                raise BackendError(
                    f"Removing network {network.name} failed: {exc.explanation or exc}",
                    hint="Run the undeploy again once the containers are gone.",
                ) from exc

    # --- containers -------------------------------------------------------------------------

    def start_model(
        self,
        name: str,
        model: ModelRef,
        config: DeployConfig,
        image: str,
        network: str,
        *,
        labels: dict[str, str] | None = None,
    ) -> Container:
        """Create and start one model container (not yet receiving traffic); `labels` are
        added to the deployment's own (e.g. CHALLENGER_LABEL)."""
        user = self._image_user(image)
        env = serving_env(
            IMAGE_MODEL_DIR, model, config, host="0.0.0.0", port=IMAGE_PORT, image=image
        )
        if config.api_key_file:
            env[env_name("api_key_file")] = API_KEY_PATH
        volumes: dict[str, dict[str, str]] = {}
        if config.capture_uri and _is_local_path(config.capture_uri):
            capture = Path(config.capture_uri.removeprefix("file://")).expanduser().resolve()
            capture.mkdir(parents=True, exist_ok=True)
            user = self._writable_by(capture, user)
            volumes[str(capture)] = {"bind": CAPTURE_MOUNT, "mode": "rw"}
            env[env_name("capture_uri")] = CAPTURE_MOUNT
        container = self.call(
            f"create the container for {model.uri}",
            self.client.containers.create,
            image,
            name=f"mlops-{name}-v{model.version}-{uuid.uuid4().hex[:6]}",
            environment=env,
            labels={
                DEPLOYMENT_LABEL: name,
                ROLE_LABEL: "model",
                "mlops.model.name": model.name,
                "mlops.model.version": model.version,
                "mlops.image": image,
                "mlops.config": config.model_dump_json(),
                **(labels or {}),
            },
            network=network,
            user=user,
            volumes=volumes,
        )
        try:
            if config.api_key_file:
                self._put_api_keys(container, Path(config.api_key_file), user)
            self.call("start the model container", container.start)
        except BaseException:
            self.remove(container, timeout=0)
            raise
        return container

    def start_proxy(self, name: str, image: str, port: int, upstream: str, network: str) -> None:
        """Run the proxy that owns the stable port; its admin token lives only in its env.

        Its health check is liveness (/health/live, answered by the proxy itself): whether the
        model can score is the model container's own health check (/ping).
        """
        live = (
            "import urllib.request; "
            f"urllib.request.urlopen('http://127.0.0.1:{IMAGE_PORT}/health/live', timeout=2)"
        )
        try:
            self.client.containers.run(
                image,
                command=["python", "-m", "mlops_pipeline.serving.proxy"],
                name=f"mlops-{name}-proxy",
                detach=True,
                environment={
                    PROXY_ENV["host"]: "0.0.0.0",
                    PROXY_ENV["port"]: str(IMAGE_PORT),
                    PROXY_ENV["upstream"]: upstream,
                    PROXY_ENV["token"]: secrets.token_urlsafe(32),
                    # in the container's own layer: a restarted proxy keeps the switched version
                    PROXY_ENV["state_file"]: PROXY_STATE_FILE,
                },
                labels={DEPLOYMENT_LABEL: name, ROLE_LABEL: "proxy", "mlops.port": str(port)},
                network=network,
                ports={f"{IMAGE_PORT}/tcp": ("127.0.0.1", port)},
                restart_policy={"Name": "unless-stopped"},
                healthcheck={
                    "test": ["CMD", "python", "-c", live],
                    "interval": 10_000_000_000,
                    "timeout": 3_000_000_000,
                    "retries": 3,
                },
            )
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if "already allocated" in text or "address already in use" in text:
                raise ConflictError(
                    f"Port {port} on 127.0.0.1 is already in use.",
                    hint="Choose another port, or leave it unset to get a free one.",
                    field="port",
                    value=port,
                ) from exc
            raise BackendError(f"Starting the proxy for '{name}' failed: {text}") from exc

    def remove(self, container: Container, timeout: int) -> None:
        """Stop gracefully (SIGTERM lets the service flush its capture), then remove."""
        try:
            if timeout:
                container.stop(timeout=timeout)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise BackendError(
                    f"Removing container {container.name} failed: {exc.explanation or exc}"
                ) from exc

    # --- state read back from Docker --------------------------------------------------------

    def containers(self, name: str) -> list[Container]:
        return self.call(
            "list containers",
            self.client.containers.list,
            all=True,
            filters={"label": f"{DEPLOYMENT_LABEL}={name}"},
        )

    def models(self, name: str) -> list[Container]:
        return [c for c in self.containers(name) if c.labels.get(ROLE_LABEL) == "model"]

    def proxy(self, name: str) -> Container | None:
        proxies = [c for c in self.containers(name) if c.labels.get(ROLE_LABEL) == "proxy"]
        return proxies[0] if proxies else None

    def deployment_names(self) -> list[str]:
        """Names of the deployments that have a proxy container (running or not)."""
        proxies = self.call(
            "list containers",
            self.client.containers.list,
            all=True,
            filters={"label": f"{ROLE_LABEL}=proxy"},
        )
        return [proxy.labels[DEPLOYMENT_LABEL] for proxy in proxies]

    def active(self, name: str, proxy: Container | None) -> Container | None:
        """The model container the proxy routes to (its state file holds the live upstream)."""
        models = self.models(name)
        if proxy is None or not models:
            return None
        current = container_env(proxy).get(PROXY_ENV["upstream"], "")
        if proxy.status == "running":
            try:
                token = container_env(proxy)[PROXY_ENV["token"]]
                response = httpx.get(
                    f"http://127.0.0.1:{proxy.labels['mlops.port']}/-/proxy/upstream",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5.0,
                )
                current = response.json().get("upstream") or current
            except (httpx.HTTPError, ValueError):
                pass
        for container in models:
            if upstream(container) == current:
                return container
        return max(models, key=_created)

    # --- helpers ----------------------------------------------------------------------------

    def _image_user(self, image: str) -> str:
        return self.client.images.get(image).attrs["Config"].get("User") or IMAGE_USER

    @staticmethod
    def _writable_by(path: Path, user: str) -> str:
        """Make a bind-mounted dir writable by the container: hand it to the image's user when
        we are root, else run the container as our own (non-root) user."""
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        uid, _, gid = user.partition(":")
        os.chown(path, int(uid), int(gid or uid))
        return user

    def _put_api_keys(self, container: Container, key_file: Path, user: str) -> None:
        """Copy the key file into the container, readable only by its user; never into an image
        or an env var."""
        try:
            data = key_file.read_bytes()
        except OSError as exc:
            raise InvalidInputError(
                f"API key file '{key_file}' cannot be read: {exc.strerror}.",
                field="api_key_file",
                value=str(key_file),
            ) from exc
        uid, _, gid = user.partition(":")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            folder = tarfile.TarInfo(SECRETS_DIR.rsplit("/", 1)[1])
            folder.type, folder.mode = tarfile.DIRTYPE, 0o500
            keys = tarfile.TarInfo(f"{folder.name}/api-keys")
            keys.size, keys.mode = len(data), 0o400
            for info in (folder, keys):
                info.uid, info.gid = int(uid), int(gid or uid)
            tar.addfile(folder)
            tar.addfile(keys, io.BytesIO(data))
        self.call(
            "copy the API key file", container.put_archive, SECRETS_DIR.rsplit("/", 1)[0],
            buffer.getvalue(),
        )  # fmt: skip

    def call(self, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one SDK call, turning engine errors into our error types."""
        try:
            return call(*args, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise NotFoundError(f"Could not {action}: {exc.explanation or exc}") from exc
        except docker.errors.APIError as exc:
            raise BackendError(f"Docker could not {action}: {exc.explanation or exc}") from exc
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise BackendUnavailableError(
                f"Docker engine stopped answering while trying to {action}: {exc}",
                hint="Check that dockerd is running.",
            ) from exc


def upstream(container: Container) -> str:
    """The URL the proxy reaches a model container at, on the deployment's network."""
    return f"http://{container.name}:{IMAGE_PORT}"


def status(proxy: Container, active: Container) -> DeploymentStatus:
    if active.status in {"exited", "dead"}:
        return DeploymentStatus.FAILED
    if proxy.status != "running" or active.status != "running":
        return DeploymentStatus.STOPPED
    health = active.attrs["State"].get("Health", {}).get("Status")
    return DeploymentStatus.UNHEALTHY if health == "unhealthy" else DeploymentStatus.READY


def deployment(name: str, target_uri: str, proxy: Container, active: Container) -> Deployment:
    """The deployment as its proxy's and active model container's labels describe it."""
    labels = active.labels
    config = json.loads(labels.get("mlops.config", "{}"))
    return Deployment(
        name=name,
        target_uri=target_uri,
        model_name=labels["mlops.model.name"],
        model_version=labels["mlops.model.version"],
        model_uri=f"models:/{labels['mlops.model.name']}/{labels['mlops.model.version']}",
        image=labels.get("mlops.image"),
        endpoint_url=f"http://127.0.0.1:{proxy.labels['mlops.port']}",
        status=status(proxy, active),
        capture_uri=config.get("capture_uri"),
        created_at=_created(proxy),
        updated_at=_created(active),
        config=config,
    )


def container_env(container: Container) -> dict[str, str]:
    """The container's environment variables, by name."""
    return dict(item.split("=", 1) for item in container.attrs["Config"].get("Env") or [])


def _created(container: Container) -> datetime:
    created = container.attrs["Created"]
    # Docker reports nanoseconds; datetime takes microseconds
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", created).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).astimezone(UTC)
