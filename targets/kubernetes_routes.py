"""The `kubernetes:` target's live-challenger routes: every champion pod's proxy sidecar as one
`ProxyAdmin` (mlops_pipeline.rollout.admin), so the canary and shadow controller drives a
Kubernetes deployment exactly as it drives a local or Docker one.

Each pod's proxy admin API is reached on its admin port, which no Service exposes, through the
API server's pod proxy subresource (`/api/v1/namespaces/NS/pods/POD:8082/proxy/-/proxy/...`)
with the kubeconfig's credentials.
The API server consumes the Authorization header, so the proxy's admin token travels in
`X-MLOps-Proxy-Token` instead. A route change is written to the ConfigMap `NAME-routes` first
(a pod whose proxy container starts later reads it then: the kubelet resolves the
`configMapKeyRef` at each container start), then to every pod whose proxy container runs, all
at once (a rollback waits for one drain, not one per pod). Pods whose proxy is not running are
waited for (bounded), except unscheduled ones, which have started no container yet. Stats are
merged over the pods: counts add up, the p95 is the busiest pod's, and figures that miss a
pod say `complete=False`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from mlops_pipeline.errors import (
    AuthError,
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    MLOpsError,
    NotFoundError,
)
from mlops_pipeline.rollout.admin import (
    CANARY,
    SHADOW,
    ProxyAccess,
    ProxyAdmin,
    RouteFigures,
    Routes,
    merge_figures,
)
from mlops_pipeline.targets.kubernetes_api import KubernetesApi
from mlops_pipeline.targets.kubernetes_manifests import (
    DEPLOYMENT_LABEL,
    PROXY_ADMIN_PORT,
    PROXY_CONTAINER,
    PROXY_SECRETS_DIR,
    ROUTES_KEY,
    TOKEN_KEY,
    proxy_secret_name,
    routes_manifest,
    routes_name,
)

logger = logging.getLogger(__name__)

TOKEN_HEADER = "X-MLOps-Proxy-Token"
ROUTE_KEYS = (CANARY, SHADOW, "sticky_header")
POLL_SECONDS = 0.5
MAX_PARALLEL = 8  # pods called at once; more wait for a free worker
# a pod's proxy: running (takes route changes), starting (scheduled, not running yet: it may
# have read the ConfigMap before the last change) or unscheduled (no container started yet)
ProxyState = Literal["running", "starting", "unscheduled"]
T = TypeVar("T")


def proxy_state(pod: dict[str, Any]) -> ProxyState:
    """The state of a Pod object's `proxy` container (see ProxyState)."""
    if not (pod.get("spec") or {}).get("nodeName"):
        return "unscheduled"
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == PROXY_CONTAINER and "running" in (status.get("state") or {}):
            return "running"
    return "starting"


class PodProxyAdmin(ProxyAdmin):
    """One pod's proxy admin API through the API server's pod proxy subresource.

    Args:
        api: the namespace's API access.
        pod: the pod's name.
        token: the proxies' admin token (a secret: never logged).
        timeout: seconds per call, beyond a route change's drain timeout.
        deployment: the pod's deployment, named in hints (None: the pod's name).
    """

    def __init__(
        self,
        api: KubernetesApi,
        pod: str,
        token: str,
        timeout: float = 10.0,
        deployment: str | None = None,
    ) -> None:
        super().__init__(ProxyAccess(url=f"pod {pod}", token=token), timeout)
        self.api, self.pod, self.deployment = api, pod, deployment

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        """One admin call. Errors: the proxy's own refusals (`{"error": ...}`) as
        ConflictError (409), AuthError (401/403: the token) or BackendError; the API
        server's (a `Status`) as BackendUnavailableError when the pod cannot be reached yet
        (400: no IP or not scheduled; 502/503), NotFoundError when it is gone, AuthError
        (RBAC) for 401/403."""
        params = kw.get("params") or {}
        found = self.api.call(
            f"{method} /-/proxy/{path} of pod {self.pod}",
            "request",
            None,
            refusal=lambda status, text: self._refusal(method, path, status, text),
            method=method.lower(),
            path=f"/api/v1/namespaces/{self.api.namespace}/pods/{self.pod}:{PROXY_ADMIN_PORT}"
            f"/proxy/-/proxy/{path}",
            body=body,
            query_params=list(params.items()),
            header_params={TOKEN_HEADER: self.access.token, "Accept": "application/json"},
            content_type="application/json",
            _request_timeout=kw.get("timeout", self.timeout),
            serialize=False,
        )
        try:
            return json.loads(found.data)
        except ValueError as exc:
            raise BackendError(
                f"The proxy of pod {self.pod} answered {method} {path} with no JSON: "
                f"{found.data[:200]!r}.",
                hint="Check that the pod runs an image with the proxy sidecar (`mlops logs NAME`).",
            ) from exc

    def _refusal(
        self, method: str, path: str, status: int | None, text: bytes | str | None
    ) -> Exception | None:
        """Our error for a non-2xx answer (see `_call`); None: the generic mapping."""
        answer = _json(text)
        if answer.get("kind") == "Status":  # the API server speaks
            message = answer.get("message") or f"HTTP {status}"
            if status in (400, 502, 503):
                return BackendUnavailableError(
                    f"The API server cannot reach the proxy of pod {self.pod} yet: {message}.",
                    hint="The pod has no IP yet, is not scheduled or its proxy is starting.",
                )
            if status == 404:
                return NotFoundError(f"Pod {self.pod} is gone: {message}.")
            return None
        error = answer.get("error")
        raw = text.decode(errors="replace") if isinstance(text, bytes) else str(text or "")
        message = str(error.get("message")) if isinstance(error, dict) else raw[:200]
        what = f"The proxy of pod {self.pod} refused {method} {path}"
        if status == 409:
            return ConflictError(f"{what}: {message}")
        if status in (401, 403):
            name = self.deployment or self.pod
            return AuthError(
                f"{what} ({status}: {message}): it holds no or another admin token (its file "
                f"{PROXY_SECRETS_DIR}/{TOKEN_KEY} from Secret {proxy_secret_name(name)} is "
                "missing or not refreshed yet, or it runs an older image).",
                hint="The kubelet refreshes a Secret's volume within about a minute; if it "
                f"persists, restart its pods: `kubectl rollout restart deployment/{name}`.",
            )
        return BackendError(f"{what} with HTTP {status}: {message}")


