"""Model versions: look up, list, tag, alias and delete them, and resolve `models:/` URIs.

Every read returns a `ModelVersionInfo`; every MLflow failure becomes one of our errors naming
the action that failed. Deleting refuses while a deployment's in-use tag is on the version.
"""

from __future__ import annotations

import re

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlops_pipeline import inuse, ledger
from mlops_pipeline.deployment import ModelRef
from mlops_pipeline.errors import (
    BackendError,
    ConflictError,
    InUseError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.serving.contract import is_model_uri, parse_model_uri
from mlops_pipeline.tracking import connect
from pydantic import BaseModel, Field

ALIAS_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")


class ModelVersionInfo(BaseModel):
    """One registered model version as `mlops models show` and the register flow report it."""

    name: str
    version: str = Field(description="Version number, as a string (MLflow's registry key).")
    aliases: list[str] = Field(default_factory=list, description="Aliases on it, sorted.")
    tags: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    run_id: str | None = Field(default=None, description="The run that logged the model.")
    source: str | None = Field(default=None, description="Artifact URI the version points at.")
    created: int | None = Field(default=None, description="Creation time, ms since the epoch.")
    status: str | None = Field(default=None, description="MLflow's status, e.g. READY.")
    deployments: dict[str, str] = Field(
        default_factory=dict, description="Deployments serving it: name -> target URI."
    )

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version)


def mlflow_error(exc: MlflowException, action: str) -> BackendError | NotFoundError:
    """Map an MLflow exception to our error types with the action that failed."""
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return NotFoundError(f"{action}: {exc.message}")
    return BackendError(
        f"MLflow failed while trying to {action}: {exc.message}",
        hint="Check that the tracking server is reachable (MLOPS_TRACKING_URI).",
    )


def validate_alias(alias: str) -> str:
    """Check an alias is one MLflow accepts (not a version-like 'v3').

    Returns `alias`; raises InvalidInputError (exit 2) otherwise.
    """
    if not ALIAS_PATTERN.match(alias) or re.match(r"^v\d+$", alias):
        raise InvalidInputError(
            f"--alias '{alias}' is not a valid alias.",
            hint="Use letters, digits, '_' or '-', not starting with a digit and not 'v<number>'.",
            field="alias",
            value=alias,
        )
    return alias


