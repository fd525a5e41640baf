"""The `kubernetes:` target's live-challenger routes: every champion pod's proxy sidecar as one
`ProxyAdmin` (mlops_pipeline.rollout.admin), so the canary and shadow controller drives a
Kubernetes deployment exactly as it drives a local or Docker one.

Each pod's proxy admin API is reached through the API server's pod proxy subresource
(`/api/v1/namespaces/NS/pods/POD:8080/proxy/-/proxy/...`) with the kubeconfig's credentials.
The API server consumes the Authorization header, so the proxy's admin token travels in
`X-MLOps-Proxy-Token` instead. A route change is written to the ConfigMap `NAME-routes` first
(a pod that starts later reads it), then to every pod, waiting (bounded) for pods whose proxy
is still starting. Stats are merged over the pods: counts add up, the p95 is the busiest pod's.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from mlops_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    InvalidInputError,
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
    PROXY_PORT,
    ROUTES_KEY,
    routes_manifest,
    routes_name,
)

logger = logging.getLogger(__name__)

TOKEN_HEADER = "X-MLOps-Proxy-Token"
ROUTE_KEYS = (CANARY, SHADOW, "sticky_header")
POLL_SECONDS = 0.5


class PodProxyAdmin(ProxyAdmin):
    """One pod's proxy admin API through the API server's pod proxy subresource.

    Args:
        api: the namespace's API access.
        pod: the pod's name.
        token: the proxies' admin token (a secret: never logged).
        timeout: seconds per call, beyond a route change's drain timeout.
    """

    def __init__(self, api: KubernetesApi, pod: str, token: str, timeout: float = 10.0) -> None:
        super().__init__(ProxyAccess(url=f"pod {pod}", token=token), timeout)
        self.api, self.pod = api, pod

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        params = kw.get("params") or {}
        found = self.api.call(
            f"{method} /-/proxy/{path} of pod {self.pod}",
            "request",
            None,
            method=method.lower(),
            path=f"/api/v1/namespaces/{self.api.namespace}/pods/{self.pod}:{PROXY_PORT}"
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
                f"{found.data[:200]!r}."
            ) from exc


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

    def pods(self) -> list[str]:
        """The deployment's pods that are not terminating, oldest first."""
        found = [
            p
            for p in self.api.list("Pod", f"{DEPLOYMENT_LABEL}={self.name}")
            if not p["metadata"].get("deletionTimestamp")
        ]
        found.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return [p["metadata"]["name"] for p in found]

    def pod(self, pod: str) -> PodProxyAdmin:
        return PodProxyAdmin(self.api, pod, self.access.token, self.timeout)

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
        """Merge `changes` into the ConfigMap; delete it once no route is left."""
        routes = {**self.stored_routes(), **{k: v for k, v in changes.items() if k in ROUTE_KEYS}}
        if any(routes.get(k) is not None for k in ROUTE_KEYS):
            self.api.apply(routes_manifest(self.name, self.api.namespace, routes))
            return
        self.api.delete("ConfigMap", routes_name(self.name))

    def routes(self) -> Routes:
        """The routes of the oldest pod that answers (every pod holds the same ones)."""
        problem: Exception | None = None
        for pod in self.pods():
            try:
                return self.pod(pod).routes()
            except (BackendError, BackendUnavailableError) as exc:
                problem = exc
        if problem is not None:
            raise problem
        return Routes(primary={"upstream": None, "version": None}, **self.stored_routes())

    def set_routes(self, drain_timeout: float = 30.0, **changes: Any) -> Routes:
        """Store the change in the ConfigMap, then make it on every pod (see ProxyAdmin);
        pods that start meanwhile are included, pods whose proxy does not answer yet are
        retried for up to `settle` seconds.

        Raises:
            ConflictError: a pod's proxy found the new upstream not ready (pods done before
                keep the change: the caller removes the routes).
            BackendError, BackendUnavailableError: a pod refused, or did not answer in time.
        """
        self.store_routes(changes)
        done: set[str] = set()
        result: Routes | None = None
        deadline = time.monotonic() + self.settle
        while True:
            pending = [p for p in self.pods() if p not in done]
            if not pending:
                break
            waiting = False
            for pod in pending:
                try:
                    result = self.pod(pod).set_routes(drain_timeout, **changes)
                    done.add(pod)
                except NotFoundError:  # deleted since the listing: nothing to change
                    done.add(pod)
                except (BackendError, BackendUnavailableError) as exc:
                    if time.monotonic() >= deadline:
                        raise
                    logger.info("pod %s: routes not set yet (%s); retrying", pod, exc.message)
                    waiting = True
            if waiting:  # else list once more: a pod may have started meanwhile
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
        """Per route, version and upstream, merged over the pods that answer (a pod that
        does not, e.g. one stopping, is left out with a warning)."""
        groups: dict[tuple[str, str | None, str | None], list[RouteFigures]] = {}
        for pod in self.pods():
            try:
                figures = self.pod(pod).stats(window)
            except (BackendError, BackendUnavailableError) as exc:
                logger.warning("pod %s: no stats (%s)", pod, exc.message)
                continue
            for item in figures:
                groups.setdefault((item.route, item.version, item.upstream), []).append(item)
        return [merge_figures(route, items) for (route, _, _), items in groups.items()]
