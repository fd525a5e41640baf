"""In-use protection: deployments mark the model versions they serve with registry tags.

The tags live in the MLflow registry itself, so the guard holds for everyone who reaches the
registry: our CLI, the MLflow UI and the REST API (through mlops.guard).
"""

from __future__ import annotations

from mlflow import MlflowClient

DEPLOYMENT_TAG_PREFIX = "mlops.deployment."


def mark_in_use(
    client: MlflowClient, name: str, version: str | int, deployment: str, target_uri: str
) -> None:
    """Record that `deployment` serves this model version."""
    client.set_model_version_tag(name, str(version), DEPLOYMENT_TAG_PREFIX + deployment, target_uri)


def release(client: MlflowClient, name: str, version: str | int, deployment: str) -> None:
    """Forget that `deployment` serves this model version (idempotent)."""
    tags = client.get_model_version(name, str(version)).tags
    if DEPLOYMENT_TAG_PREFIX + deployment in tags:
        client.delete_model_version_tag(name, str(version), DEPLOYMENT_TAG_PREFIX + deployment)


def deployments_from_tags(tags: dict[str, str]) -> dict[str, str]:
    """Deployment name -> target URI, read from a model version's tags."""
    return {
        key[len(DEPLOYMENT_TAG_PREFIX) :]: value
        for key, value in tags.items()
        if key.startswith(DEPLOYMENT_TAG_PREFIX)
    }


def deployments_using(client: MlflowClient, name: str, version: str | int) -> dict[str, str]:
    """Deployments that serve this model version, as name -> target URI."""
    return deployments_from_tags(client.get_model_version(name, str(version)).tags)


def deployments_using_model(client: MlflowClient, name: str) -> dict[str, dict[str, str]]:
    """For every version of `name` in use: version -> {deployment: target URI}."""
    in_use: dict[str, dict[str, str]] = {}
    for mv in client.search_model_versions(f"name='{name}'"):
        using = deployments_from_tags(mv.tags)
        if using:
            in_use[str(mv.version)] = using
    return in_use


def in_use_message(name: str, in_use: dict[str, dict[str, str]]) -> str:
    """The one-line refusal shown by the CLI and returned by the guard as HTTP 409."""
    parts = [
        f"version {version} by {', '.join(f'{d} ({t})' for d, t in sorted(using.items()))}"
        for version, using in sorted(in_use.items(), key=lambda item: int(item[0]))
    ]
    return (
        f"Model '{name}' is in use by active deployments: {'; '.join(parts)}. "
        "Undeploy or update those deployments first (mlops undeploy NAME)."
    )
