"""Registry tasks: turn a model source into a tagged MLflow model version, and manage versions."""

from __future__ import annotations

import importlib.metadata
import json
import pickle
import pickletools
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType
from mlops_pipeline import inuse
from mlops_pipeline.errors import (
    BackendError,
    InUseError,
    InvalidInputError,
    NotFoundError,
)
from mlops_pipeline.log import get_logger
from mlops_pipeline.tracking import connect, ensure_experiment
from prefect import task
from prefect.cache_policies import NO_CACHE

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
REGISTRATION_EXPERIMENT = "mlops-registrations"
PICKLED_MODEL_CODE = Path(__file__).with_name("pickled_model.py")
# MLflow's store raises these when two writers race for the same registry row
RACE_ERROR_CODES = {"RESOURCE_ALREADY_EXISTS", "ABORTED", "TEMPORARILY_UNAVAILABLE"}

REFERENCE_TAG = "mlops.reference_uri"
PROFILE_TAG = "mlops.profile_uri"
SUITE_TAG = "mlops.suite_uri"
SOURCE_TAG = "mlops.source"


@dataclass(frozen=True)
class ModelSource:
    """Where a model to register comes from."""

    kind: Literal["run", "mlflow_dir", "pickle"]
    uri: str
    path: Path | None = None


@dataclass
class RegistrationRun:
    """The MLflow run that holds a registration's model (if logged) and reference artifacts."""

    run_id: str
    model_uri: str
    artifact_tags: dict[str, str] = field(default_factory=dict)


def mlflow_error(exc: MlflowException, action: str) -> BackendError | NotFoundError:
    """Map an MLflow exception to our error types with the action that failed."""
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return NotFoundError(f"{action}: {exc.message}")
    return BackendError(
        f"MLflow failed while trying to {action}: {exc.message}",
        hint="Check that the tracking server is reachable (MLOPS_TRACKING_URI).",
    )


@task
def validate_model_name(name: str) -> str:
    """Check a registered-model name is one MLflow and URIs can carry."""
    if not NAME_PATTERN.match(name or ""):
        raise InvalidInputError(
            f"--name '{name}' is not a valid model name.",
            hint="Use 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            field="name",
            value=name,
        )
    return name


@task
def resolve_source(source: str) -> ModelSource:
    """Classify SOURCE as an MLflow run URI, an MLflow model directory or a pickle file."""
    if source.startswith("runs:/"):
        return ModelSource(kind="run", uri=source)
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"SOURCE '{source}' does not exist.",
            hint="Give a runs:/<run_id>/<path> URI, an MLflow model directory or a pickle file.",
            field="source",
            value=source,
        )
    if path.is_dir():
        if not (path / "MLmodel").is_file():
            raise InvalidInputError(
                f"SOURCE '{source}' is a directory without an MLmodel file.",
                hint="Point at an MLflow model directory (one that contains MLmodel).",
                field="source",
                value=source,
            )
        return ModelSource(kind="mlflow_dir", uri=source, path=path.resolve())
    return ModelSource(kind="pickle", uri=source, path=path.resolve())


@task(cache_policy=NO_CACHE)
def load_pickled_model(path: Path) -> Any:
    """Unpickle a model file and check it has `predict`."""
    import joblib

    get_logger(__name__).warning(
        "Loading %s with pickle: pickles run code when loaded, register only files you trust.",
        path.name,
    )
    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling can raise anything the pickled code raises
        raise InvalidInputError(
            f"SOURCE '{path}' is not a loadable pickle/joblib file or MLflow model "
            f"({type(exc).__name__}).",
            hint="Save the model with pickle.dump or joblib.dump, or give an MLflow model dir.",
            field="source",
            value=str(path),
        ) from exc
    if not callable(getattr(model, "predict", None)):
        raise InvalidInputError(
            f"The object in '{path}' ({type(model).__name__}) has no predict method.",
            hint="Register an object with predict(DataFrame), e.g. a fitted scikit-learn model.",
            field="source",
            value=str(path),
        )
    return model


