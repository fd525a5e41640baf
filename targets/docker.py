"""The `docker:` target: model images run as containers behind a proxy container on one port.

Per deployment NAME the engine holds a user-defined network `mlops-NAME`, one proxy container
(`python -m mlops_pipeline.serving.proxy` from the model image) publishing the stable port on
127.0.0.1, and the model container(s). Updates start the new container, let the proxy switch
to it once its /ready answers (the proxy drains the old one), then stop the old one, so clients
of the stable port see no failed request. Every object carries the label
`mlops.deployment=NAME`, so the state is read back from Docker itself: no local state file to
lose or go stale.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import tarfile
import time
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
    DeploymentError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.images import IMAGE_MODEL_DIR, IMAGE_PORT, IMAGE_USER, docker_client
from mlops_pipeline.serving.contract import free_port, port_problem
from mlops_pipeline.serving.settings import PROXY_ENV_PREFIX, ProxySettings, env_name
from mlops_pipeline.targets.base import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    ModelRef,
    Target,
    serving_env,
)

logger = logging.getLogger(__name__)

DEPLOYMENT_LABEL = "mlops.deployment"
ROLE_LABEL = "mlops.role"
CAPTURE_MOUNT = "/var/lib/mlops/capture"
SECRETS_DIR = "/run/mlops"
API_KEY_PATH = f"{SECRETS_DIR}/api-keys"
PROXY_STATE_FILE = "/tmp/mlops-proxy-upstream.json"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
POLL_SECONDS = 0.25
# the proxy container's settings, by field: {"token": "MLOPS_SERVING_PROXY_TOKEN", ...}
PROXY_ENV = {field: env_name(field, PROXY_ENV_PREFIX) for field in ProxySettings.model_fields}


def _is_local_path(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


class DockerTarget(Target):
    """Deployments as containers on the local (or DOCKER_HOST) engine."""

    scheme = "docker"
    needs_image = True

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        if self.location.strip("/"):
            raise InvalidInputError(
                f"Target URI '{target_uri}' has a location; the docker target takes none.",
                hint="Use --target docker: and choose the engine with DOCKER_HOST.",
                field="target",
                value=target_uri,
            )
        self.target_uri = "docker:"
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # --- Target interface -------------------------------------------------------------------

    def create(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Start the network, the model container and the proxy; return once /ready answers."""
        if not NAME_PATTERN.match(name):
            raise InvalidInputError(
                f"Deployment name '{name}' cannot name Docker containers.",
                hint="Use letters, digits, '.', '_' or '-' (at most 63, starting alphanumeric).",
                field="name",
                value=name,
            )
        image = self._require_image(image)
        if self._containers(name):
            raise ConflictError(
                f"Deployment '{name}' already exists on docker:.",
                hint=f"Update it with `mlops update {name}` or remove it with "
                f"`mlops undeploy {name}`.",
                field="name",
                value=name,
            )
        if config.port is not None and port_problem(config.port) is not None:
            raise ConflictError(
                f"Port {config.port} on 127.0.0.1 is already in use.",
                hint="Choose another port, or leave it unset to get a free one.",
                field="port",
                value=config.port,
            )
        port = config.port or free_port()
        logger.info("Creating deployment %s (%s, %s) on port %d", name, model.uri, image, port)
        try:
            network = self._docker(
                "create the network",
                self.client.networks.create,
                f"mlops-{name}",
                driver="bridge",
                labels={DEPLOYMENT_LABEL: name},
            )
            container = self._start_model(name, model, config, image, network.name)
            self._start_proxy(name, image, port, self._upstream(container), network.name)
            self._wait_ready(port, container, config.ready_timeout)
        except BaseException:
            self.delete(name)
            raise
        return self.get(name)

    def update(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Start `model` next to the running version, switch the proxy to it, stop the old one."""
        image = self._require_image(image)
        proxy = self._proxy(name)
        if proxy is None:
            raise NotFoundError(
                f"Deployment '{name}' does not exist on docker:.",
                hint=f"Create it with `mlops deploy MODEL_URI --target docker: --name {name}`.",
                field="name",
                value=name,
            )
        previous = [c for c in self._containers(name) if c.labels.get(ROLE_LABEL) == "model"]
        logger.info("Updating deployment %s to %s (%s)", name, model.uri, image)
        container = self._start_model(name, model, config, image, f"mlops-{name}")
        try:
            self._switch(name, proxy, container, config)
        except BaseException:
            self._remove(container, timeout=0)
            raise
        for old in previous:
            self._remove(old, timeout=int(config.drain_timeout))
        return self.get(name)

    def delete(self, name: str) -> None:
        """Stop the proxy first (no new requests), then the model containers, then the network."""
        containers = sorted(
            self._containers(name), key=lambda c: c.labels.get(ROLE_LABEL) != "proxy"
        )
        for container in containers:
            self._remove(container, timeout=10)
        for network in self._docker(
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

    def list(self) -> list[Deployment]:
        containers = self._docker(
            "list containers",
            self.client.containers.list,
            all=True,
            filters={"label": f"{ROLE_LABEL}=proxy"},
        )
        found = []
        for proxy in containers:
            try:
                found.append(self.get(proxy.labels[DEPLOYMENT_LABEL]))
            except NotFoundError:  # removed, or half-removed, while we listed
                continue
        return found

    def get(self, name: str) -> Deployment:
        proxy = self._proxy(name)
        active = self._active(name, proxy)
        if proxy is None or active is None:
            raise NotFoundError(
                f"Deployment '{name}' does not exist on docker:.",
                hint="List deployments with `mlops deployments list`.",
                field="name",
                value=name,
            )
        labels = active.labels
        config = json.loads(labels.get("mlops.config", "{}"))
        return Deployment(
            name=name,
            target_uri=self.target_uri,
            model_name=labels["mlops.model.name"],
            model_version=labels["mlops.model.version"],
            model_uri=f"models:/{labels['mlops.model.name']}/{labels['mlops.model.version']}",
            image=labels.get("mlops.image"),
            endpoint_url=f"http://127.0.0.1:{proxy.labels['mlops.port']}",
            status=self._status(proxy, active),
            capture_uri=config.get("capture_uri"),
            created_at=_created(proxy),
            updated_at=_created(active),
            config=config,
        )

    def logs(self, name: str, tail: int = 100) -> str:
        active = self._active(name, self._proxy(name))
        if active is None:
            raise NotFoundError(f"Deployment '{name}' does not exist on docker:.", field="name")
        return active.logs(tail=tail).decode(errors="replace")

    # --- containers -------------------------------------------------------------------------

    def _start_model(
        self, name: str, model: ModelRef, config: DeployConfig, image: str, network: str
    ) -> Container:
        """Create and start one model container (not yet receiving traffic)."""
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
        container = self._docker(
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
            },
            network=network,
            user=user,
            volumes=volumes,
        )
        try:
            if config.api_key_file:
                self._put_api_keys(container, Path(config.api_key_file), user)
            self._docker("start the model container", container.start)
        except BaseException:
            self._remove(container, timeout=0)
            raise
        return container

    def _start_proxy(self, name: str, image: str, port: int, upstream: str, network: str) -> None:
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

    def _wait_ready(self, port: int, container: Container, timeout: float) -> None:
        """Block until /ready answers 200 through the stable port, or the container dies."""
        url = f"http://127.0.0.1:{port}/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running(container)
            try:
                if httpx.get(url, timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(POLL_SECONDS)
        raise self._not_ready(container, timeout)

    def _switch(
        self, name: str, proxy: Container, container: Container, config: DeployConfig
    ) -> None:
        """Ask the proxy to move traffic to `container` as soon as its /ready answers."""
        token = _env(proxy)[PROXY_ENV["token"]]
        url = f"http://127.0.0.1:{proxy.labels['mlops.port']}/-/proxy/upstream"
        body = {
            "upstream": self._upstream(container),
            "drain_timeout": config.drain_timeout,
            "check_ready": True,
        }
        deadline = time.monotonic() + config.ready_timeout
        while time.monotonic() < deadline:
            self._check_running(container)
            try:
                response = httpx.put(
                    url,
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=config.drain_timeout + 10.0,
                )
            except httpx.HTTPError as exc:
                raise DeploymentError(
                    f"The proxy of '{name}' did not answer the switch: {exc}.",
                    hint=f"The old version keeps serving; check `mlops status {name}`.",
                ) from exc
            if response.status_code == 200:
                result = response.json()
                logger.info(
                    "Switched %s to %s (drained in %ss)",
                    name,
                    container.name,
                    result.get("drain_seconds"),
                )
                return
            if response.status_code != 409:
                raise DeploymentError(
                    f"The proxy of '{name}' refused the switch: HTTP {response.status_code}.",
                    hint="The old version keeps serving.",
                )
            time.sleep(POLL_SECONDS)
        raise self._not_ready(container, config.ready_timeout)

    def _check_running(self, container: Container) -> None:
        container.reload()
        if container.status in {"exited", "dead"}:
            code = container.attrs["State"].get("ExitCode")
            raise DeploymentError(
                f"Container {container.name} exited with code {code} before it was ready.",
                hint="The previous version (if any) keeps serving; see the log tail below.",
                log_tail=container.logs(tail=20).decode(errors="replace"),
            )

    def _not_ready(self, container: Container, timeout: float) -> DeploymentError:
        return DeploymentError(
            f"Container {container.name} did not answer /ready within {timeout:g} s.",
            hint="The previous version (if any) keeps serving; raise ready_timeout if the model "
            "loads slowly.",
            log_tail=container.logs(tail=20).decode(errors="replace"),
        )

    def _remove(self, container: Container, timeout: int) -> None:
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

    def _containers(self, name: str) -> list[Container]:
        return self._docker(
            "list containers",
            self.client.containers.list,
            all=True,
            filters={"label": f"{DEPLOYMENT_LABEL}={name}"},
        )

    def _proxy(self, name: str) -> Container | None:
        proxies = [c for c in self._containers(name) if c.labels.get(ROLE_LABEL) == "proxy"]
        return proxies[0] if proxies else None

    def _active(self, name: str, proxy: Container | None) -> Container | None:
        """The model container the proxy routes to (its state file holds the live upstream)."""
        models = [c for c in self._containers(name) if c.labels.get(ROLE_LABEL) == "model"]
        if proxy is None or not models:
            return None
        upstream = _env(proxy).get(PROXY_ENV["upstream"], "")
        if proxy.status == "running":
            try:
                token = _env(proxy)[PROXY_ENV["token"]]
                response = httpx.get(
                    f"http://127.0.0.1:{proxy.labels['mlops.port']}/-/proxy/upstream",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5.0,
                )
                upstream = response.json().get("upstream") or upstream
            except (httpx.HTTPError, ValueError):
                pass
        for container in models:
            if self._upstream(container) == upstream:
                return container
        return max(models, key=_created)

    def _status(self, proxy: Container, active: Container) -> DeploymentStatus:
        if active.status in {"exited", "dead"}:
            return DeploymentStatus.FAILED
        if proxy.status != "running" or active.status != "running":
            return DeploymentStatus.STOPPED
        health = active.attrs["State"].get("Health", {}).get("Status")
        return DeploymentStatus.UNHEALTHY if health == "unhealthy" else DeploymentStatus.READY

    # --- helpers ----------------------------------------------------------------------------

    def _require_image(self, image: str | None) -> str:
        if not image:
            raise InvalidInputError(
                "The docker target needs an image.",
                hint="Build one with `mlops build-image MODEL_URI` (mlops deploy does it).",
                field="image",
            )
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound as exc:
            raise NotFoundError(
                f"Image '{image}' is not in the Docker engine.",
                hint="Build it with `mlops build-image MODEL_URI`.",
                field="image",
                value=image,
            ) from exc
        return image

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
        self._docker(
            "copy the API key file", container.put_archive, SECRETS_DIR.rsplit("/", 1)[0],
            buffer.getvalue(),
        )  # fmt: skip

    @staticmethod
    def _upstream(container: Container) -> str:
        return f"http://{container.name}:{IMAGE_PORT}"

    def _docker(self, action: str, call: Any, *args: Any, **kwargs: Any) -> Any:
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


def _env(container: Container) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"].get("Env") or [])


def _created(container: Container) -> datetime:
    created = container.attrs["Created"]
    # Docker reports nanoseconds; datetime takes microseconds
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", created).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).astimezone(UTC)
