"""The model registry, Prefect-free: register a model source as a tagged MLflow model version,
and read, tag, alias and delete versions.

* `sources`: what `mlops register` is given (run URI, MLflow model dir, pickle) and its
  reference data, checked before anything is written.
* `signatures`: the signature a version is registered with, checked against reference data so
  that no version refuses its own reference rows.
* `registration`: the registration run (model, reference parquet, profile, expectation suite)
  and the new version; pickles are logged with `mlops_pipeline/pickled_model.py`.
* `versions`: lookups (`ModelVersionInfo`), `models:/` URI resolution, tags, aliases and delete
  with the in-use guard.

Everything public is re-exported here: `from mlops_pipeline import registry`.
"""

from mlops_pipeline.registry.registration import (
    PROFILE_TAG,
    REFERENCE_TAG,
    REGISTRATION_EXPERIMENT,
    SOURCE_TAG,
    SUITE_TAG,
    RegistrationRun,
    create_model_version,
    discard_registration_run,
    log_registration_run,
    pickle_requirements,
    pickled_model_code,
    reference_dtypes,
)
from mlops_pipeline.registry.signatures import (
    check_columns_fit,
    check_reference_fits,
    read_model_signature,
    reference_sample,
    reference_signature,
)
from mlops_pipeline.registry.sources import (
    ModelSource,
    load_pickled_model,
    load_reference_data,
    resolve_source,
    validate_model_name,
)
from mlops_pipeline.registry.versions import (
    ModelVersionInfo,
    delete_model_versions,
    get_model_version,
    list_model_versions,
    mlflow_error,
    remove_model_alias,
    resolve_model_uri,
    set_model_alias,
    tag_filter,
    tag_model_version,
    validate_alias,
    version_summary,
)

__all__ = [
    "PROFILE_TAG",
    "REFERENCE_TAG",
    "REGISTRATION_EXPERIMENT",
    "SOURCE_TAG",
    "SUITE_TAG",
    "ModelSource",
    "ModelVersionInfo",
    "RegistrationRun",
    "check_columns_fit",
    "check_reference_fits",
    "create_model_version",
    "delete_model_versions",
    "discard_registration_run",
    "get_model_version",
    "list_model_versions",
    "load_pickled_model",
    "load_reference_data",
    "log_registration_run",
    "mlflow_error",
    "pickle_requirements",
    "pickled_model_code",
    "read_model_signature",
    "reference_dtypes",
    "reference_sample",
    "reference_signature",
    "remove_model_alias",
    "resolve_model_uri",
    "resolve_source",
    "set_model_alias",
    "tag_filter",
    "tag_model_version",
    "validate_alias",
    "validate_model_name",
    "version_summary",
]
