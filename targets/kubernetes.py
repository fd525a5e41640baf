"""The `kubernetes:/<namespace>[?context=<kubeconfig context>]` target.

Each deployment NAME is a set of objects server-side applied (field manager `mlops-pipeline`)
in the namespace: Secrets (API keys, as a file; the proxies' admin token), Deployment (the
scoring container and a proxy sidecar per pod), Service, HorizontalPodAutoscaler,
PodDisruptionBudget; kubernetes_manifests builds them from the settings in kubernetes_settings
(`MLOPS_K8S_<FIELD>`, per deployment `--option FIELD=VALUE`). State is read back from the
objects' labels and annotations: nothing is kept locally.

`update` applies the new pod template and waits as `kubectl rollout status` does
(kubernetes_status.rollout_status) for at most `ready_timeout` seconds. The rolling update
has maxUnavailable 0, so the old pods serve until new ones are ready; a rollout that fails or
times out gets the previous pod template applied back (the controller scales the old
ReplicaSet up again, if it scaled it down at all), and `DeploymentError` names why.

Live challenger (canary, shadow): `start_challenger` applies a Deployment and a ClusterIP
Service `NAME-challenger` (the challenger's scoring container alone; with its own HPA and PDB
when the champion has them, and as many pods as the champion runs) and waits until every
champion pod's proxy finds it ready through that Service's DNS name; `proxy_admin` gives the
rollout controller every champion pod's proxy as one ProxyAdmin (kubernetes_routes), which
keeps the ConfigMap `NAME-routes` in step for pods that start later. `promote_challenger` sends
every request to the challenger on every pod (and in the ConfigMap), rolls the champion
Deployment to the challenger's model as `update` does (its HPA's minReplicas held at the
challenger's pod count meanwhile, restored after), then removes the routes and the
challenger (cleanup: logged and retried, never a failed promotion); `stop_challenger` removes
the routes (terminating pods' too, best effort), the ConfigMap and the challenger. Either
deletes the challenger's Service only once no pod of NAME is terminating (bounded by the grace
period): such a pod still gets requests while endpoints catch up, and may route them there.

The pods run the image `build-image` made (`mlops/<model>:<version>`) as it is, or
`REGISTRY/mlops/<model>:<version>` with the `registry` option, or exactly the `image` option:
push it there first (the cluster pulls it; the target pushes nothing).

The client is the `kubernetes` package (`pip install 'mlops-pipeline[kubernetes]'`), with the
kubeconfig (`MLOPS_K8S_KUBECONFIG`, else $KUBECONFIG or ~/.kube/config; the context from the
URI) or, inside a pod, the in-cluster service account (kubernetes_api).
"""

from __future__ import annotations

import base64
import copy
import logging
import secrets
import time
from collections.abc import Callable
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
from mlops_pipeline.rollout.admin import ProxyAccess, ProxyAdmin
from mlops_pipeline.targets.base import DeployConfig, Deployment, ModelRef, Target
from mlops_pipeline.targets.kubernetes_api import KubernetesApi, parse_location
from mlops_pipeline.targets.kubernetes_manifests import (
    CHALLENGER_LABEL,
    DEPLOYMENT_LABEL,
    IMAGE_KEY,
    MANAGED_BY,
    MODEL_NAME_KEY,
    MODEL_VERSION_KEY,
    PROXY_CONTAINER,
    TOKEN_KEY,
    KubernetesSettings,
    capture_target,
    challenger_manifests,
    challenger_name,
    challenger_upstream,
    config_from_annotations,
    manifests,
    proxy_secret_name,
    render_yaml,
    routes_name,
    secret_name,
    settings_for,
)
from mlops_pipeline.targets.kubernetes_routes import PodsProxyAdmin
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
CHALLENGER_READY_TIMEOUT = 60.0  # after its rollout: until every proxy reaches it by name
# NAME-challenger is a Service (DNS-1035 label) and a label value: at most 63 characters
MAX_CHALLENGER_NAME = 63 - len(challenger_name(""))
GRACE_MARGIN = 10.0  # s beyond a pod's terminationGracePeriodSeconds before we stop waiting
CLEANUP_ATTEMPTS = 3  # of each cleanup step after a promotion's successful roll