@task
def load_reference_data(path: str | None) -> pd.DataFrame | None:
    """Read reference data from CSV or Parquet."""
    if path is None:
        return None
    from mlops_pipeline.tasks.tables import read_table_file

    # one reader for every CSV/Parquet input: a UTF-8 byte-order mark is ignored
    frame = read_table_file(path, option="--reference-data", field="reference_data")
    if frame.empty:
        raise InvalidInputError(
            f"--reference-data '{path}' has no rows.",
            hint="Give a sample of the data the model was trained on.",
            field="reference_data",
            value=path,
        )
    return frame


def read_model_signature(source: ModelSource) -> ModelSignature | None:
    """The signature stored with an MLflow model, if it has one."""
    model_uri = source.uri if source.kind == "run" else str(source.path)
    try:
        return Model.load(model_uri).signature
    except MlflowException as exc:
        raise NotFoundError(
            f"SOURCE '{source.uri}' is not a loadable MLflow model: {exc.message}",
            hint="Check the run id and artifact path (runs:/<run_id>/model).",
            field="source",
            value=source.uri,
        ) from exc
    except OSError as exc:
        raise InvalidInputError(
            f"SOURCE '{source.uri}' has an unreadable MLmodel file ({exc}).",
            field="source",
            value=source.uri,
        ) from exc


_KIND_CHECKS = {
    "integer": pd.api.types.is_integer_dtype,
    "long": pd.api.types.is_integer_dtype,
    "float": pd.api.types.is_numeric_dtype,
    "double": pd.api.types.is_numeric_dtype,
    "boolean": pd.api.types.is_bool_dtype,
    "string": lambda dtype: (
        pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
    ),
    "datetime": pd.api.types.is_datetime64_any_dtype,
}


# signature types whose values cannot be missing in a required column (the service refuses null)
_NO_NULLS_WHEN_REQUIRED = {"integer", "long", "boolean"}


def check_columns_fit(signature: ModelSignature, reference: pd.DataFrame) -> None:
    """Raise naming the first column that the reference data lacks or has the wrong type for,
    or whose missing values the signature would refuse (so no version refuses its own data)."""
    for spec in signature.inputs.inputs:
        name = getattr(spec, "name", None)
        if name is None:
            continue
        if name not in reference.columns:
            if getattr(spec, "required", True):
                raise InvalidInputError(
                    f"--reference-data lacks column '{name}' that the model's signature needs.",
                    hint=f"Give data with the columns {signature.inputs.input_names()}.",
                    field="reference_data",
                    value=name,
                )
            continue
        type_name = getattr(getattr(spec, "type", None), "name", None)
        check = _KIND_CHECKS.get(type_name)
        if check is not None and not check(reference[name].dtype):
            raise InvalidInputError(
                f"--reference-data column '{name}' has dtype {reference[name].dtype}, "
                f"but the model's signature says {type_name}.",
                hint="Give reference data with the types the model was trained on.",
                field="reference_data",
                value=name,
            )
        if (
            type_name in _NO_NULLS_WHEN_REQUIRED
            and getattr(spec, "required", True)
            and reference[name].isna().any()
        ):
            raise InvalidInputError(
                f"--reference-data column '{name}' has missing values, but the model's "
                f"signature requires a {type_name} in every row, so the version would refuse "
                "its own reference data.",
                hint=f"Fill or drop the missing '{name}' values, or log the model with a "
                f"signature that marks '{name}' optional (ColSpec required=False).",
                field="reference_data",
                value=name,
            )


@task(cache_policy=NO_CACHE)
def check_reference_fits(
    source: ModelSource, reference: pd.DataFrame | None, model: Any = None
) -> ModelSignature | None:
    """Check reference data against the model and return the signature to register with."""
    if source.kind != "pickle":
        signature = read_model_signature(source)
        if signature is not None and reference is not None:
            check_columns_fit(signature, reference)
        return signature
    if reference is None:
        get_logger(__name__).warning(
            "No --reference-data: the pickled model gets no signature, so requests are not "
            "checked against a schema and drift cannot be measured."
        )
        return None
    sample = reference_sample(reference)
    try:
        predictions = model.predict(sample)
    except Exception as exc:  # the model's own code decides what it raises on bad input
        raise InvalidInputError(
            f"The model's predict failed on --reference-data ({type(exc).__name__}: {exc}).",
            hint="Give reference data with the columns and types the model was trained on.",
            field="reference_data",
        ) from exc
    return reference_signature(reference, sample, predictions)


