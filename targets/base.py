"""The deployment Target interface, and `get_target(uri)` that finds one by URI scheme.

A target runs the scoring service (`python -m mlops_pipeline.serving`, contract 3) somewhere
and keeps one stable endpoint in front of it. Targets are plug-ins: each registers a `Target`
subclass in the `mlops.targets` entry-point group under its URI scheme, so a third party adds
one with a package of its own::

    [project.entry-points."mlops.targets"]
    local = "mlops_pipeline.targets.local:LocalTarget"

Target URIs are `<scheme>:<location>`: `local:`, `docker:`, `kubernetes:/namespace`,
`iotedge:/hub/device`, `batch:`.

Contract for implementers
-------------------------
* Model references arrive resolved (`ModelRef`: name + version). Alias resolution and the
  deployment ledger are the caller's job (tasks/deploy.py); a target keeps only its own runtime
  state and never writes registry tags.
* `create` blocks until the endpoint answers `/ready` through the stable endpoint, or raises.
  On any error it removes everything it started (processes, containers, networks, state files):
  nothing half-deployed. A name it already runs -> `ConflictError`; a port in use ->
  `ConflictError`; an unreachable engine -> `BackendUnavailableError`; a service that crashes or
  never becomes ready -> `DeploymentError` carrying the tail of its log.
* `update` is zero-downtime: start the new version next to the old one, wait for `/ready`, switch
  the stable endpoint atomically, let in-flight requests on the old version complete (drain),
  then stop the old one. If the new version crashes or never becomes ready, raise
  `DeploymentError`, remove the new version, and leave the old one serving untouched. Rollback
  is an `update` to the previous version (and its image), so it has the same guarantees.
* `delete` is idempotent: deleting an unknown or half-removed deployment succeeds.
* `get` raises `NotFoundError` for an unknown name and reports the live status.
* `start_challenger` / `stop_challenger` / `promote_challenger` / `proxy_access` /
  `proxy_admin` (optional, for canary and shadow rollouts): a second version behind the same
  proxy, with the same guarantees as `create` (removed on failure, ready before traffic) and
  `update` (zero-downtime promotion).
* `preflight` (optional) checks the backend and the options in seconds, before an image is
  built; `render` (optional) returns what `create` would apply as text, changing nothing; secrets
  appear only as references.
* Raise `mlops.errors` types only (wrap SDK errors with `raise X(...) from exc`); messages name
  the value and what to do.
"""

from __future__ import annotations

import abc
import re
from importlib.metadata import entry_points
from typing import Any, ClassVar

import httpx
from mlops_pipeline.deployment import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    EnsembleConfig,
    EnsembleMember,
    ModelRef,
    served_models,
    with_primary,
)
from mlops_pipeline.errors import BackendUnavailableError, DeploymentError, InvalidInputError
from mlops_pipeline.rollout.admin import ProxyAccess, ProxyAdmin
from mlops_pipeline.serving.settings import env_name

__all__ = [
    "DeployConfig",
    "Deployment",
    "DeploymentStatus",
    "EnsembleConfig",
    "EnsembleMember",
    "ModelRef",
    "Target",
    "get_target",
    "known_schemes",
    "parse_target_uri",
    "renderable_schemes",
    "served_models",
    "serving_env",
    "target_class",
    "with_primary",
]

ENTRY_POINT_GROUP = "mlops.targets"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def serving_env(
    model_uri: str,
    model: ModelRef,
    config: DeployConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    image: str | None = None,
) -> dict[str, str]:
    """Environment variables that configure the scoring service (contract 3).

    Args:
        model_uri: what the service loads: a `models:/` URI or a model directory in the image.
        model: the resolved name and version, reported in metrics, capture and /version.
        config: the deployment's settings; `workers`, `sample_rate`, and `capture_uri` and
            `api_key_file` when set; `scoring_code` and `ensemble` when no image bakes them in.
        host, port: the service's bind address and TCP port.
        image: the image reference /version reports, for container targets.

    Returns:
        `MLOPS_SERVING_<FIELD>` names (serving/settings.py) mapped to string values; settings the
        deployment leaves unset are absent, so the service's defaults apply.
    """
    values: dict[str, object] = {
        "model_uri": model_uri,
        "model_name": model.name,
        "model_version": model.version,
        "host": host,
        "port": port,
        "workers": config.workers,
        "sample_rate": config.sample_rate,
        "capture_uri": config.capture_uri,
        "api_key_file": config.api_key_file,
        "image": image,
    }
    if image is None:  # an image bakes its scoring code and ensemble members in (images/)
        values["scoring_code"] = config.scoring_code
        values["ensemble"] = config.ensemble.serving_json() if config.ensemble else None
    return {env_name(field): str(v) for field, v in values.items() if v is not None and v != ""}