def challenger_objects(name: str) -> list[tuple[str, str]]:
    """(kind, object name) of NAME's live challenger and its routes, in removal order: its
    Service first (traffic), its HPA and PDB before the Deployment they scale and guard."""
    challenger = challenger_name(name)
    return [
        ("Service", challenger),
        ("HorizontalPodAutoscaler", challenger),
        ("PodDisruptionBudget", challenger),
        ("Deployment", challenger),
        ("ConfigMap", routes_name(name)),
    ]


def champion_objects(name: str) -> list[tuple[str, str]]:
    """(kind, object name) of deployment NAME itself, in removal order: the Service first,
    the Secrets last (pods still read them while they stop)."""
    return [
        ("Service", name),
        ("HorizontalPodAutoscaler", name),
        ("PodDisruptionBudget", name),
        ("Deployment", name),
        ("Secret", secret_name(name)),
        ("Secret", proxy_secret_name(name)),
    ]


def delete_order(name: str) -> list[tuple[str, str]]:
    """(kind, object name) of everything of NAME, in removal order: the challenger first."""
    return challenger_objects(name) + champion_objects(name)


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
        settings, docs = self._manifests(name, model, config, image, self._proxy_token(name))
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
        _, docs = self._manifests(name, model, config, image, self._proxy_token(name))
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
        self._roll(name, current, docs, config.ready_timeout)
        return self.get(name)

    def _roll(
        self, name: str, current: dict[str, Any], docs: list[dict[str, Any]], timeout: float
    ) -> None:
        """Apply DOCS and wait (at most TIMEOUT s) for the rollout; on failure apply CURRENT's
        pod template back and raise DeploymentError saying whether that worked."""
        deadline = time.monotonic() + timeout
        try:
            for doc in docs:
                self.api.apply(doc)
            self._wait_rollout(name, deadline, timeout)
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

    def delete(self, name: str) -> None:
        """Delete every object of NAME (its challenger's too); missing ones are fine
        (idempotent)."""
        for kind, object_name in delete_order(name):
            if self.api.delete(kind, object_name):
                logger.info("Deleted %s %s", kind, object_name)

    def list(self) -> list[Deployment]:
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        found = []
        for item in self.api.list("Deployment", selector):
            if CHALLENGER_LABEL in (item["metadata"].get("labels") or {}):
                continue  # part of the deployment it challenges
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

    def health(self, name: str) -> dict[str, Any]:
        """The base health plus the proxies' `routes` (the canary/shadow split) while a
        challenger runs, so `mlops status` shows the split."""
        result = super().health(name)
        if self.api.read("Deployment", challenger_name(name)) is not None:
            try:
                result["routes"] = self.proxy_admin(name).routes().model_dump()
            except MLOpsError:
                result["routes"] = None
        return result

    # --- live challenger ----------------------------------------------------------------------

    def proxy_access(self, name: str) -> ProxyAccess:
        """The Service's endpoint and the proxies' admin token. A Service balances requests
        over pods, so route changes go to every pod through `proxy_admin` instead."""
        found = self.get(name)
        return ProxyAccess(url=found.endpoint_url or "", token=self._stored_token(name))

    def proxy_admin(self, name: str) -> ProxyAdmin:
        """Every champion pod's proxy as one ProxyAdmin (kubernetes_routes.PodsProxyAdmin)."""
        self.get(name)
        return PodsProxyAdmin(self.api, name, self._stored_token(name))

    def start_challenger(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> str:
        """Apply the Service and Deployment `NAME-challenger` (no traffic yet), wait for its
        rollout and until every champion proxy finds its /ready through the Service's DNS
        name; return that upstream. On failure both are removed.

        Raises:
            InvalidInputError: NAME is too long for a challenger, or the `image` option pins
                one image for every version (checked before anything is applied; exit 2).
            NotFoundError: no deployment NAME. ConflictError: a challenger already runs, or
                NAME's pods have no proxy sidecar or admin token (created before the live
                challenger: `mlops update` it once).
            DeploymentError: the challenger did not become ready (nothing is left of it).
        """
        if len(name) > MAX_CHALLENGER_NAME:
            raise InvalidInputError(
                f"Deployment name '{name}' is {len(name)} characters; a kubernetes: deployment "
                f"with a live challenger needs at most {MAX_CHALLENGER_NAME} (its "
                f"{challenger_name(name)!r} Service is a 63-character DNS label).",
                hint="Deploy the model under a shorter name and run the canary or shadow there.",
                field="name",
                value=name,
            )
        current = self.api.read("Deployment", name)
        if current is None:
            self.get(name)  # raises NotFoundError
        own = challenger_name(name)
        if self.api.read("Deployment", own) is not None:
            raise ConflictError(
                f"Deployment '{name}' already runs challenger {own} in {self.target_uri}.",
                hint="Let the running canary or shadow finish, or stop it first.",
                deployment=name,
            )
        self._check_takes_routes(name, current or {})
        settings = self._check(config)
        if settings.image:
            # image_for returns it for every version: the challenger would be the champion
            raise InvalidInputError(
                f"Option image={settings.image} pins one image for every version, so challenger "
                f"{model.uri} would run the champion's image.",
                hint="Use --option registry=REGISTRY (each version gets its own tag), or "
                f"deploy the new version directly with `mlops update {name} --model "
                f"{model.uri} --option image=REF`.",
                field="image",
                value=settings.image,
            )
        image = image_for(settings, self._require_image(image))
        docs = challenger_manifests(
            name, self.namespace, model, config, image, settings, **self._sizing(name, settings)
        )
        logger.info("Starting challenger %s (%s, %s) of %s", own, model.uri, image, name)
        deadline = time.monotonic() + config.ready_timeout
        try:
            # left by a controller that crashed: new pods would start with its routes
            if self.api.delete("ConfigMap", routes_name(name)):
                logger.warning("Deleted stale ConfigMap %s", routes_name(name))
            for doc in docs:
                self.api.apply(doc)
            self._wait_rollout(own, deadline, config.ready_timeout)
            self._await_challenger(name, model, CHALLENGER_READY_TIMEOUT)
        except BaseException:
            logger.warning("Challenger %s did not become ready; removing it", own)
            self._remove_challenger(name, wait=False)  # it never had traffic
            raise
        return challenger_upstream(name)

    def _sizing(self, name: str, settings: KubernetesSettings) -> dict[str, Any]:
        """challenger_manifests' sizing for NAME's challenger: an HPA and a PDB as the champion
        has them, and as many pods as the champion runs now (at least the HPA's minimum, at
        most its maximum), so the challenger can take all of its traffic at the last step."""
        champion = self.api.read("Deployment", name) or {}
        running = int((champion.get("spec") or {}).get("replicas") or 0)
        autoscaled = self.api.read("HorizontalPodAutoscaler", name) is not None
        replicas = max(settings.min_replicas, running)
        return {
            "replicas": min(replicas, settings.max_replicas) if autoscaled else replicas,
            "autoscaled": autoscaled,
            "disruption_budget": self.api.read("PodDisruptionBudget", name) is not None,
        }

    def _check_takes_routes(self, name: str, current: dict[str, Any]) -> None:
        """Raise ConflictError unless NAME's pods run the proxy sidecar with an admin token
        (a deployment created before the live challenger has neither)."""
        containers = current.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
        has_proxy = any(c.get("name") == PROXY_CONTAINER for c in containers or [])
        if has_proxy and self._read_token(name) is not None:
            return
        model = (current.get("metadata", {}).get("annotations") or {}).get(MODEL_NAME_KEY, "MODEL")
        missing = (
            "proxy sidecar" if not has_proxy else f"admin token (Secret {proxy_secret_name(name)})"
        )
        raise ConflictError(
            f"Deployment '{name}' was created before live challengers: its pods have no "
            f"{missing}, so no canary or shadow can be routed.",
            hint=f"Update it once (`mlops update {name} --model models:/{model}/VERSION`, "
            "e.g. its current version): that adds the sidecar and the Secret.",
            deployment=name,
        )

    def _await_challenger(self, name: str, model: ModelRef, timeout: float) -> None:
        """Until each champion pod's proxy accepts a 0 % canary route to the challenger (it
        does once the challenger's /ready answers 200 through its Service), removed again at
        once on that pod; the ConfigMap is not touched."""
        fan_out = PodsProxyAdmin(self.api, name, self._stored_token(name))
        route = {"upstream": challenger_upstream(name), "percent": 0, "version": model.version}
        deadline = time.monotonic() + timeout
        waiting = fan_out.pods()
        while waiting:
            pod = fan_out.pod(waiting[0])
            try:
                pod.set_routes(canary=route, drain_timeout=0)
                pod.set_routes(canary=None, drain_timeout=0)
                waiting.pop(0)
            except (ConflictError, BackendError) as exc:
                if time.monotonic() >= deadline:
                    raise DeploymentError(
                        f"Challenger {challenger_name(name)} rolled out, but the proxy of pod "
                        f"{waiting[0]} did not find it ready within {timeout:g} s: "
                        f"{exc.message}",
                        hint="Check the Service's DNS name and the challenger's log.",
                    ) from exc
                time.sleep(POLL_SECONDS)

    def stop_challenger(self, name: str) -> None:
        """All traffic back on the champion (every pod's routes and the ConfigMap cleared,
        terminating pods' too, best effort), then the challenger removed (see
        `_remove_challenger`: it returns once its pods are gone, so their captures are
        flushed). Returns at once when no challenger or routes exist (idempotent, also on a
        deployment created before live challengers). A route change that fails raises before
        anything is removed: the challenger keeps serving what it was sent."""
        left = challenger_objects(name)
        if all(self.api.read(kind, object_name) is None for kind, object_name in left):
            return
        if self.api.read("Deployment", name) is not None:
            admin = PodsProxyAdmin(self.api, name, self._stored_token(name))
            admin.set_routes(canary=None, shadow=None)
            self._clear_terminating(admin)
        self._remove_challenger(name)

    def _terminating_pods(self, selector: str) -> list[str]:
        """Pods matching `selector` that are being deleted (still running their preStop or
        shutdown)."""
        return [
            p["metadata"]["name"]
            for p in self.api.list("Pod", selector)
            if p["metadata"].get("deletionTimestamp")
        ]

    def _clear_terminating(self, admin: PodsProxyAdmin) -> None:
        """Best effort: remove the routes of NAME's terminating pods too (the fan-out skips
        them), whose proxies still answer and still get requests while endpoints catch up."""
        for pod in self._terminating_pods(f"{DEPLOYMENT_LABEL}={admin.name}"):
            try:
                admin.pod(pod).set_routes(drain_timeout=0, canary=None, shadow=None)
            except MLOpsError as exc:
                logger.info("pod %s (terminating): routes not cleared (%s)", pod, exc.message)

    def _wait_pods_gone(self, selector: str, timeout: float, terminating: bool) -> None:
        """Until no pod matching `selector` (with `terminating`, no terminating one) is left,
        for at most `timeout` s; then only a warning (a pod past its grace period is killed)."""
        deadline = time.monotonic() + timeout
        while True:
            if terminating:
                left = self._terminating_pods(selector)
            else:
                left = [p["metadata"]["name"] for p in self.api.list("Pod", selector)]
            if not left:
                return
            if time.monotonic() >= deadline:
                logger.warning("Pods %s still stopping after %g s", ", ".join(left), timeout)
                return
            time.sleep(POLL_SECONDS)

    def _remove_challenger(self, name: str, *, wait: bool = True) -> None:
        """Delete NAME's challenger (challenger_objects: Service, HPA, PDB, Deployment) and the
        routes ConfigMap.

        With `wait`: first until no pod of NAME is terminating (its proxy may still send to
        the challenger while endpoints catch up; bounded by the grace period + a margin), and
        after the deletion until the challenger's pods are gone (their last captures are
        flushed at SIGTERM)."""
        own = challenger_name(name)
        if wait:
            grace = _grace(self.api.read("Deployment", name)) + GRACE_MARGIN
            self._wait_pods_gone(f"{DEPLOYMENT_LABEL}={name}", grace, terminating=True)
            own_grace = _grace(self.api.read("Deployment", own)) + GRACE_MARGIN
        for kind, object_name in challenger_objects(name):
            if self.api.delete(kind, object_name):
                logger.info("Deleted %s %s", kind, object_name)
        if wait:
            self._wait_pods_gone(f"{DEPLOYMENT_LABEL}={own}", own_grace, terminating=False)

    def promote_challenger(self, name: str) -> Deployment:
        """Every request to the challenger on every pod (and in the ConfigMap, so pods the
        rollout starts do the same), roll the champion Deployment to the challenger's model
        (maxUnavailable 0, watched as `update`), then remove the routes and the challenger.
        Until the routes are cleared the champion HPA's minReplicas is held at the
        challenger's pod count, so the champion cannot shrink under the load it takes over
        (the configured value is applied back after, also on failure).
        Once the roll succeeded the promotion has happened: removing the routes (live pods)
        and the challenger (after the old, terminating pods are gone) is retried and logged,
        never raised; a challenger whose routes could not be removed is left running.

        Raises:
            ConflictError: no challenger runs. DeploymentError (or the API's refusal, e.g.
                BackendError): the rollout failed; the old pod template is restored and the
                routes are cleared (the challenger keeps running for the caller to stop).
        """
        own = challenger_name(name)
        found = self.api.read("Deployment", own)
        current = self.api.read("Deployment", name)
        if found is None or current is None:
            raise ConflictError(
                f"Deployment '{name}' runs no challenger to promote.", deployment=name
            )
        meta = found["metadata"].get("annotations") or {}
        model = ModelRef(meta[MODEL_NAME_KEY], meta[MODEL_VERSION_KEY])
        config = DeployConfig.model_validate(config_from_annotations(meta))
        settings = self._check(config)
        docs = manifests(
            name,
            self.namespace,
            model,
            config,
            meta[IMAGE_KEY],
            settings,
            api_keys=self._api_keys(config),
            proxy_token=self._stored_token(name),
        )
        held, configured = _hold_autoscaler(docs, found)
        admin = self.proxy_admin(name)
        route = {"upstream": challenger_upstream(name), "percent": 100, "version": model.version}
        admin.set_routes(canary=route, shadow=None, drain_timeout=config.drain_timeout)
        logger.info("Promoting %s: rolling %s to %s", own, name, model.uri)
        drain = config.drain_timeout
        try:  # the champion keeps at least the challenger's pods until it serves everything
            try:
                self._roll(name, current, held, config.ready_timeout)
            except BaseException:
                try:  # back on the champion; the rollout's error is the one raised
                    admin.set_routes(canary=None, shadow=None, drain_timeout=drain)
                except MLOpsError as exc:
                    logger.error("Clearing the routes of %s failed: %s", name, exc.message)
                raise
            # every pod now runs the challenger's model itself: the rest is cleanup, which
            # logs and retries but never fails the promotion. Terminating old pods keep their
            # route to the challenger (the promoted version) until they are gone: then the
            # challenger goes.
            cleared = self._cleanup(
                name,
                "clear the routes",
                lambda: admin.set_routes(canary=None, shadow=None, drain_timeout=drain),
            )
        finally:
            self._release_autoscaler(configured)
        if cleared:
            self._cleanup(name, "remove the challenger", lambda: self._remove_challenger(name))
        else:
            logger.error(
                "Promoted %s, but its pods may still route to %s (the same version), so it is "
                "kept running: `kubectl -n %s delete configmap %s`, `kubectl -n %s rollout "
                "restart deployment/%s`, then `kubectl -n %s delete deployment,service,hpa,pdb "
                "%s`.",
                name, own, self.namespace, routes_name(name), self.namespace, name,
                self.namespace, own,
            )  # fmt: skip
        return self.get(name)

    def _release_autoscaler(self, configured: dict[str, Any] | None) -> None:
        """Apply the champion's configured HPA back after a promotion held its minReplicas;
        a failure is logged with the command that does it (the promotion's outcome stands)."""
        if configured is None:
            return
        try:
            self.api.apply(configured)
        except MLOpsError as exc:
            name, low = configured["metadata"]["name"], configured["spec"]["minReplicas"]
            logger.error(
                "HPA %s keeps the minReplicas held for the promotion: restoring %d failed "
                "(%s); `kubectl -n %s patch hpa %s -p '{\"spec\":{\"minReplicas\":%d}}'`.",
                name, low, exc.message, self.namespace, name, low,
            )  # fmt: skip

    def _cleanup(self, name: str, what: str, action: Callable[[], object]) -> bool:
        """Run `action` up to CLEANUP_ATTEMPTS times; True once it succeeded, False (logged)
        when every attempt failed."""
        for attempt in range(1, CLEANUP_ATTEMPTS + 1):
            try:
                action()
                return True
            except MLOpsError as exc:
                logger.warning(
                    "Promoted %s; attempt %d/%d to %s failed: %s",
                    name, attempt, CLEANUP_ATTEMPTS, what, exc.message,
                )  # fmt: skip
                time.sleep(POLL_SECONDS * attempt)
        return False

    def _stored_token(self, name: str) -> str:
        """The proxies' admin token from the Secret.

        Raises:
            BackendError: NAME has no proxy token (created before the proxies had one:
                `mlops update` it once).
        """
        token = self._read_token(name)
        if token is None:
            raise BackendError(
                f"Deployment '{name}' has no Secret {proxy_secret_name(name)} with its proxies' "
                "admin token.",
                hint=f"Update it once (`mlops update {name} --model models:/MODEL/VERSION`): "
                "that creates the Secret.",
            )
        return token

    def _read_token(self, name: str) -> str | None:
        found = self.api.read("Secret", proxy_secret_name(name))
        value = ((found or {}).get("data") or {}).get(TOKEN_KEY)
        return base64.b64decode(value).decode() if value else None

    def _proxy_token(self, name: str) -> str:
        """The token the pods of NAME run with, or a new one when NAME has none yet."""
        return self._read_token(name) or secrets.token_urlsafe(32)

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
        self,
        name: str,
        model: ModelRef,
        config: DeployConfig,
        image: str | None,
        proxy_token: str | None = None,
    ) -> tuple[KubernetesSettings, list[dict[str, Any]]]:
        settings = self._check(config)
        image = settings.image or image_for(settings, self._require_image(image))
        keys = self._api_keys(config)
        docs = manifests(
            name,
            self.namespace,
            model,
            config,
            image,
            settings,
            api_keys=keys,
            proxy_token=proxy_token,
        )
        return settings, docs

    def _api_keys(self, config: DeployConfig) -> str | None:
        """The API key file's text (None without one).

        Raises:
            InvalidInputError: the file cannot be read (exit 2).
        """
        if not config.api_key_file:
            return None
        try:
            return Path(config.api_key_file).expanduser().read_text()
        except OSError as exc:
            raise InvalidInputError(
                f"API key file '{config.api_key_file}' cannot be read: {exc.strerror}.",
                field="api_key_file",
                value=config.api_key_file,
            ) from exc

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


