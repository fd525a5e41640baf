"""Registration: log a model source and its reference artifacts to a run, then create a version.

A pickle is logged as an MLflow "models from code" model: the file `mlops_pipeline/pickled_model.py`
is copied into the model with the pickle, so loading the version needs joblib and the model's
own libraries, never this package. Reference data, its profile and its expectation suite go to
the same run, and the version's tags point at them for monitoring.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import pickle
import pickletools
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlops_pipeline.registry.sources import ModelSource
from mlops_pipeline.registry.versions import mlflow_error
from mlops_pipeline.tracking import connect, ensure_experiment

REGISTRATION_EXPERIMENT = "mlops-registrations"
# MLflow's store raises these when two writers race for the same registry row
RACE_ERROR_CODES = {"RESOURCE_ALREADY_EXISTS", "ABORTED", "TEMPORARILY_UNAVAILABLE"}

REFERENCE_TAG = "mlops.reference_uri"
PROFILE_TAG = "mlops.profile_uri"
SUITE_TAG = "mlops.suite_uri"
SOURCE_TAG = "mlops.source"


def pickled_model_code() -> Path:
    """The models-from-code file logged with every pickle (found without importing it: the
    module registers its model with MLflow when imported)."""
    spec = importlib.util.find_spec("mlops_pipeline.pickled_model")
    assert spec is not None and spec.origin is not None  # part of this package
    return Path(spec.origin)


@dataclass
class RegistrationRun:
    """The MLflow run that holds a registration's model (if logged) and reference artifacts.

    `artifact_tags` maps the reference/profile/suite tags to artifact URIs (empty without
    reference data).
    """

    run_id: str
    model_uri: str
    artifact_tags: dict[str, str] = field(default_factory=dict)


def reference_dtypes(reference: pd.DataFrame) -> dict[str, Any]:
    """The pandas dtype of each reference column as JSON: its name, or for a categorical its
    categories, their dtype and order. The pickled-model wrapper casts inputs back to these."""
    dtypes: dict[str, Any] = {}
    for name, dtype in reference.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            dtypes[str(name)] = {
                "categories": json.loads(
                    dtype.categories.to_series().to_json(orient="values", date_format="iso")
                ),
                "categories_dtype": str(dtype.categories.dtype),
                "ordered": bool(dtype.ordered),
            }
        else:
            dtypes[str(name)] = str(dtype)
    return dtypes


def module_distributions() -> Mapping[str, list[str]]:
    """Top-level module name -> the distributions that install it.

    MLflow's own map, which `log_model` builds anyway to check requirements (reading every
    installed distribution's file list takes seconds in a large environment), so a registration
    pays for it once; the standard library's `packages_distributions()` if MLflow's changes.
    """
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()
        mapping = requirements_utils._MODULES_TO_PACKAGES
    except (ImportError, AttributeError):
        mapping = None
    return mapping if isinstance(mapping, dict) else importlib.metadata.packages_distributions()


def pickle_requirements(model: Any) -> list[str]:
    """Pinned pip requirements (`dist==version`) for the libraries whose classes the pickled model
    refers to, plus mlflow, joblib and pandas, which the wrapper needs."""
    modules: set[str] = set()
    for opcode, arg, _ in pickletools.genops(pickle.dumps(model, protocol=2)):
        if opcode.name == "GLOBAL" and isinstance(arg, str):
            modules.add(arg.split(" ", 1)[0].split(".", 1)[0])
    distributions = module_distributions()
    pins = {"mlflow", "joblib", "pandas"}
    for module in modules - set(sys.stdlib_module_names) - {"__main__", "builtins"}:
        pins.update(distributions.get(module, []))
    return sorted(f"{dist}=={importlib.metadata.version(dist)}" for dist in pins)


def log_registration_run(
    name: str,
    source: ModelSource,
    reference: pd.DataFrame | None,
    signature: ModelSignature | None,
    model: Any = None,
) -> RegistrationRun:
    """Log the model (unless it already lives in a run) and its reference data to a new run.

    Args:
        name: the registered model name (already validated).
        source: where the model comes from; a run URI is referenced, not copied.
        reference: reference data; its parquet, profile and expectation suite are logged.
        signature: the signature to log a pickle with (see `check_reference_fits`).
        model: the unpickled model, whose classes decide the pickle's pip requirements.

    Raises:
        MlflowException: the tracking server or artifact store failed.
    """
    import mlflow

    connect()
    experiment_id = ensure_experiment(REGISTRATION_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{name}") as run:
        mlflow.set_tags({SOURCE_TAG: source.uri, "mlops.model_name": name})
        if source.kind == "run":
            model_uri = source.uri
        elif source.kind == "mlflow_dir":
            mlflow.log_artifacts(str(source.path), artifact_path="model")
            _stamp_run_id(source.path, run.info.run_id)
            model_uri = f"runs:/{run.info.run_id}/model"
        else:
            with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
                # MLflow nudges towards type hints and input examples; the signature covers both
                warnings.simplefilter("ignore", UserWarning)
                artifacts = {"model": str(source.path)}
                if reference is not None:  # the wrapper hands the model the reference's dtypes
                    artifacts["dtypes"] = str(Path(tmp, "dtypes.json"))
                    Path(artifacts["dtypes"]).write_text(json.dumps(reference_dtypes(reference)))
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(pickled_model_code()),
                    artifacts=artifacts,
                    signature=signature,
                    pip_requirements=pickle_requirements(model),
                )
            model_uri = info.model_uri
        tags: dict[str, str] = {}
        if reference is not None:
            from mlops_pipeline.monitoring.profile import profile_frame
            from mlops_pipeline.monitoring.validation import build_expectation_suite

            profile = profile_frame(reference)
            suite = build_expectation_suite(profile, name=f"{name}-reference")
            with tempfile.TemporaryDirectory() as tmp:
                reference.to_parquet(Path(tmp, "reference.parquet"), index=False)
                Path(tmp, "profile.json").write_text(json.dumps(profile, indent=2, default=str))
                Path(tmp, "suite.json").write_text(json.dumps(suite, indent=2, default=str))
                mlflow.log_artifacts(tmp, artifact_path="reference")
            base = f"{run.info.artifact_uri}/reference"
            tags = {
                REFERENCE_TAG: f"{base}/reference.parquet",
                PROFILE_TAG: f"{base}/profile.json",
                SUITE_TAG: f"{base}/suite.json",
            }
    return RegistrationRun(run_id=run.info.run_id, model_uri=model_uri, artifact_tags=tags)


def _stamp_run_id(model_dir: Path, run_id: str) -> None:
    """Log the directory's MLmodel again with `run_id` when it names no run (a model saved
    with `save_model` outside a run): the served version's /version then names its run."""
    import mlflow
    from mlflow.models import Model

    model = Model.load(str(model_dir))
    if model.run_id:
        return
    model.run_id = run_id
    with tempfile.TemporaryDirectory() as tmp:
        model.save(str(Path(tmp, "MLmodel")))
        mlflow.log_artifact(str(Path(tmp, "MLmodel")), artifact_path="model")