def set_model_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` (e.g. champion) at version `version` of model `name`.

    Raises:
        InvalidInputError: not a valid alias (exit 2).
        NotFoundError: no such model or version (exit 3).
        BackendError: MLflow failed.
    """
    validate_alias(alias)
    client = connect()
    get_model_version(name, version=version)
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise mlflow_error(exc, f"set alias '{alias}' on {name} v{version}") from exc


def remove_model_alias(name: str, alias: str) -> None:
    """Remove an alias from a registered model (NotFoundError if it has no such alias)."""
    get_model_version(name, alias=alias)
    try:
        connect().delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        raise mlflow_error(exc, f"remove alias '{alias}' from '{name}'") from exc


def version_summary(mv: ModelVersion, aliases: list[str] | None = None) -> ModelVersionInfo:
    """A `ModelVersionInfo` of an MLflow version; `aliases` overrides the version's own list."""
    return ModelVersionInfo(
        name=mv.name,
        version=str(mv.version),
        aliases=sorted(aliases if aliases is not None else (mv.aliases or [])),
        tags=dict(mv.tags),
        description=mv.description or "",
        run_id=mv.run_id,
        source=mv.source,
        created=mv.creation_timestamp,
        status=mv.status,
        deployments=inuse.deployments_from_tags(mv.tags),
    )


def get_model_version(
    name: str, version: str | None = None, alias: str | None = None
) -> ModelVersionInfo:
    """One version of `name` by number or alias (the latest when neither is given).

    Raises:
        NotFoundError: the model is not registered, has no versions, or has no such version
            or alias (exit 3).
    """
    client = connect()
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise NotFoundError(
            f"Model '{name}' is not registered.",
            hint="List models with `mlops models list`.",
            field="name",
            value=name,
        ) from exc
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif version:
            mv = client.get_model_version(name, str(version))
        else:
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise NotFoundError(f"Model '{name}' has no versions.", field="name", value=name)
            mv = max(versions, key=lambda v: int(v.version))
            mv = client.get_model_version(name, mv.version)
    except MlflowException as exc:
        what = f"alias '{alias}'" if alias else f"version '{version}'"
        raise NotFoundError(
            f"Model '{name}' has no {what}.",
            hint=f"See its versions with `mlops models list --name {name}`.",
            field="alias" if alias else "version",
            value=alias or version,
        ) from exc
    return version_summary(mv)


def resolve_model_uri(model_uri: str) -> ModelRef:
    """`models:/name/3`, `models:/name@champion` or `models:/name/latest` -> name + version.

    The grammar is the shared contract's (`serving.contract.parse_model_uri`); the version
    must exist in the registry.

    Raises:
        InvalidInputError: not a `models:/` URI, or a version that is not a number (exit 2).
        NotFoundError: the model, version or alias does not exist (exit 3).
    """
    try:
        parsed = parse_model_uri(model_uri)
    except ValueError as exc:
        name, slash, version = model_uri.strip().removeprefix("models:/").partition("/")
        if is_model_uri(model_uri) and name and slash and "@" not in name + version:
            raise InvalidInputError(
                f"Version '{version.rstrip('/')}' in '{model_uri}' is not a number.",
                hint="Use models:/NAME/3, models:/NAME/latest or models:/NAME@ALIAS.",
                field="model_uri",
                value=model_uri,
            ) from exc
        raise InvalidInputError(
            f"Model URI '{model_uri}' does not name a registered model version.",
            hint="Write it as models:/NAME/VERSION or models:/NAME@ALIAS (register it first "
            "with `mlops register`).",
            field="model_uri",
            value=model_uri,
        ) from exc
    version = None if parsed.version == "latest" else parsed.version
    return get_model_version(parsed.name, version=version, alias=parsed.alias).ref


def tag_filter(tags: dict[str, str]) -> str:
    """MLflow search syntax for `tags.<key> = '<value>'` conditions."""
    clauses = []
    for key, value in tags.items():
        escaped = value.replace("'", "\\'")
        clauses.append(f"tags.`{key}` = '{escaped}'")
    return " and ".join(clauses)


def list_model_versions(
    name: str | None = None, tags: dict[str, str] | None = None
) -> list[ModelVersionInfo]:
    """Versions matching a name and all of `tags` (key -> value), newest first in each model.

    Raises:
        BackendError: the search failed.
    """
    client = connect()
    clauses = [f"name='{name}'"] if name else []
    if tags:
        clauses.append(tag_filter(tags))
    try:
        versions = client.search_model_versions(" and ".join(clauses) or None)
    except MlflowException as exc:
        raise mlflow_error(exc, "search model versions") from exc
    aliases: dict[str, dict[str, list[str]]] = {}
    for model_name in {mv.name for mv in versions}:
        by_version: dict[str, list[str]] = {}
        for alias, alias_version in client.get_registered_model(model_name).aliases.items():
            by_version.setdefault(str(alias_version), []).append(alias)
        aliases[model_name] = by_version
    ordered = sorted(versions, key=lambda mv: (mv.name, -int(mv.version)))
    return [version_summary(mv, aliases[mv.name].get(str(mv.version), [])) for mv in ordered]


def tag_model_version(name: str, version: str, tags: dict[str, str]) -> ModelVersionInfo:
    """Set searchable tags (key -> value) on a version; returns the version as it is now.

    Raises:
        NotFoundError: no such model or version (exit 3).
        InvalidInputError: a key under the deployments' reserved prefix (exit 2).
    """
    get_model_version(name, version=version)
    client = connect()
    for key, value in tags.items():
        if key.startswith(inuse.DEPLOYMENT_TAG_PREFIX):
            raise InvalidInputError(
                f"Tag '{key}' is reserved for deployments.",
                hint="Deployments set it themselves; choose another key.",
                field="tag",
                value=key,
            )
        client.set_model_version_tag(name, version, key, value)
    return get_model_version(name, version=version)


def _rollback_users(model: ModelRef) -> list[str]:
    """Active deployments whose `mlops rollback` would return to `model`, sorted."""
    users = []
    for deployment in ledger.list_deployments():
        point = ledger.rollback_point(deployment.name)
        if point is not None and model in point.models:  # the version, or an ensemble member
            users.append(deployment.name)
    return sorted(users)


def _refuse_losing_references(summary: ModelVersionInfo) -> None:
    """A version that holds an alias or is a deployment's rollback version is only deleted
    on purpose: deleting it drops the alias (MLflow does so silently) and breaks the rollback."""
    rollbacks = _rollback_users(summary.ref)
    if not summary.aliases and not rollbacks:
        return
    held = []
    if summary.aliases:
        held.append("holds alias " + ", ".join(f"'{a}'" for a in summary.aliases))
    if rollbacks:
        held.append(
            "is the rollback version of deployment " + ", ".join(f"'{d}'" for d in rollbacks)
        )
    raise ConflictError(
        f"Version {summary.version} of '{summary.name}' {' and '.join(held)}.",
        hint="Move the alias (`mlops models alias set`) or update the deployment first, or "
        "pass --force to delete it anyway.",
        model=summary.name,
        version=summary.version,
        aliases=summary.aliases,
        rollback_of=rollbacks,
    )


def delete_model_versions(name: str, version: str | None = None, force: bool = False) -> list[str]:
    """Delete one version, or the whole model, unless a deployment uses it.

    A single version that holds an alias or is an active deployment's rollback version is
    deleted only with `force` (the whole model takes its aliases with it).

    Returns:
        The deleted version numbers, ascending.

    Raises:
        NotFoundError: no such model or version (exit 3).
        InUseError: a deployment serves the version, or one of the model's versions (exit 4).
        ConflictError: without `force`, the version holds an alias or is a rollback version
            (exit 4).
        BackendError: MLflow failed.
    """
    client = connect()
    summary = get_model_version(name, version=version) if version else None
    if summary is not None:
        in_use = {summary.version: summary.deployments} if summary.deployments else {}
    else:
        get_model_version(name)
        in_use = inuse.deployments_using_model(client, name)
    if in_use:
        raise InUseError(inuse.in_use_message(name, in_use), model=name, in_use=in_use)
    if summary is not None and not force:
        _refuse_losing_references(summary)
    try:
        if summary is not None:
            client.delete_model_version(name, summary.version)
            return [summary.version]
        deleted = [str(mv.version) for mv in client.search_model_versions(f"name='{name}'")]
        client.delete_registered_model(name)
    except MlflowException as exc:
        raise mlflow_error(exc, f"delete '{name}'") from exc
    return sorted(deleted, key=int)