def _hold_autoscaler(
    docs: list[dict[str, Any]], challenger: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(DOCS with the champion HPA's minReplicas raised to the challenger's pod count, at most
    its maxReplicas; the configured HPA to apply back, None when DOCS have none). Held during
    a promotion: the champion takes the challenger's whole load when the routes go, and its
    HPA, which saw little CPU while the challenger served, must not scale it down meanwhile."""
    configured = next((d for d in docs if d["kind"] == "HorizontalPodAutoscaler"), None)
    if configured is None:
        return docs, None
    spec = configured["spec"]
    running = int((challenger.get("spec") or {}).get("replicas") or 1)
    held = copy.deepcopy(configured)
    held["spec"]["minReplicas"] = min(max(spec["minReplicas"], running), spec["maxReplicas"])
    return [held if d is configured else d for d in docs], configured


def _grace(deployment: dict[str, Any] | None) -> float:
    """The pods' terminationGracePeriodSeconds of a Deployment (Kubernetes' default 30)."""
    spec = ((deployment or {}).get("spec") or {}).get("template", {}).get("spec") or {}
    return float(spec.get("terminationGracePeriodSeconds", 30))


def _version(deployment: dict[str, Any]) -> str:
    return (deployment["metadata"].get("annotations") or {}).get("mlops.model.version", "?")
