"""A client for a deployment's proxy admin API (serving/proxy.py): routes and stats.

Targets hand out a `ProxyAccess` (the stable endpoint's URL and the admin bearer token) through
`Target.proxy_access`; `ProxyAdmin` reads and changes the canary and shadow routes and reads the
per-route, per-version stats. Every failure is one of our error types, naming the call.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from mlops_pipeline.errors import BackendError, BackendUnavailableError, ConflictError
from pydantic import BaseModel, Field, computed_field

log = logging.getLogger(__name__)

PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"


class ProxyAccess(BaseModel):
    """How to reach a deployment's proxy admin API. The token is a secret: never log it."""

    url: str = Field(description="The stable endpoint, e.g. http://127.0.0.1:8080.")
    token: str = Field(repr=False)


class Route(BaseModel):
    """A canary or shadow route as the proxy reports it."""

    upstream: str
    percent: float = Field(ge=0, le=100)
    version: str | None = None


class Routes(BaseModel):
    """GET /-/proxy/routes: the primary's upstream and version, the optional canary and shadow
    routes, and the sticky header (None when the choice is random)."""

    primary: dict[str, str | None]
    canary: Route | None = None
    shadow: Route | None = None
    sticky_header: str | None = None


class RouteFigures(BaseModel):
    """One route and version over a stats window: requests that finished within it, 5xx and
    connection errors and 4xx answers among them, and latency percentiles in milliseconds."""

    route: str
    version: str | None = None
    upstream: str | None = None
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p95_low_ms: float | None = Field(
        default=None,
        description="One-sided 95 % confidence bounds of the p95 from order statistics (None: "
        "too few requests for one). Absent from a proxy older than them.",
    )
    p95_high_ms: float | None = None
    complete: bool = True
    dropped: int = 0
    client_errors: int = Field(
        default=0,
        description="4xx answers in the window as the proxy counted them (a model that raises "
        "answers 422): a failure of that version, apart from the 5xx `errors`.",
    )

    @computed_field  # in the JSON: what a verdict's error rate is
    @property
    def failures(self) -> int:
        """Errors (5xx, connection failures, timeouts) plus 4xx answers: what the canary's
        error rate judges (`compare`)."""
        return self.errors + self.client_errors

    @computed_field
    @property
    def failure_rate(self) -> float | None:
        """`failures` / `requests`; None without requests."""
        return self.failures / self.requests if self.requests else None


class ProxyAdmin:
    """Calls one proxy's admin API.

    Args:
        access: the stable endpoint and admin token.
        timeout: seconds per call, beyond a route change's drain timeout.
    """

    def __init__(self, access: ProxyAccess, timeout: float = 10.0) -> None:
        self.access = access
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        url = f"{self.access.url.rstrip('/')}/-/proxy/{path}"
        try:
            response = httpx.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {self.access.token}"},
                timeout=kw.get("timeout", self.timeout),
                params=kw.get("params"),
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(
                f"The proxy at {self.access.url} did not answer {method} {path}: {exc}.",
                hint="Check the deployment with `mlops status NAME`.",
            ) from exc
        if response.status_code == 409:
            raise ConflictError(f"The proxy refused {method} {path}: {_message(response)}")
        if response.status_code != 200:
            raise BackendError(
                f"The proxy answered {method} {path} with HTTP {response.status_code}: "
                f"{_message(response)}"
            )
        return response.json()

    def routes(self) -> Routes:
        """The current routes. Raises BackendError / BackendUnavailableError."""
        return Routes.model_validate(self._call("GET", "routes"))

    def set_routes(self, drain_timeout: float = 30.0, **changes: Any) -> Routes:
        """Replace the routes named in `changes` (`canary=`, `shadow=`: a dict like
        {"upstream", "percent", "version"} or None to remove; `sticky_header=`); waits until
        upstreams no route uses any more have drained (at most `drain_timeout` seconds).

        Raises:
            ConflictError: a new route's upstream is not ready (the routes are unchanged).
            BackendError, BackendUnavailableError: the proxy refused or did not answer.
        """
        body = {**changes, "check_ready": True, "drain_timeout": drain_timeout}
        result = self._call("PUT", "routes", body, timeout=drain_timeout + self.timeout)
        log.info("proxy routes of %s: %s", self.access.url, changes)
        return Routes.model_validate(result)

    def switch(self, upstream: str, version: str, drain_timeout: float = 30.0) -> dict[str, Any]:
        """Make `upstream` the primary (a canary on it is removed: a promotion), draining the
        old primary. Returns the proxy's answer (previous, drained, drain_seconds...)."""
        body = {"upstream": upstream, "version": version, "drain_timeout": drain_timeout}
        return self._call("PUT", "upstream", body, timeout=drain_timeout + self.timeout)

    def stats(self, window: float) -> list[RouteFigures]:
        """Per route and version, the requests that finished in the last `window` seconds."""
        data = self._call("GET", "stats", params={"window": f"{window:g}"})
        return [RouteFigures.model_validate(item) for item in data["stats"]]

    def figures(self, window: float, route: str, upstream: str) -> RouteFigures:
        """The figures of `route` on `upstream` over `window`, summed over the version labels
        it was counted under (zeros when it served none). By upstream, because a primary
        started without a version label is counted under None."""
        found = [s for s in self.stats(window) if s.route == route and s.upstream == upstream]
        return merge_figures(route, found)


def merge_figures(route: str, items: list[RouteFigures]) -> RouteFigures:
    """One route's figures from several entries: counts add up, percentiles are those of the
    busiest entry (the proxy does not report samples, so they cannot be recomputed)."""
    if not items:
        return RouteFigures(route=route)
    if len(items) == 1:
        return items[0]
    busiest = max(items, key=lambda s: s.requests)
    requests = sum(s.requests for s in items)
    errors = sum(s.errors for s in items)
    return busiest.model_copy(
        update={
            "requests": requests,
            "errors": errors,
            "error_rate": errors / requests if requests else None,
            "client_errors": sum(s.client_errors for s in items),
            "dropped": sum(s.dropped for s in items),
            "complete": all(s.complete for s in items),
        }
    )


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
