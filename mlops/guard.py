"""MLflow server app that refuses to delete model versions used by active deployments.

Run `mlflow server --app-name mlops-guard ...`: the MLflow UI and REST API then answer a delete
of an in-use version (or of a model with one) with HTTP 409 and the deployments that use it.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from mlflow.exceptions import MlflowException
from mlops_pipeline import inuse

MODEL_VERSION_DELETE_PATHS = {
    f"/{prefix}/2.0/mlflow/model-versions/delete" for prefix in ("api", "ajax-api")
}
MODEL_DELETE_PATHS = {
    f"/{prefix}/2.0/mlflow/registered-models/delete" for prefix in ("api", "ajax-api")
}


def _registry_store():
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def _in_use(name: str, version: str | None) -> dict[str, dict[str, str]]:
    """Version -> {deployment: target} for the version (or every version) being deleted."""
    store = _registry_store()
    versions = (
        [store.get_model_version(name, version)]
        if version is not None
        else store.search_model_versions(f"name='{name}'", max_results=10_000)
    )
    in_use = {str(mv.version): inuse.deployments_from_tags(mv.tags) for mv in versions}
    return {v: using for v, using in in_use.items() if using}


def refuse_in_use_deletes() -> Response | None:
    """Flask before_request hook: 409 for deletes that would break an active deployment."""
    if request.path in MODEL_VERSION_DELETE_PATHS:
        version_required = True
    elif request.path in MODEL_DELETE_PATHS:
        version_required = False
    else:
        return None
    payload = request.get_json(silent=True) or request.args
    name = payload.get("name")
    version = payload.get("version") if version_required else None
    if not name or (version_required and not version):
        return None  # MLflow's own handler reports the missing parameter
    try:
        in_use = _in_use(str(name), str(version) if version is not None else None)
    except MlflowException:
        return None  # unknown model or version: MLflow's handler answers 404
    if not in_use:
        return None
    response = jsonify(
        {"error_code": "RESOURCE_CONFLICT", "message": inuse.in_use_message(str(name), in_use)}
    )
    response.status_code = 409
    return response


def create_app(app: Flask | None = None):
    """App factory for `mlflow server --app-name mlops-guard`."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import app as mlflow_app
    from mlflow.server.fastapi_app import create_fastapi_app

    flask_app = app or mlflow_app
    flask_app.before_request(refuse_in_use_deletes)
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        return create_fastapi_app(flask_app)
    return flask_app
