"""Reading `kubernetes:` objects back: rollout progress as `kubectl rollout status` judges it,
the Service's reachable URL, and the Deployment record. Pure functions over API dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlops_pipeline.deployment import Deployment, DeploymentStatus
from mlops_pipeline.targets.kubernetes_manifests import (
    IMAGE_KEY,
    MODEL_NAME_KEY,
    MODEL_URI_KEY,
    MODEL_VERSION_KEY,
    KubernetesSettings,
    config_from_annotations,
)


class RolloutFailed(Exception):
    """The Deployment's Progressing condition says ProgressDeadlineExceeded."""


def rollout_status(deployment: dict[str, Any]) -> tuple[bool, str]:
    """(done, what it waits for), in the order kubectl's DeploymentStatusViewer checks.

    Args:
        deployment: an apps/v1 Deployment as the API returns it.

    Raises:
        RolloutFailed: the controller gave up (reason ProgressDeadlineExceeded).
    """
    meta, spec, status = (
        deployment["metadata"],
        deployment.get("spec", {}),
        deployment.get("status") or {},
    )
    name = meta.get("name")
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return False, "waiting for the deployment spec update to be observed"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            raise RolloutFailed(f"deployment {name!r} exceeded its progress deadline")
    replicas = spec.get("replicas")
    updated = status.get("updatedReplicas", 0)
    if replicas is not None and updated < replicas:
        return False, f"{updated} out of {replicas} new replicas have been updated"
    if status.get("replicas", 0) > updated:
        return False, f"{status.get('replicas', 0) - updated} old replicas are pending termination"
    available = status.get("availableReplicas", 0)
    if available < updated:
        return False, f"{available} of {updated} updated replicas are available"
    return True, f"deployment {name!r} successfully rolled out"


def endpoint_url(
    service: dict[str, Any] | None, namespace: str, settings: KubernetesSettings
) -> str | None:
    """Where clients reach the Service, in this order: the `endpoint_url` setting; a
    LoadBalancer's ingress; `node_address` + the allocated nodePort; the in-cluster DNS name.
    None while a Service is missing."""
    if settings.endpoint_url:
        return settings.endpoint_url.rstrip("/")
    if service is None:
        return None
    port = service["spec"]["ports"][0]
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        host = ingress[0].get("ip") or ingress[0].get("hostname")
        return f"http://{host}:{port['port']}"
    if settings.node_address and port.get("nodePort"):
        return f"http://{settings.node_address}:{port['nodePort']}"
    name = service["metadata"]["name"]
    return f"http://{name}.{namespace}.svc.cluster.local:{port['port']}"


def reachable_from_here(url: str | None) -> bool:
    """False for in-cluster DNS names, which only pods resolve."""
    return bool(url) and ".svc.cluster.local" not in str(url)


def deployment_status(deployment: dict[str, Any]) -> DeploymentStatus:
    status = deployment.get("status") or {}
    try:
        done, _ = rollout_status(deployment)
    except RolloutFailed:
        return DeploymentStatus.FAILED
    if not status.get("availableReplicas"):
        return DeploymentStatus.UNHEALTHY
    return DeploymentStatus.READY if done else DeploymentStatus.UPDATING


def _time(stamp: str | None) -> datetime:
    if not stamp:
        return datetime.now(UTC)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def deployment_record(
    deployment: dict[str, Any], target_uri: str, endpoint: str | None
) -> Deployment:
    """The Deployment as its annotations describe it (labels can hold only some values)."""
    meta = deployment["metadata"]
    found = meta.get("annotations") or {}
    config = config_from_annotations(found)
    conditions = (deployment.get("status") or {}).get("conditions") or []
    updated = max((c.get("lastUpdateTime") or "" for c in conditions), default="") or None
    return Deployment(
        name=meta["name"],
        target_uri=target_uri,
        model_name=found.get(MODEL_NAME_KEY, ""),
        model_version=found.get(MODEL_VERSION_KEY, ""),
        model_uri=found.get(MODEL_URI_KEY, ""),
        image=found.get(IMAGE_KEY),
        endpoint_url=endpoint,
        status=deployment_status(deployment),
        capture_uri=config.get("capture_uri"),
        created_at=_time(meta.get("creationTimestamp")),
        updated_at=_time(updated or meta.get("creationTimestamp")),
        config=config,
    )