def reference_sample(reference: pd.DataFrame, rows: int = 100) -> pd.DataFrame:
    """The first `rows` rows plus, per column, its first missing and first present value.

    Small enough to predict on and infer types from quickly (MLflow's inference takes ~30 s on
    500k rows), yet every column shows its type and, if it has any, a missing value.
    """
    picked = set(range(min(rows, len(reference))))
    missing = reference.isna()
    for name in reference.columns:
        for mask in (missing[name].to_numpy(), ~missing[name].to_numpy()):
            hits = mask.nonzero()[0]
            if len(hits):
                picked.add(int(hits[0]))
    return reference.iloc[sorted(picked)]


def reference_signature(
    reference: pd.DataFrame, sample: pd.DataFrame, predictions: Any
) -> ModelSignature:
    """The signature of a pickled model, typed from `sample` of `reference`.

    A column with any missing value in the whole reference is optional (ColSpec required=False),
    so the service accepts null there and the version scores its own reference rows. Raises
    InvalidInputError naming a column that a signature cannot describe.
    """
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values does not apply: such
        # columns become optional and are scored as pandas nullable integers
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        signature = infer_signature(sample, predictions)
    specs = signature.inputs.inputs
    if not signature.inputs.has_input_names() or any(
        isinstance(spec.type, AnyType) for spec in specs
    ):
        raise _undescribable_column(sample)
    missing = reference.isna().any()
    signature.inputs = Schema(
        [ColSpec(spec.type, spec.name, required=not bool(missing[spec.name])) for spec in specs]
    )
    return signature


def _undescribable_column(sample: pd.DataFrame) -> InvalidInputError:
    """The error for the first column MLflow cannot type (timedeltas, mixed objects, all null)."""
    name = str(sample.columns[0])
    for column in sample.columns:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec = infer_signature(sample[[column]]).inputs.inputs[0]
        except Exception:  # noqa: BLE001 - any failure means MLflow cannot type it
            spec = None
        if spec is None or spec.name is None or isinstance(spec.type, AnyType):
            name = str(column)
            break
    return InvalidInputError(
        f"--reference-data column '{name}' (dtype {sample[name].dtype}) has no type an MLflow "
        "signature can describe, so requests could not be checked against it.",
        hint=f"Convert '{name}' to numbers, strings, booleans or date-times (and give it at "
        "least one value), or drop it if the model does not use it.",
        field="reference_data",
        value=name,
    )


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


def pickle_requirements(model: Any) -> list[str]:
    """Pinned pip requirements for the libraries whose classes the pickled model refers to."""
    modules: set[str] = set()
    for opcode, arg, _ in pickletools.genops(pickle.dumps(model, protocol=2)):
        if opcode.name == "GLOBAL" and isinstance(arg, str):
            modules.add(arg.split(" ", 1)[0].split(".", 1)[0])
    distributions = importlib.metadata.packages_distributions()
    pins = {"mlflow", "joblib", "pandas"}
    for module in modules - set(sys.stdlib_module_names) - {"__main__", "builtins"}:
        pins.update(distributions.get(module, []))
    return sorted(f"{dist}=={importlib.metadata.version(dist)}" for dist in pins)


@task(cache_policy=NO_CACHE)
def log_registration_run(
    name: str,
    source: ModelSource,
    reference: pd.DataFrame | None,
    signature: ModelSignature | None,
    model: Any = None,
) -> RegistrationRun:
    """Log the model (unless it already lives in a run) and its reference data to a new run."""
    import mlflow

    connect()
    experiment_id = ensure_experiment(REGISTRATION_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{name}") as run:
        mlflow.set_tags({SOURCE_TAG: source.uri, "mlops.model_name": name})
        if source.kind == "run":
            model_uri = source.uri
        elif source.kind == "mlflow_dir":
            mlflow.log_artifacts(str(source.path), artifact_path="model")
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
                    python_model=str(PICKLED_MODEL_CODE),
                    artifacts=artifacts,
                    signature=signature,
                    pip_requirements=pickle_requirements(model),
                )
            model_uri = info.model_uri
        tags: dict[str, str] = {}
        if reference is not None:
            from mlops_pipeline.tasks.profile import profile_frame
            from mlops_pipeline.tasks.validation import build_expectation_suite

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


