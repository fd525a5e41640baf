"""Flows: deploy a model version to a target, update it, roll it back, undeploy it."""

from __future__ import annotations

from typing import Any

from mlops_pipeline.targets.base import DeployConfig, EnsembleConfig
from mlops_pipeline.targets.operations import deploy_config
from mlops_pipeline.tasks.deploy import (
    check_no_challenger,
    check_scoring_code,
    create_deployment,
    delete_deployment,
    find_rollback_version,
    get_deployment,
    plan_deployment,
    preflight_target,
    resolve_ensemble,
    resolve_model_uri,
    switch_deployment,
    target_needs_image,
    validate_deployment_name,
)
from mlops_pipeline.tasks.redeploy import undo_promotion
from prefect import flow


def build_image_tag(
    model_uri: str, base_image: str | None, config: DeployConfig | None = None
) -> str:
    """Build the scoring image for an image-based target and return its tag; the image bakes
    in `config`'s scoring code and ensemble members when it has them."""
    # imported here: only image targets need the Docker SDK
    from mlops_pipeline.tasks.images import build_image

    extras = {}
    if config is not None and (config.scoring_code or config.ensemble):
        extras = {"scoring_code": config.scoring_code, "ensemble": config.ensemble}
    return build_image(model_uri, base_image=base_image, **extras).tag


@flow(name="deploy", log_prints=False)
def deploy(
    model_uri: str,
    name: str,
    target: str = "local:",
    port: int | None = None,
    capture_uri: str | None = None,
    sample_rate: float | None = None,
    api_key_file: str | None = None,
    workers: int | None = None,
    base_image: str | None = None,
    ready_timeout: float | None = None,
    options: dict[str, str] | None = None,
    scoring_code: str | None = None,
    ensemble: EnsembleConfig | None = None,
) -> dict[str, Any]:
    """Serve MODEL_URI as NAME on TARGET (building an image when the target needs one);
    when NAME already serves this model, update it with zero downtime instead.

    `scoring_code` is a module defining `init()` and `run(data)`; `ensemble` serves several
    models combined, its first member the primary (MODEL_URI is then ignored). Settings left
    None take `DeployConfig`'s defaults on create (sample_rate 1.0, workers 1, ready_timeout
    180 s); on update the settings given replace the recorded ones (`options` merge over them)
    and the rest are kept, so `deploy` with a new `--workers` changes just that.
    """
    validate_deployment_name(name)
    needs_image = target_needs_image(target)  # an unknown target fails before anything else
    code = check_scoring_code(scoring_code) if scoring_code else None
    if ensemble is not None:
        model, ensemble = resolve_ensemble(ensemble, code)  # the first member is the primary
    else:
        model = resolve_model_uri(model_uri)
    action = plan_deployment(name, model, target, port)
    given = {
        "capture_uri": capture_uri,
        "sample_rate": sample_rate,
        "api_key_file": api_key_file,
        "workers": workers,
        "ready_timeout": ready_timeout,
        "scoring_code": code,
        "ensemble": ensemble,
    }
    given = {key: value for key, value in given.items() if value is not None}
    if action == "update":
        check_no_challenger(name, "update")  # before an image build of minutes
        preflight_target(target)
        recorded = get_deployment(name).deploy_config
        changed = deploy_config(
            {**recorded.model_dump(), **given, "options": recorded.options | (options or {})}
        )
        changed = None if changed == recorded else changed  # None: keep the recorded settings
        image = build_image_tag(model.uri, base_image, changed) if needs_image else None
        return switch_deployment(name, model, changed, image).model_dump(mode="json")
    config = deploy_config({"port": port, "options": options or {}, **given})
    preflight_target(target, config)  # seconds, before an image build of minutes
    image = build_image_tag(model.uri, base_image, config) if needs_image else None
    return create_deployment(name, model, target, config, image).model_dump(mode="json")


@flow(name="update-deployment", log_prints=False)
def update_deployment(
    name: str, model_uri: str, base_image: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """Switch deployment NAME to MODEL_URI with zero downtime, keeping its settings."""
    current = get_deployment(name)
    model = resolve_model_uri(model_uri)
    check_no_challenger(name, "update")  # before an image build of minutes
    preflight_target(current.target_uri)
    needs_image = target_needs_image(current.target_uri)
    image = build_image_tag(model.uri, base_image, current.deploy_config) if needs_image else None
    return switch_deployment(name, model, None, image, "update", reason).model_dump(mode="json")


@flow(name="rollback-deployment", log_prints=False)
def rollback_deployment(name: str, reason: str | None = None) -> dict[str, Any]:
    """Return deployment NAME to the version it served before, with the settings it ran with
    (an ensemble's members, capture, workers), with zero downtime. A rollback that undoes a
    promotion moves `champion` back to the version it returns to (`undo_promotion`)."""
    left = get_deployment(name)
    model, image, config = find_rollback_version(name)  # config None: keep the current ones
    switched = switch_deployment(name, model, config, image, "rollback", reason)
    if left.model_name == model.name:
        undo_promotion(model.name, left.model_version, model.version)
    return switched.model_dump(mode="json")


@flow(name="undeploy", log_prints=False)
def undeploy(name: str, reason: str | None = None) -> dict[str, Any]:
    """Stop deployment NAME and release the model version it served."""
    return delete_deployment(name, reason).model_dump(mode="json")
