"""Deploy tasks: resolve a model URI, then create, update, roll back or delete a deployment.

Each change goes through the ledger (history + registry in-use tags) around the target call, in
an order that keeps the in-use guard true at every moment: the new version is tagged before it
starts serving and the old one is released only after traffic has left it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from mlops_pipeline import ledger
from mlops_pipeline.errors import ConflictError, InvalidInputError, MLOpsError, NotFoundError
from mlops_pipeline.log import get_logger
from mlops_pipeline.targets.base import DeployConfig, Deployment, ModelRef, get_target, target_class
from mlops_pipeline.targets.base import parse_target_uri as split_target_uri
from mlops_pipeline.tasks.orchestration import step
from mlops_pipeline.tasks.registry import get_model_version
from prefect.cache_policies import NO_CACHE

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")
DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@step(cache_policy=NO_CACHE)
def resolve_model_uri(model_uri: str) -> ModelRef:
    """`models:/name/3`, `models:/name@champion` or `models:/name/latest` -> name + version."""
    match = MODEL_URI.match(model_uri.strip())
    if not match:
        raise InvalidInputError(
            f"Model URI '{model_uri}' does not name a registered model version.",
            hint="Write it as models:/NAME/VERSION or models:/NAME@ALIAS (register it first "
            "with `mlops register`).",
            field="model_uri",
            value=model_uri,
        )
    version = match["version"]
    if version is not None and version != "latest" and not version.isdigit():
        raise InvalidInputError(
            f"Version '{version}' in '{model_uri}' is not a number.",
            hint="Use models:/NAME/3, models:/NAME/latest or models:/NAME@ALIAS.",
            field="model_uri",
            value=model_uri,
        )
    summary = get_model_version.fn(
        match["name"],
        version=None if version == "latest" else version,
        alias=match["alias"],
    )
    return ModelRef(summary["name"], summary["version"])


@step
def validate_deployment_name(name: str) -> str:
    """Deployment names become process, container and Kubernetes names: DNS labels."""
    if not DEPLOYMENT_NAME.match(name):
        raise InvalidInputError(
            f"Deployment name '{name}' is not allowed.",
            hint="Use 1-63 lowercase letters, digits and '-', starting and ending with a "
            "letter or digit, e.g. iris-prod.",
            field="name",
            value=name,
        )
    return name


@step
def target_needs_image(target_uri: str) -> bool:
    """Whether the target runs container images (so `deploy` builds one first)."""
    scheme, _ = split_target_uri(target_uri)
    return target_class(scheme).needs_image


@step(cache_policy=NO_CACHE)
def plan_deployment(
    name: str, model: ModelRef, target_uri: str, port: int | None = None
) -> Literal["create", "update"]:
    """`create` for a new name; `update` when NAME already serves this model on this target."""
    existing = ledger.find_deployment(name)
    if existing is None:
        return "create"
    if existing.model_name != model.name:
        raise ConflictError(
            f"Deployment '{name}' already serves model '{existing.model_name}' "
            f"(version {existing.model_version}), not '{model.name}'.",
            hint=f"Choose another --name, or undeploy it first with `mlops undeploy {name}`.",
            deployment=name,
        )
    requested = get_target(target_uri).target_uri
    if existing.target_uri != requested:
        raise ConflictError(
            f"Deployment '{name}' runs on {existing.target_uri}, not {requested}.",
            hint=f"Choose another --name, or undeploy it first with `mlops undeploy {name}`.",
            deployment=name,
        )
    current_port = existing.config.get("port")
    if port is not None and current_port is not None and port != current_port:
        raise ConflictError(
            f"Deployment '{name}' already listens on port {current_port}; an update cannot "
            f"move it to {port}.",
            hint="Drop --port to update it in place, or undeploy it first.",
            deployment=name,
        )
    return "update"


@step(cache_policy=NO_CACHE)
def create_deployment(
    name: str,
    model: ModelRef,
    target_uri: str,
    config: DeployConfig,
    image: str | None = None,
) -> Deployment:
    """Start a new deployment and record it; on failure nothing is left running or tagged."""
    log = get_logger(__name__)
    target = get_target(target_uri)
    event = {"target_uri": target.target_uri, "model_name": model.name, "image": image}
    ledger.mark_in_use(name, model, target.target_uri)
    try:
        log.info("Deploying %s as '%s' on %s", model.uri, name, target.target_uri)
        deployment = target.create(name, model, config, image=image)
        try:
            deployment = ledger.upsert_deployment(deployment)
        except MLOpsError:
            target.delete(name)
            raise
    except BaseException as exc:  # also Ctrl-C and bugs: never leave a stale tag behind
        ledger.release_in_use(name, model)
        ledger.record_event(
            name, "create", "failed", to_version=model.version, reason=str(exc), **event
        )
        raise
    ledger.record_event(name, "create", "succeeded", to_version=model.version, **event)
    log.info("Deployment '%s' is ready at %s", name, deployment.endpoint_url)
    return deployment


@step(cache_policy=NO_CACHE)
def switch_deployment(
    name: str,
    model: ModelRef,
    config: DeployConfig | None = None,
    image: str | None = None,
    action: Literal["update", "rollback"] = "update",
    reason: str | None = None,
) -> Deployment:
    """Switch NAME to `model` with zero downtime; on failure the old version keeps serving."""
    log = get_logger(__name__)
    current = ledger.get_deployment(name)
    if current.model_name != model.name:
        raise ConflictError(
            f"Deployment '{name}' serves model '{current.model_name}'; it cannot switch to "
            f"'{model.name}'.",
            hint=f"Deploy '{model.name}' under another --name.",
            deployment=name,
        )
    target = get_target(current.target_uri)
    config = config or current.deploy_config
    event = {
        "target_uri": current.target_uri,
        "model_name": model.name,
        "from_version": current.model_version,
        "to_version": model.version,
        "image": image,
    }
    ledger.mark_in_use(name, model, current.target_uri)
    try:
        log.info("%s '%s': version %s -> %s", action, name, current.model_version, model.version)
        deployment = target.update(name, model, config, image=image)
    except BaseException as exc:  # also Ctrl-C and bugs: never leave a stale tag behind
        if model != current.model:
            ledger.release_in_use(name, model)
        ledger.record_event(name, action, "failed", reason=str(exc), **event)
        raise
    deployment = ledger.upsert_deployment(deployment)
    ledger.record_event(name, action, "succeeded", reason=reason, **event)
    log.info("Deployment '%s' now serves %s", name, model.uri)
    return deployment


@step(cache_policy=NO_CACHE)
def get_deployment(name: str) -> Deployment:
    """The ledger record of NAME (NotFoundError lists the known ones)."""
    return ledger.get_deployment(name)


@step(cache_policy=NO_CACHE)
def find_rollback_version(name: str) -> tuple[ModelRef, str | None]:
    """The version (and image) NAME served before the current one; it must still exist."""
    ledger.get_deployment(name)
    point = ledger.rollback_point(name)
    if point is None:
        raise ConflictError(
            f"Deployment '{name}' has no earlier version to roll back to.",
            hint=f"See `mlops deployments history {name}`; use `mlops update {name} --model "
            "MODEL_URI` to pick a version.",
            deployment=name,
        )
    model, image = point
    try:
        get_model_version.fn(model.name, version=model.version)
    except NotFoundError as exc:
        raise NotFoundError(
            f"Cannot roll back '{name}' to {model.uri}: that version no longer exists.",
            hint=f"Pick an existing one with `mlops update {name} --model MODEL_URI`.",
            deployment=name,
        ) from exc
    return model, image


@step(cache_policy=NO_CACHE)
def delete_deployment(name: str, reason: str | None = None) -> Deployment:
    """Stop NAME everywhere, forget it and release its model version."""
    current = ledger.get_deployment(name)
    event = {
        "target_uri": current.target_uri,
        "model_name": current.model_name,
        "from_version": current.model_version,
        "image": current.image,
    }
    try:
        get_target(current.target_uri).delete(name)
    except MLOpsError as exc:
        ledger.record_event(name, "delete", "failed", reason=str(exc), **event)
        raise
    ledger.delete_deployment(name)
    ledger.record_event(name, "delete", "succeeded", reason=reason, **event)
    get_logger(__name__).info("Deployment '%s' removed", name)
    return current


@step(cache_policy=NO_CACHE)
def get_status(name: str) -> dict[str, Any]:
    """Ledger record plus live status and health of NAME's stable endpoint."""
    recorded = ledger.get_deployment(name)
    target = get_target(recorded.target_uri)
    try:
        live = target.get(name)
    except NotFoundError:
        return {
            **recorded.model_dump(mode="json"),
            "status": "missing",
            "health": {"ready": False, "error": f"{recorded.target_uri} does not run it"},
        }
    return {
        **recorded.model_dump(mode="json"),
        "status": str(live.status),
        "endpoint_url": live.endpoint_url,
        "health": target.health(name),
    }


@step(cache_policy=NO_CACHE)
def list_deployments(target_uri: str | None = None) -> list[dict[str, Any]]:
    """Every recorded deployment, optionally on one target."""
    return [d.model_dump(mode="json") for d in ledger.list_deployments(target_uri)]


@step(cache_policy=NO_CACHE)
def get_deployment_history(name: str) -> list[dict[str, Any]]:
    """All recorded events of NAME, oldest first."""
    return [event.model_dump(mode="json") for event in ledger.history(name)]
