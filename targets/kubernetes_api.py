"""The `kubernetes:` target's API access: target URIs, the client (kubeconfig or in-cluster),
and one call wrapper that turns the client's errors into ours. Apply is server-side apply with
the field manager `mlops-pipeline`, forced: these objects are the target's, and a hand edit
of a field it sets is overwritten by the next deploy."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mlops_pipeline.errors import (
    AuthError,
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.targets.kubernetes_manifests import CONTAINER, FIELD_MANAGER

INSTALL_HINT = "Install the client with `pip install 'mlops-pipeline[kubernetes]'`."
NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
KINDS = {
    "Secret": "v1",
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "Pod": "v1",
}


def parse_location(target_uri: str, location: str) -> tuple[str, str | None]:
    """`/<namespace>[?context=<ctx>]` -> (namespace, context or None).

    Raises:
        InvalidInputError: no namespace, a namespace that is not a DNS label, or unknown
            query keys (exit 2).
    """
    parts = urlsplit(location)
    namespace = parts.path.strip("/")
    query = parse_qs(parts.query)
    if not NAMESPACE.match(namespace) or set(query) - {"context"}:
        raise InvalidInputError(
            f"Target URI '{target_uri}' is not kubernetes:/<namespace>[?context=<context>].",
            hint="E.g. --target kubernetes:/ml-prod or kubernetes:/ml-prod?context=aks-west; "
            "the namespace is a DNS label (lowercase letters, digits, '-').",
            field="target",
            value=target_uri,
        )
    return namespace, (query.get("context") or [None])[0]


class KubernetesApi:
    """The objects of one namespace, through a DynamicClient made on first use.

    Args:
        namespace: the namespace every call is in.
        context: the kubeconfig context; None = the current one.
        kubeconfig: the kubeconfig file; None = $KUBECONFIG or ~/.kube/config.
    """

    def __init__(self, namespace: str, context: str | None, kubeconfig: str | None) -> None:
        self.namespace, self.context, self.kubeconfig = namespace, context, kubeconfig
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The kubernetes DynamicClient (discovery runs on first use)."""
        if self._client is None:
            self._client = _connect(self.kubeconfig, self.context)
        return self._client

    def call(
        self,
        action: str,
        operation: str,
        kind: str | None,
        *,
        refusal: Callable[[int | None, Any], Exception | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One DynamicClient call (`operation` on `kind` in the namespace, or a raw `request`
        when `kind` is None), with its errors turned into ours.

        Args:
            refusal: for a non-2xx answer, (HTTP status, raw body) -> the error to raise, or
                None for the generic mapping (a pod proxy call tells the proxy's own answers
                from the API server's this way).
        """
        client = self.client  # first: it says what to install when the library is missing
        from kubernetes.dynamic import exceptions as k8s
        from urllib3.exceptions import HTTPError as TransportError

        try:
            if kind is None:
                return getattr(client, operation)(**kwargs)
            resource = client.resources.get(api_version=KINDS[kind], kind=kind)
            return getattr(client, operation)(resource, namespace=self.namespace, **kwargs)
        except k8s.ResourceNotFoundError as exc:
            raise BackendError(
                f"The cluster serves no {KINDS.get(kind or '', '')} {kind} (needed to {action}).",
                hint="The target needs Kubernetes 1.23 or later (autoscaling/v2, policy/v1).",
            ) from exc
        except k8s.DynamicApiError as exc:
            mapped = refusal(exc.status, exc.body) if refusal is not None else None
            raise (mapped or _api_error(exc, action, self.namespace)) from exc
        except TransportError as exc:
            raise BackendUnavailableError(
                f"The Kubernetes API at {client.configuration.host} did not answer while "
                f"trying to {action}: {exc}.",
                hint="Check the cluster and the kubeconfig context.",
            ) from exc

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        what = f"apply {doc['kind']} {doc['metadata']['name']}"
        found = self.call(
            what,
            "server_side_apply",
            doc["kind"],
            body=doc,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        return found.to_dict()

    def read(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.call(f"read {kind} {name}", "get", kind, name=name).to_dict()
        except NotFoundError:
            return None

    def delete(self, kind: str, name: str) -> bool:
        """Delete one object (its dependents in the background); False when it was missing."""
        try:
            self.call(
                f"delete {kind} {name}", "delete", kind, name=name, propagation_policy="Background"
            )
        except NotFoundError:
            return False
        return True

    def list(self, kind: str, label_selector: str) -> list[dict[str, Any]]:
        found = self.call(f"list {kind}s", "get", kind, label_selector=label_selector)
        return [item for item in found.to_dict().get("items") or []]

    # --- Target interface ---------------------------------------------------------------------

    def pod_log(self, pod: str, tail: int) -> str:
        try:
            found = self.call(
                f"read the log of pod {pod}",
                "request",
                None,
                method="get",
                path=f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log",
                query_params=[("tailLines", tail), ("container", CONTAINER)],
                serialize=False,  # plain text; a log line may parse as JSON
            )
        except (BackendError, NotFoundError) as exc:
            return f"(no log: {exc.message})"
        return found.data.decode(errors="replace")


def _connect(kubeconfig: str | None, context: str | None) -> Any:
    """A DynamicClient from the kubeconfig (context `context`), else in-cluster config."""
    try:
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
        from kubernetes.dynamic import DynamicClient
    except ImportError as exc:
        # an installation problem the user fixes, as the iotedge extra's (exit 2)
        raise InvalidInputError(
            "The kubernetes: target needs the `kubernetes` Python client, which is not installed.",
            hint=INSTALL_HINT,
            field="target",
        ) from exc
    from urllib3.exceptions import HTTPError as TransportError

    try:
        api = k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
    except k8s_config.ConfigException as exc:
        if context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise BackendUnavailableError(
                f"No usable kubeconfig{f' context {context!r}' if context else ''}: {exc}.",
                hint="Set KUBECONFIG or MLOPS_K8S_KUBECONFIG, or name an existing context in "
                "the target URI (kubernetes:/NAMESPACE?context=CONTEXT).",
            ) from exc
        k8s_config.load_incluster_config()
        api = k8s_client.ApiClient()
    try:
        return DynamicClient(api)
    except TransportError as exc:
        raise BackendUnavailableError(
            f"The Kubernetes API at {api.configuration.host} did not answer: {exc}.",
            hint="Check the cluster and the kubeconfig context.",
        ) from exc


def _api_error(exc: Any, action: str, namespace: str) -> Exception:
    """Our error for a DynamicApiError (status, and the Status message the server sent)."""
    message = getattr(exc, "summary", lambda: str(exc))()
    status = getattr(exc, "status", None)
    text = f"Kubernetes refused to {action} in namespace {namespace}: {message}"
    if status == 404:
        return NotFoundError(text, hint="Check the namespace exists: kubectl get ns.")
    if status == 409:
        return ConflictError(text)
    if status in (401, 403):
        return AuthError(text, hint="Check the kubeconfig user's RBAC in this namespace.")
    if status in (400, 422):
        return InvalidInputError(text, hint="Check the deployment's --option values.")
    return BackendError(text)
