"""Flow: register a model (MLflow run, MLflow model dir or pickle) as the next version of NAME."""

from __future__ import annotations

from typing import Any

from mlops_pipeline.tasks.registry import (
    check_reference_fits,
    create_model_version,
    discard_registration_run,
    get_model_version,
    load_pickled_model,
    load_reference_data,
    log_registration_run,
    resolve_source,
    set_model_alias,
    validate_alias,
    validate_model_name,
)
from prefect import flow


@flow(name="register-model", log_prints=False)
def register_model(
    source: str,
    name: str,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    reference_data: str | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    """Register SOURCE as the next version of NAME, with tags, reference data and an alias."""
    validate_model_name(name)
    if alias:
        validate_alias(alias)
    model_source = resolve_source(source)
    reference = load_reference_data(reference_data)
    model = load_pickled_model(model_source.path) if model_source.kind == "pickle" else None
    signature = check_reference_fits(model_source, reference, model)
    registration = log_registration_run(name, model_source, reference, signature, model)
    try:
        version = create_model_version(name, registration, tags or {}, description)
    except Exception:
        discard_registration_run(registration.run_id)
        raise
    if alias:
        set_model_alias(name, alias, version)
    return get_model_version(name, version=version).model_dump(mode="json")