class PodsProxyAdmin(ProxyAdmin):
    """The proxies of every pod of deployment NAME as one `ProxyAdmin`.

    Args:
        api: the namespace's API access.
        name: the deployment (its pods carry `mlops.deployment=NAME`).
        token: the proxies' admin token.
        timeout: seconds per pod call, beyond a route change's drain timeout.
        settle: seconds a route change waits for pods whose proxy does not answer yet.
    """

    def __init__(
        self,
        api: KubernetesApi,
        name: str,
        token: str,
        timeout: float = 10.0,
        settle: float = 60.0,
    ) -> None:
        super().__init__(ProxyAccess(url=f"the pods of {name}", token=token), timeout)
        self.api, self.name, self.settle = api, name, settle

    def listing(self) -> dict[str, ProxyState]:
        """The deployment's pods that are not terminating, oldest first -> their proxy's
        state."""
        found = [
            p
            for p in self.api.list("Pod", f"{DEPLOYMENT_LABEL}={self.name}")
            if not p["metadata"].get("deletionTimestamp")
        ]
        found.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return {p["metadata"]["name"]: proxy_state(p) for p in found}

    def pods(self) -> list[str]:
        """The pods whose proxy container runs (not terminating), oldest first: those that
        serve and take route changes."""
        return [pod for pod, state in self.listing().items() if state == "running"]

    def pod(self, pod: str) -> PodProxyAdmin:
        """The proxy admin API of one pod of the deployment (by the pod's name); its calls
        raise NotFoundError once the pod is gone."""
        return PodProxyAdmin(self.api, pod, self.access.token, self.timeout, self.name)

    def stored_routes(self) -> dict[str, Any]:
        """The routes in the ConfigMap ({} when there is none)."""
        found = self.api.read("ConfigMap", routes_name(self.name))
        text = ((found or {}).get("data") or {}).get(ROUTES_KEY) or "{}"
        try:
            return json.loads(text)
        except ValueError:
            logger.warning("ConfigMap %s holds no JSON; taken as empty", routes_name(self.name))
            return {}

    def store_routes(self, changes: dict[str, Any]) -> None:
        """Merge `changes` into the ConfigMap; delete it once no canary or shadow is left
        (a sticky header alone routes nothing)."""
        routes = {**self.stored_routes(), **{k: v for k, v in changes.items() if k in ROUTE_KEYS}}
        if any(routes.get(k) is not None for k in (CANARY, SHADOW)):
            self.api.apply(routes_manifest(self.name, self.api.namespace, routes))
            return
        self.api.delete("ConfigMap", routes_name(self.name))

    def routes(self) -> Routes:
        """The routes of the oldest pod that answers (every pod holds the same ones); the
        ConfigMap's when no pod's proxy runs."""
        problem: Exception | None = None
        for pod in self.pods():
            try:
                return self.pod(pod).routes()
            except (BackendError, NotFoundError) as exc:
                problem = exc
        if problem is not None:
            raise problem
        return Routes(primary={"upstream": None, "version": None}, **self.stored_routes())

    def set_routes(self, drain_timeout: float = 30.0, **changes: Any) -> Routes:
        """Store the change in the ConfigMap, then make it on every pod whose proxy runs, at
        once (see ProxyAdmin). Pods that do not answer, and pods whose proxy is starting,
        are retried for up to `settle` seconds; then the ones still starting are skipped
        with a warning (they read the ConfigMap when their proxy starts), as are
        unscheduled pods at once (no container started yet) and pods deleted meanwhile.

        Raises:
            ConflictError: a pod's proxy found the new upstream not ready (pods done before
                keep the change: the caller removes the routes).
            AuthError: a pod's proxy refused the admin token.
            BackendError, BackendUnavailableError: a running pod refused, or did not answer
                within `settle` seconds.
        """
        self.store_routes(changes)
        done: set[str] = set()
        result: Routes | None = None
        deadline = time.monotonic() + self.settle
        while True:
            listed = {pod: state for pod, state in self.listing().items() if pod not in done}
            # an unscheduled pod needs nothing: any container it starts reads the ConfigMap
            # written above; a starting one may have read it before, so it is waited for
            starting = [pod for pod, state in listed.items() if state == "starting"]
            running = [pod for pod, state in listed.items() if state == "running"]
            answers = self._each(running, lambda admin: admin.set_routes(drain_timeout, **changes))
            failed: dict[str, BackendError] = {}
            for pod, answer in answers.items():
                if isinstance(answer, Routes | NotFoundError):  # NotFound: deleted meanwhile
                    done.add(pod)
                    result = answer if isinstance(answer, Routes) else result
                elif isinstance(answer, BackendError):
                    failed[pod] = answer
                else:
                    raise answer
            if not failed and not starting:
                break
            if time.monotonic() >= deadline:
                if failed:
                    raise next(iter(failed.values()))
                logger.warning(
                    "pods %s of %s: proxy not running after %g s; skipped (each reads "
                    "ConfigMap %s when its proxy starts)",
                    ", ".join(starting), self.name, self.settle, routes_name(self.name),
                )  # fmt: skip
                break
            for pod, exc in failed.items():
                logger.info("pod %s: routes not set yet (%s); retrying", pod, exc.message)
            time.sleep(POLL_SECONDS)
        logger.info("routes of %s on %d pod(s): %s", self.name, len(done), sorted(changes))
        return result or self.routes()

    def switch(self, upstream: str, version: str, drain_timeout: float = 30.0) -> dict[str, Any]:
        """Not for pods: a Kubernetes deployment changes version by a rolling update."""
        raise InvalidInputError(
            f"The proxies of '{self.name}' are not switched one by one.",
            hint="Promote the challenger with the target (promote_challenger), which rolls "
            "the Deployment.",
        )

    def stats(self, window: float) -> list[RouteFigures]:
        """Per route, version and upstream, merged over the pods whose proxy runs. A pod
        that does not answer (e.g. one stopping) or is gone is left out with a warning, and
        then every merged entry says `complete=False`.

        Raises:
            AuthError: a pod's proxy refused the admin token.
            BackendError, NotFoundError: no pod answered.
        """
        groups: dict[tuple[str, str | None, str | None], list[RouteFigures]] = {}
        skipped: list[MLOpsError] = []
        for pod, answer in self._each(self.pods(), lambda admin: admin.stats(window)).items():
            if isinstance(answer, BackendError | NotFoundError):
                logger.warning("pod %s: no stats (%s)", pod, answer.message)
                skipped.append(answer)
                continue
            if isinstance(answer, MLOpsError):
                raise answer
            for item in answer:
                groups.setdefault((item.route, item.version, item.upstream), []).append(item)
        if skipped and not groups:
            raise skipped[0]
        merged = [merge_figures(route, items) for (route, _, _), items in groups.items()]
        if skipped:
            return [item.model_copy(update={"complete": False}) for item in merged]
        return merged

    def _each(
        self, pods: list[str], call: Callable[[PodProxyAdmin], T]
    ) -> dict[str, T | MLOpsError]:
        """`call` on each pod's proxy, at most MAX_PARALLEL at once: pod -> its result or
        the error it raised (each call is bounded by its own timeout)."""
        if not pods:
            return {}
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(pods)), "pod-proxy") as pool:
            futures = {pod: pool.submit(call, self.pod(pod)) for pod in pods}
            found: dict[str, T | MLOpsError] = {}
            for pod, future in futures.items():
                try:
                    found[pod] = future.result()
                except MLOpsError as exc:
                    found[pod] = exc
            return found


def _json(text: bytes | str | None) -> dict[str, Any]:
    """An error answer's JSON object ({} when it is none)."""
    try:
        found = json.loads(text or b"")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