def create_model_version(
    name: str,
    registration: RegistrationRun,
    tags: dict[str, str],
    description: str | None = None,
    attempts: int = 8,
) -> str:
    """Create the next version of `name`; on any failure leave no version behind.

    Args:
        name: the registered model name (created on its first version).
        registration: the run from `log_registration_run`.
        tags: the user's version tags (the run's artifact tags are added).
        description: version description, or None.
        attempts: tries when concurrent registrations collide on a version number.

    Returns:
        The new version number as a string.

    Raises:
        BackendError / NotFoundError: MLflow refused (after the retries for races).
    """
    import mlflow

    client = connect()
    all_tags = {**tags, **registration.artifact_tags}
    version: ModelVersion | None = None
    for attempt in range(attempts):
        try:
            # mlflow.register_model resolves MLflow 3 logged models behind runs:/ URIs
            version = mlflow.register_model(
                registration.model_uri, name, await_registration_for=0, tags=all_tags
            )
            break
        except MlflowException as exc:
            # concurrent registrations of one name can collide on the version number
            if exc.error_code not in RACE_ERROR_CODES or attempt == attempts - 1:
                raise mlflow_error(exc, f"create a version of '{name}'") from exc
            time.sleep(0.05 * 2**attempt)
    assert version is not None
    if description:
        try:
            client.update_model_version(name, version.version, description=description)
        except MlflowException as exc:
            client.delete_model_version(name, version.version)
            raise mlflow_error(exc, f"describe version {version.version} of '{name}'") from exc
    return str(version.version)


def discard_registration_run(run_id: str) -> None:
    """Delete a registration run whose version was never created (MlflowException if it fails)."""
    connect().delete_run(run_id)