@task(cache_policy=NO_CACHE)
def create_model_version(
    name: str,
    registration: RegistrationRun,
    tags: dict[str, str],
    description: str | None = None,
    attempts: int = 8,
) -> str:
    """Create the next version of `name`; on any failure leave no version behind."""
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


@task
def discard_registration_run(run_id: str) -> None:
    """Delete a registration run whose version was never created."""
    connect().delete_run(run_id)


@task
def validate_alias(alias: str) -> str:
    """Check an alias is one MLflow accepts (not a version-like 'v3')."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$", alias) or re.match(r"^v\d+$", alias):
        raise InvalidInputError(
            f"--alias '{alias}' is not a valid alias.",
            hint="Use letters, digits, '_' or '-', not starting with a digit and not 'v<number>'.",
            field="alias",
            value=alias,
        )
    return alias


@task
def set_model_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` (e.g. champion) at a version."""
    validate_alias.fn(alias)
    client = connect()
    get_model_version.fn(name, version=version)
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise mlflow_error(exc, f"set alias '{alias}' on {name} v{version}") from exc


@task
def remove_model_alias(name: str, alias: str) -> None:
    """Remove an alias from a registered model."""
    get_model_version.fn(name, alias=alias)
    try:
        connect().delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        raise mlflow_error(exc, f"remove alias '{alias}' from '{name}'") from exc


def version_summary(mv: ModelVersion, aliases: list[str] | None = None) -> dict[str, Any]:
    """A JSON-safe view of a model version."""
    return {
        "name": mv.name,
        "version": str(mv.version),
        "aliases": sorted(aliases if aliases is not None else (mv.aliases or [])),
        "tags": dict(mv.tags),
        "description": mv.description or "",
        "run_id": mv.run_id,
        "source": mv.source,
        "created": mv.creation_timestamp,
        "status": mv.status,
        "deployments": inuse.deployments_from_tags(mv.tags),
    }


@task
def get_model_version(
    name: str, version: str | None = None, alias: str | None = None
) -> dict[str, Any]:
    """One version by number or alias (the latest when neither is given)."""
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


def tag_filter(tags: dict[str, str]) -> str:
    """MLflow search syntax for `tags.<key> = '<value>'` conditions."""
    clauses = []
    for key, value in tags.items():
        escaped = value.replace("'", "\\'")
        clauses.append(f"tags.`{key}` = '{escaped}'")
    return " and ".join(clauses)


@task
def list_model_versions(
    name: str | None = None, tags: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Versions matching a name and tags, newest first within each model."""
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


@task
def tag_model_version(name: str, version: str, tags: dict[str, str]) -> dict[str, Any]:
    """Set searchable tags on a version."""
    get_model_version.fn(name, version=version)
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
    return get_model_version.fn(name, version=version)


@task
def delete_model_versions(name: str, version: str | None = None) -> list[str]:
    """Delete one version, or the whole model, unless a deployment uses it."""
    client = connect()
    summary = get_model_version.fn(name, version=version) if version else None
    if summary is not None:
        in_use = {summary["version"]: summary["deployments"]} if summary["deployments"] else {}
    else:
        get_model_version.fn(name)
        in_use = inuse.deployments_using_model(client, name)
    if in_use:
        raise InUseError(inuse.in_use_message(name, in_use), model=name, in_use=in_use)
    try:
        if summary is not None:
            client.delete_model_version(name, summary["version"])
            return [summary["version"]]
        deleted = [str(mv.version) for mv in client.search_model_versions(f"name='{name}'")]
        client.delete_registered_model(name)
    except MlflowException as exc:
        raise mlflow_error(exc, f"delete '{name}'") from exc
    return sorted(deleted, key=int)
