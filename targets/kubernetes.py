"""The `kubernetes:/<namespace>[?context=<kubeconfig context>]` target.

Each deployment NAME is a set of objects server-side applied (field manager `mlops-pipeline`)
in the namespace: Secret (API keys, as a file), Deployment, Service, HorizontalPodAutoscaler,
PodDisruptionBudget; kubernetes_manifests builds them from the settings in kubernetes_settings
(`MLOPS_K8S_<FIELD>`, per deployment `--option FIELD=VALUE`). State is read back from the
objects' labels and annotations: nothing is kept locally.

`update` applies the new pod template and waits as `kubectl rollout status` does
(kubernetes_status.rollout_status) for at most `ready_timeout` seconds. The rolling update
has maxUnavailable 0, so the old pods serve until new ones are ready; a rollout that fails or
times out gets the previous pod template applied back (the controller scales the old
ReplicaSet up again, if it scaled it down at all), and `DeploymentError` names why.

The pods run the image `build-image` made (`mlops/<model>:<version>`) as it is, or
`REGISTRY/mlops/<model>:<version>` with the `registry` option, or exactly the `image` option:
push it there first (the cluster pulls it; the target pushes nothing).

The client is the `kubernetes` package (`pip install 'mlops-pipeline[kubernetes]'`), with the
kubeconfig (`MLOPS_K8S_KUBECONFIG`, else $KUBECONFIG or ~/.kube/config; the context from the
URI) or, inside a pod, the in-cluster service account (kubernetes_api).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
from mlops_pipeline.errors import (
    BackendError,
    ConflictError,
    DeploymentError,
    InvalidInputError,
    MLOpsError,
    NotFoundError,
)
from mlops_pipeline.targets.base import DeployConfig, Deployment, ModelRef, Target
from mlops_pipeline.targets.kubernetes_api import KubernetesApi, parse_location
from mlops_pipeline.targets.kubernetes_manifests import (
    DEPLOYMENT_LABEL,
    MANAGED_BY,
    KubernetesSettings,
    capture_target,
    config_from_annotations,
    manifests,
    render_yaml,
    secret_name,
    settings_for,
)
from mlops_pipeline.targets.kubernetes_settings import image_for
from mlops_pipeline.targets.kubernetes_status import (
    RolloutFailed,
    deployment_record,
    endpoint_url,
    reachable_from_here,
    rollout_status,
)

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# removal order: traffic first, the Secret last (pods still mount it while they stop)
DELETE_ORDER = ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Deployment", "Secret")


class KubernetesTarget(Target):
    """Deployments as server-side-applied objects in one namespace of one cluster."""

    scheme = "kubernetes"
    needs_image = True

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.namespace, self.context = parse_location(target_uri, self.location)
        suffix = f"?context={self.context}" if self.context else ""
        self.target_uri = f"kubernetes:/{self.namespace}{suffix}"
        kubeconfig = settings_for(DeployConfig()).kubeconfig  # MLOPS_K8S_KUBECONFIG
        self.api = KubernetesApi(self.namespace, self.context, kubeconfig)

    # --- the API ------------------------------------------------------------------------------

    def create(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Apply every object of NAME, wait for the rollout and /ready; on failure remove all."""
        settings, docs = self._manifests(name, model, config, image)
        if self.api.read("Deployment", name) is not None:
            raise ConflictError(
                f"Deployment '{name}' already exists in {self.target_uri}.",
                hint=f"Update it with `mlops update {name}` or remove it with "
                f"`mlops undeploy {name}`.",
                field="name",
                value=name,
            )
        logger.info("Creating %s (%s, %s) in %s", name, model.uri, image, self.target_uri)
        deadline = time.monotonic() + config.ready_timeout
        try:
            for doc in docs:
                self.api.apply(doc)
            self._wait_rollout(name, deadline, config.ready_timeout)
            self._wait_endpoint(name, settings, deadline, config.ready_timeout)
        except BaseException:
            logger.warning("Deployment %s did not become ready; removing what was applied", name)
            self.delete(name)
            raise
        return self.get(name)

    def update(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        """Apply the new pod template and wait for the rollout; restore the old one on failure."""
        settings, docs = self._manifests(name, model, config, image)
        current = self.api.read("Deployment", name)
        if current is None:
            raise NotFoundError(
                f"Deployment '{name}' does not exist in {self.target_uri}.",
                hint=f"Create it with `mlops deploy MODEL_URI --target {self.target_uri} "
                f"--name {name}`.",
                field="name",
                value=name,
            )
        logger.info("Updating %s to %s (%s)", name, model.uri, image)
        deadline = time.monotonic() + config.ready_timeout
        try:
            for doc in docs:
                self.api.apply(doc)
            self._wait_rollout(name, deadline, config.ready_timeout)
        except BaseException as exc:
            applied = next(d for d in docs if d["kind"] == "Deployment")
            problem = self._restore(name, current, applied)
            if isinstance(exc, DeploymentError):
                restored = (
                    f"Restored the previous pod template of '{name}' (version "
                    f"{_version(current)}), which keeps serving."
                    if problem is None
                    else f"Restoring version {_version(current)} did not finish ({problem}); "
                    f"check `kubectl -n {self.namespace} rollout status deployment/{name}`."
                )
                raise DeploymentError(
                    f"{exc.message} {restored}", hint=exc.hint, **exc.details
                ) from exc
            raise
        return self.get(name)

    def delete(self, name: str) -> None:
        """Delete every object of NAME; missing ones are fine (idempotent)."""
        for kind in DELETE_ORDER:
            object_name = secret_name(name) if kind == "Secret" else name
            try:
                self.api.call(
                    f"delete {kind} {object_name}",
                    "delete",
                    kind,
                    name=object_name,
                    propagation_policy="Background",
                )
                logger.info("Deleted %s %s", kind, object_name)
            except NotFoundError:
                continue

    def list(self) -> list[Deployment]:
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        found = []
        for item in self.api.list("Deployment", selector):
            name = item["metadata"]["name"]
            found.append(deployment_record(item, self.target_uri, self._endpoint(name, item)))
        return found

    def get(self, name: str) -> Deployment:
        found = self.api.read("Deployment", name)
        if found is None:
            raise NotFoundError(
                f"Deployment '{name}' does not exist in {self.target_uri}.",
                hint="List deployments with `mlops deployments list`.",
                field="name",
                value=name,
            )
        return deployment_record(found, self.target_uri, self._endpoint(name, found))

    def logs(self, name: str, tail: int = 100) -> str:
        """The last `tail` lines of each pod of NAME, newest pod first, under a header each."""
        pods = self.api.list("Pod", f"{DEPLOYMENT_LABEL}={name}")
        if not pods and self.api.read("Deployment", name) is None:
            raise NotFoundError(
                f"Deployment '{name}' does not exist in {self.target_uri}.", field="name"
            )
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        return "\n".join(
            f"==> pod {p['metadata']['name']} <==\n{self.api.pod_log(p['metadata']['name'], tail)}"
            for p in pods
        )

    def render(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> str:
        """The manifests as a YAML stream for `kubectl apply -f -`; needs no cluster or client.

        The Secret's keys are never printed: a comment gives the command that creates it.
        """
        settings, _ = self._manifests(
            name, model, config.model_copy(update={"api_key_file": None}), image
        )
        image = settings.image or image_for(settings, self._require_image(image))
        return render_yaml(name, self.namespace, model, config, image, settings)

    def preflight(self, config: DeployConfig) -> None:
        """Before an image build: the options (exit 2), then the client library (exit 2) and
        the cluster's API through the kubeconfig context (discovery; exit 6 when unusable)."""
        self._check(config)
        _ = self.api.client

    # --- rollout ------------------------------------------------------------------------------

    def _check(self, config: DeployConfig) -> KubernetesSettings:
        """The deployment's settings, once its options, port and capture are usable.

        Raises:
            InvalidInputError: a bad option, --port, or a capture pods cannot use (exit 2).
        """
        settings = settings_for(config)
        if config.port is not None:
            raise InvalidInputError(
                f"Port {config.port}: the kubernetes target publishes no host port.",
                hint="Drop --port; the Service listens on the service_port option (default 80).",
                field="port",
                value=config.port,
            )
        capture_target(config, settings)
        return settings

    def _manifests(
        self, name: str, model: ModelRef, config: DeployConfig, image: str | None
    ) -> tuple[KubernetesSettings, list[dict[str, Any]]]:
        settings = self._check(config)
        image = settings.image or image_for(settings, self._require_image(image))
        keys = None
        if config.api_key_file:
            try:
                keys = Path(config.api_key_file).expanduser().read_text()
            except OSError as exc:
                raise InvalidInputError(
                    f"API key file '{config.api_key_file}' cannot be read: {exc.strerror}.",
                    field="api_key_file",
                    value=config.api_key_file,
                ) from exc
        docs = manifests(name, self.namespace, model, config, image, settings, api_keys=keys)
        return settings, docs

    def _wait_rollout(self, name: str, deadline: float, timeout: float) -> None:
        """Poll the Deployment until kubectl would call the rollout done; DeploymentError when
        the controller reports ProgressDeadlineExceeded or `deadline` passes."""
        waiting = "the rollout has not started"
        while True:
            found = self.api.read("Deployment", name)
            if found is None:
                raise DeploymentError(f"Deployment '{name}' disappeared during its rollout.")
            try:
                done, waiting = rollout_status(found)
            except RolloutFailed as exc:
                raise self._rollout_error(name, found, f"{exc}") from exc
            if done:
                logger.info("Deployment %s: %s", name, waiting)
                return
            if time.monotonic() >= deadline:
                raise self._rollout_error(
                    name, found, f"rollout not done within {timeout:g} s ({waiting})"
                )
            logger.debug("Deployment %s: %s", name, waiting)
            time.sleep(POLL_SECONDS)

    def _wait_endpoint(
        self, name: str, settings: KubernetesSettings, deadline: float, timeout: float
    ) -> None:
        """Wait for /ready through the Service when this machine can reach it."""
        url = endpoint_url(self.api.read("Service", name), self.namespace, settings)
        if not reachable_from_here(url):
            logger.info("Endpoint %s is cluster-internal; rollout status is the readiness", url)
            return
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(POLL_SECONDS)
        raise DeploymentError(
            f"Deployment '{name}' rolled out but {url}/ready did not answer within {timeout:g} s.",
            hint="Check the Service's endpoint settings (endpoint_url, node_address, "
            "service_type).",
        )

    def _restore(self, name: str, previous: dict[str, Any], applied: dict[str, Any]) -> str | None:
        """Apply the previous pod template and metadata back and wait for it (bounded).

        Returns None once restored, else what went wrong (the caller reports the first
        failure, so this one never raises)."""
        logger.warning("Rollout of %s failed; restoring version %s", name, _version(previous))
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                **applied["metadata"],
                "labels": previous["metadata"].get("labels") or {},
                "annotations": {
                    k: v
                    for k, v in (previous["metadata"].get("annotations") or {}).items()
                    if k.startswith("mlops.")
                },
            },
            "spec": {**applied["spec"], "template": previous["spec"]["template"]},
        }
        try:
            self.api.apply(body)
            self._wait_rollout(name, time.monotonic() + 120.0, 120.0)
        except MLOpsError as exc:
            logger.error("Restoring %s did not finish: %s", name, exc.message)
            return exc.message
        return None

    def _rollout_error(self, name: str, found: dict[str, Any], why: str) -> DeploymentError:
        image = found["spec"]["template"]["spec"]["containers"][0]["image"]
        problems, tail = self._new_pods_problems(name, image)
        return DeploymentError(
            f"Deployment '{name}' ({image}) did not become ready: {why}.{problems}",
            hint="See the pod log tail; raise ready_timeout (or the progress_deadline_seconds "
            "option) if the model loads slowly.",
            log_tail=tail,
        )

    def _new_pods_problems(self, name: str, image: str) -> tuple[str, str]:
        """(waiting reasons of the pods running `image`, the log tail of one of them)."""
        try:
            pods = [
                p
                for p in self.api.list("Pod", f"{DEPLOYMENT_LABEL}={name}")
                if p["spec"]["containers"][0]["image"] == image
            ]
        except (BackendError, NotFoundError):
            return "", ""
        reasons = set()
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if waiting.get("reason"):
                    reasons.add(waiting["reason"])
        tail = self.api.pod_log(pods[0]["metadata"]["name"], 20) if pods else ""
        return (f" Pods: {', '.join(sorted(reasons))}." if reasons else ""), tail

    def _endpoint(self, name: str, deployment: dict[str, Any] | None = None) -> str | None:
        if deployment is None:
            deployment = self.api.read("Deployment", name) or {"metadata": {}}
        config = config_from_annotations(deployment["metadata"].get("annotations") or {})
        try:
            settings = settings_for(DeployConfig.model_validate(config))
        except (InvalidInputError, ValueError):
            settings = KubernetesSettings()
        return endpoint_url(self.api.read("Service", name), self.namespace, settings)

    def _require_image(self, image: str | None) -> str:
        if not image:
            raise InvalidInputError(
                "The kubernetes target needs an image the cluster can pull.",
                hint="Build one with `mlops build-image MODEL_URI` (mlops deploy builds it), "
                "push it, and pass --option registry=REGISTRY or --option image=REF.",
                field="image",
            )
        return image


def _version(deployment: dict[str, Any]) -> str:
    return (deployment["metadata"].get("annotations") or {}).get("mlops.model.version", "?")