class Target(abc.ABC):
    """Runs scoring services for named deployments behind one stable endpoint each."""

    scheme: ClassVar[str]
    #: True when the target runs a container image, so `deploy` builds one first.
    needs_image: ClassVar[bool] = False

    def __init__(self, target_uri: str) -> None:
        scheme, location = parse_target_uri(target_uri)
        self.target_uri = f"{scheme}:{location}"
        self.location = location

    @abc.abstractmethod
    def create(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Start `model` as deployment `name` and return it once it answers /ready."""

    @abc.abstractmethod
    def update(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Switch deployment `name` to `model` with zero downtime (rollback uses this too)."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Stop and remove everything of deployment `name`; succeeds if it does not exist."""

    @abc.abstractmethod
    def list(self) -> list[Deployment]:
        """All deployments this target runs."""

    @abc.abstractmethod
    def get(self, name: str) -> Deployment:
        """Deployment `name` with its live status; NotFoundError when unknown."""

    @abc.abstractmethod
    def logs(self, name: str, tail: int = 100) -> str:
        """The last `tail` lines of the deployment's scoring service log."""

    def preflight(self, config: DeployConfig) -> None:
        """Check, in seconds and changing nothing, what `create`/`update` will need from the
        backend: its client library, credentials and reachability, and CONFIG's options.

        `deploy` and `update` call it before they build an image (minutes), so a missing
        kubeconfig or connection string fails at once. The default checks nothing.

        Raises:
            InvalidInputError, BackendUnavailableError, AuthError, NotFoundError: as `create`
            would, for the same cause.
        """
        return None  # a target with nothing to check ahead: local processes, say

    def render(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> str:
        """What `create` would apply, as text for the target's own tools (`deploy --dry-run`).

        Changes nothing and needs no running backend. Targets that apply declarative manifests
        (Kubernetes YAML, IoT Edge deployment JSON) override it; secrets appear only as
        references, never as values.

        Raises:
            InvalidInputError: the target has nothing to render (exit 2).
        """
        raise InvalidInputError(
            f"The {self.scheme}: target has no --dry-run: it applies no manifest.",
            hint=f"Drop --dry-run; targets that render one: {', '.join(renderable_schemes())}.",
            field="dry_run",
        )

    # --- optional capability: a live challenger behind the same proxy (canary, shadow) ---------

    def _no_challenger(self) -> InvalidInputError:
        return InvalidInputError(
            f"target {self.scheme}: has no live challenger (canary and shadow need the "
            "deployment's own proxy).",
            hint="Use a local:, docker: or kubernetes: deployment, or `mlops redeploy` without "
            "a live gate.",
            field="target",
            value=self.target_uri,
        )

    def start_challenger(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> str:
        """Start `model` next to deployment `name`'s champion, behind the same proxy, and
        return its upstream (the base URL the proxy reaches it at) once its /ready answers.

        It receives no traffic until the caller adds a canary or shadow route to that upstream
        (`proxy_admin`). Like `create`, a challenger that crashes or never becomes ready is
        removed before `DeploymentError` is raised; the champion is never touched.

        Raises:
            InvalidInputError: the target has no live challenger (the default).
            NotFoundError: no deployment `name`.
            ConflictError: a challenger already runs for `name`.
            DeploymentError: it crashed or was not ready within `config.ready_timeout`.
        """
        raise self._no_challenger()

    def stop_challenger(self, name: str) -> None:
        """Stop deployment `name`'s challenger; succeeds when none runs (idempotent).

        The caller removes its proxy routes first, so no request is in flight on it.
        """
        raise self._no_challenger()

    def promote_challenger(self, name: str) -> Deployment:
        """Make the challenger the deployment's version with zero downtime. With one proxy
        (local:, docker:) the proxy switches its primary to the challenger (removing the canary
        route) and the old version drains and stops; with a proxy per replica (kubernetes:) the
        replicas are rolled to the challenger's image while the routes keep sending its share
        to it. Returns the deployment as it now runs.

        Raises:
            ConflictError: no challenger runs for `name`.
            DeploymentError: the switch or roll failed; the champion keeps serving.
            BackendError: the cluster or a proxy refused a step the promotion needs.
        """
        raise self._no_challenger()

    def proxy_access(self, name: str) -> ProxyAccess:
        """The stable endpoint and admin token of deployment `name`'s proxy, for its routes and
        per-version stats (`mlops_pipeline.rollout.admin.ProxyAdmin`). A secret: never log it.

        Raises:
            NotFoundError: no deployment `name`; BackendUnavailableError: its proxy is down.
        """
        raise self._no_challenger()

    def proxy_admin(self, name: str) -> ProxyAdmin:
        """The client the rollout controller changes routes and reads stats with: by default
        `ProxyAdmin(self.proxy_access(name))`, one proxy. A target with a proxy per replica
        returns one object that speaks to all of them with the same interface.

        Raises:
            as `proxy_access`.
        """
        return ProxyAdmin(self.proxy_access(name))

    def predict(
        self, name: str, payload: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> Any:
        """Score `payload` (an /invocations body) through the stable endpoint."""
        deployment = self.get(name)
        try:
            response = httpx.post(
                f"{deployment.endpoint_url}/invocations",
                json=payload,
                headers=headers,
                timeout=30.0,
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                f"Deployment '{name}' at {deployment.endpoint_url} did not answer: {exc}.",
                hint=f"Check it with `mlops status {name}`.",
            ) from exc
        if response.status_code >= 400:
            raise DeploymentError(
                f"Deployment '{name}' answered HTTP {response.status_code}: {response.text[:300]}",
                status=response.status_code,
            )
        return response.json()

    def health(self, name: str) -> dict[str, Any]:
        """Ask the stable endpoint for /ready and /version; never raises for a down service."""
        deployment = self.get(name)
        result: dict[str, Any] = {"endpoint_url": deployment.endpoint_url, "ready": False}
        try:
            ready = httpx.get(f"{deployment.endpoint_url}/ready", timeout=5.0)
            result["ready"] = ready.status_code == 200
            version = httpx.get(f"{deployment.endpoint_url}/version", timeout=5.0)
            if version.status_code == 200:
                result["version"] = version.json()
        except httpx.HTTPError as exc:
            result["error"] = str(exc)
        return result


def parse_target_uri(target_uri: str) -> tuple[str, str]:
    """Split `scheme:location`; a bare `local` means `local:`."""
    scheme, _, location = target_uri.strip().partition(":")
    scheme = scheme.lower()
    if not _SCHEME.match(scheme):
        raise InvalidInputError(
            f"Target URI '{target_uri}' has no valid scheme.",
            hint=f"Use one of: {', '.join(known_schemes()) or '(none installed)'}, "
            "e.g. --target local: or --target docker:.",
            field="target",
        )
    return scheme, location


def known_schemes() -> list[str]:
    """Schemes of every target registered in the `mlops.targets` entry-point group."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def target_class(scheme: str) -> type[Target]:
    """The Target subclass registered for `scheme`."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
    if not found:
        raise InvalidInputError(
            f"Unknown deployment target '{scheme}:'.",
            hint=f"Known targets: {', '.join(f'{s}:' for s in known_schemes())}. "
            f"Install a plug-in that registers '{scheme}' in the '{ENTRY_POINT_GROUP}' "
            "entry-point group to add one.",
            field="target",
            value=scheme,
        )
    try:
        cls = found[0].load()
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(
            f"The '{scheme}' target plug-in ({found[0].value}) failed to load: {exc}.",
            hint="Reinstall the package that provides it.",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise InvalidInputError(
            f"The '{scheme}' target plug-in ({found[0].value}) is not a targets.base.Target."
        )
    return cls


def renderable_schemes() -> list[str]:
    """Schemes whose target overrides `Target.render` (so `deploy --dry-run` works)."""
    found = []
    for scheme in known_schemes():
        try:
            cls = target_class(scheme)
        except InvalidInputError:  # a broken plug-in renders nothing
            continue
        if cls.render is not Target.render:
            found.append(f"{scheme}:")
    return found or ["(none installed)"]


def get_target(target_uri: str) -> Target:
    """The Target for a URI such as `local:`, `docker:` or `kubernetes:/namespace`."""
    scheme, _ = parse_target_uri(target_uri)
    return target_class(scheme)(target_uri)
