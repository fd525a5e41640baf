"""The `docker:` target: model images run as containers behind a proxy container on one port.

Per deployment NAME the engine holds a user-defined network `mlops-NAME`, one proxy container
(`python -m mlops_pipeline.serving.proxy` from the model image) publishing the stable port on
127.0.0.1, and the model container(s). Updates start the new container, let the proxy switch
to it once its /ready answers (the proxy drains the old one), then stop the old one, so clients
of the stable port see no failed request. Every object carries the label
`mlops.deployment=NAME`, so the state is read back from Docker itself: no local state file to
lose or go stale. This module is the `Target`: the lifecycle, and the readiness wait and switch
through the stable port; the engine objects (network, containers, their labels and the state
read back from them) are in docker_objects.
"""

from __future__ import annotations

import json
import logging
import re
import time

import docker
import docker.errors
import httpx
from docker.models.containers import Container
from mlops_pipeline.errors import (
    BackendUnavailableError,
    ConflictError,
    DeploymentError,
    InvalidInputError,
    MLOpsError,
    NotFoundError,
)
from mlops_pipeline.images import docker_client
from mlops_pipeline.rollout.admin import ProxyAccess, ProxyAdmin
from mlops_pipeline.serving.contract import free_port, port_problem
from mlops_pipeline.targets.base import DeployConfig, Deployment, ModelRef, Target
from mlops_pipeline.targets.docker_objects import (
    CHALLENGER_LABEL,
    PROXY_ENV,
    ROLE_LABEL,
    DockerObjects,
    container_env,
    deployment,
    upstream,
)

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
POLL_SECONDS = 0.25


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
        self._objects: DockerObjects | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    @property
    def objects(self) -> DockerObjects:
        """The deployments' networks and containers on this target's engine."""
        if self._objects is None:
            self._objects = DockerObjects(self.client)
        return self._objects

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
        if self.objects.containers(name):
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
            network = self.objects.create_network(name)
            container = self.objects.start_model(name, model, config, image, network)
            self.objects.start_proxy(name, image, port, upstream(container), network)
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
        proxy = self.objects.proxy(name)
        if proxy is None:
            raise NotFoundError(
                f"Deployment '{name}' does not exist on docker:.",
                hint=f"Create it with `mlops deploy MODEL_URI --target docker: --name {name}`.",
                field="name",
                value=name,
            )
        previous = self.objects.models(name)
        logger.info("Updating deployment %s to %s (%s)", name, model.uri, image)
        container = self.objects.start_model(name, model, config, image, f"mlops-{name}")
        try:
            self._switch(name, proxy, container, config)
        except BaseException:
            self.objects.remove(container, timeout=0)
            raise
        for old in previous:
            self.objects.remove(old, timeout=int(config.drain_timeout))
        return self.get(name)

    def delete(self, name: str) -> None:
        """Stop the proxy first (no new requests), then the model containers, then the network."""
        containers = sorted(
            self.objects.containers(name), key=lambda c: c.labels.get(ROLE_LABEL) != "proxy"
        )
        for container in containers:
            self.objects.remove(container, timeout=10)
        self.objects.remove_networks(name)

    def list(self) -> list[Deployment]:
        found = []
        for name in self.objects.deployment_names():
            try:
                found.append(self.get(name))
            except NotFoundError:  # removed, or half-removed, while we listed
                continue
        return found

    def get(self, name: str) -> Deployment:
        proxy = self.objects.proxy(name)
        active = self.objects.active(name, proxy)
        if proxy is None or active is None:
            raise NotFoundError(
                f"Deployment '{name}' does not exist on docker:.",
                hint="List deployments with `mlops deployments list`.",
                field="name",
                value=name,
            )
        return deployment(name, self.target_uri, proxy, active)

    def logs(self, name: str, tail: int = 100) -> str:
        active = self.objects.active(name, self.objects.proxy(name))
        if active is None:
            raise NotFoundError(f"Deployment '{name}' does not exist on docker:.", field="name")
        return active.logs(tail=tail).decode(errors="replace")

    def health(self, name: str) -> dict:
        """The base health plus the proxy's `routes` (the canary/shadow split) while a
        challenger runs, so `mlops status` shows the split."""
        result = super().health(name)
        if self._challengers(name):
            try:
                result["routes"] = ProxyAdmin(self.proxy_access(name), 5.0).routes().model_dump()
            except MLOpsError:
                result["routes"] = None
        return result

    # --- live challenger ----------------------------------------------------------------------

    def _challengers(self, name: str) -> list[Container]:
        """Challenger containers that are not (or no longer) the active one."""
        active = self.objects.active(name, self.objects.proxy(name))
        return [
            c
            for c in self.objects.models(name)
            if c.labels.get(CHALLENGER_LABEL) == "true" and (active is None or c.id != active.id)
        ]

    def start_challenger(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> str:
        """A second model container on the deployment's network; returns its upstream once the
        proxy finds its /ready answering (probed as a 0 % canary route, removed again)."""
        image = self._require_image(image)
        self.get(name)
        running = self._challengers(name)
        if running:
            raise ConflictError(
                f"Deployment '{name}' already runs challenger {running[0].name}.",
                hint="Let the running canary or shadow finish, or stop it first.",
                deployment=name,
            )
        container = self.objects.start_model(
            name, model, config, image, f"mlops-{name}", labels={CHALLENGER_LABEL: "true"}
        )
        try:
            self._await_challenger(name, container, model, config.ready_timeout)
        except BaseException:
            self.objects.remove(container, timeout=0)
            raise
        return upstream(container)

    def _await_challenger(
        self, name: str, container: Container, model: ModelRef, timeout: float
    ) -> None:
        # The container's port is not published: only the proxy, on the deployment's network,
        # can ask its /ready. A 0 % canary route is accepted only once /ready answers 200 and
        # sends no request; it is removed right after.
        admin = ProxyAdmin(self.proxy_access(name))
        route = {"upstream": upstream(container), "percent": 0, "version": model.version}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running(container)
            try:
                admin.set_routes(canary=route, drain_timeout=0)
            except ConflictError:
                time.sleep(POLL_SECONDS)
                continue
            admin.set_routes(canary=None, drain_timeout=0)
            return
        raise self._not_ready(container, timeout)

    def stop_challenger(self, name: str) -> None:
        if self.objects.proxy(name) is None:
            return
        for container in self._challengers(name):
            config = json.loads(container.labels.get("mlops.config", "{}"))
            self.objects.remove(container, timeout=int(config.get("drain_timeout", 30)))

    def promote_challenger(self, name: str) -> Deployment:
        proxy = self.objects.proxy(name)
        challengers = self._challengers(name) if proxy is not None else []
        if not challengers:
            raise ConflictError(
                f"Deployment '{name}' runs no challenger to promote.", deployment=name
            )
        new = challengers[0]
        previous = [c for c in self.objects.models(name) if c.id != new.id]
        config = DeployConfig.model_validate_json(new.labels.get("mlops.config", "{}"))
        self._switch(name, proxy, new, config)
        for old in previous:
            self.objects.remove(old, timeout=int(config.drain_timeout))
        return self.get(name)

    def proxy_access(self, name: str) -> ProxyAccess:
        proxy = self.objects.proxy(name)
        if proxy is None:
            raise NotFoundError(f"Deployment '{name}' does not exist on docker:.", field="name")
        if proxy.status != "running":
            raise BackendUnavailableError(
                f"The proxy container of '{name}' is {proxy.status}.",
                hint=f"Check it with `mlops status {name}`.",
            )
        token = container_env(proxy)[PROXY_ENV["token"]]
        return ProxyAccess(url=f"http://127.0.0.1:{proxy.labels['mlops.port']}", token=token)

    # --- rollout through the stable port ------------------------------------------------------

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
        token = container_env(proxy)[PROXY_ENV["token"]]
        url = f"http://127.0.0.1:{proxy.labels['mlops.port']}/-/proxy/upstream"
        body = {
            "upstream": upstream(container),
            "drain_timeout": config.drain_timeout,
            "check_ready": True,
            # labels the primary's stats and X-Model-Version
            "version": container.labels.get("mlops.model.version"),
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
