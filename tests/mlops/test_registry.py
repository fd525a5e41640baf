"""The registry domain (mlops_pipeline.registry) against a real sqlite-backed MLflow registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlops_pipeline import inuse
from mlops_pipeline.deployment import ModelRef
from mlops_pipeline.errors import ConflictError, InUseError, InvalidInputError, NotFoundError
from mlops_pipeline.registry import (
    PROFILE_TAG,
    REFERENCE_TAG,
    SUITE_TAG,
    ModelVersionInfo,
    check_reference_fits,
    delete_model_versions,
    get_model_version,
    list_model_versions,
    load_pickled_model,
    load_reference_data,
    pickle_requirements,
    pickled_model_code,
    resolve_source,
    validate_alias,
    validate_model_name,
)
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tracking import connect


@pytest.mark.parametrize("name", ["iris", "fraud-model_v2", "a.b"])
def test_valid_names_pass(name):
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "has space", "x/y", "x" * 201, "ünï"])
def test_invalid_names_name_the_value(name):
    with pytest.raises(InvalidInputError) as exc:
        validate_model_name(name)
    assert f"'{name}'" in str(exc.value) and exc.value.exit_code == 2


@pytest.mark.parametrize("alias", ["v3", "3x", "a b"])
def test_invalid_aliases_are_refused(alias):
    with pytest.raises(InvalidInputError, match="alias"):
        validate_alias(alias)


def test_resolve_source_kinds(tmp_path, iris_model_dir, iris_pickle):
    assert resolve_source("runs:/abc/model").kind == "run"
    assert resolve_source(str(iris_model_dir)).kind == "mlflow_dir"
    assert resolve_source(str(iris_pickle)).kind == "pickle"
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_source(str(tmp_path / "missing.pkl"))
    with pytest.raises(InvalidInputError, match="without an MLmodel"):
        resolve_source(str(tmp_path))


def test_not_a_pickle_is_a_clear_error(tmp_path):
    bogus = tmp_path / "model.pkl"
    bogus.write_text("this is not a pickle")
    with pytest.raises(InvalidInputError, match="not a loadable pickle"):
        load_pickled_model(bogus)


def test_object_without_predict_is_refused(tmp_path):
    import joblib

    path = tmp_path / "dict.joblib"
    joblib.dump({"weights": [1, 2]}, path)
    with pytest.raises(InvalidInputError, match="has no predict method"):
        load_pickled_model(path)


def test_reference_data_formats(tmp_path, iris_features):
    iris_features.to_parquet(tmp_path / "ref.parquet")
    iris_features.to_csv(tmp_path / "ref.csv", index=False)
    for name in ("ref.parquet", "ref.csv"):
        frame = load_reference_data(str(tmp_path / name))
        assert list(frame.columns) == list(iris_features.columns) and len(frame) == 150
    (tmp_path / "ref.xlsx").write_text("x")
    with pytest.raises(InvalidInputError, match="neither .csv nor .parquet"):
        load_reference_data(str(tmp_path / "ref.xlsx"))
    (tmp_path / "empty.csv").write_text("a,b\n")
    with pytest.raises(InvalidInputError, match="has no rows"):
        load_reference_data(str(tmp_path / "empty.csv"))


def test_reference_must_match_mlflow_signature(iris_model_dir, iris_features):
    source = resolve_source(str(iris_model_dir))
    signature = check_reference_fits(source, iris_features)
    assert signature.inputs.input_names() == list(iris_features.columns)
    with pytest.raises(InvalidInputError, match="lacks column 'petal_width'"):
        check_reference_fits(source, iris_features.drop(columns=["petal_width"]))
    wrong_type = iris_features.assign(sepal_length="long")
    with pytest.raises(InvalidInputError, match="'sepal_length' has dtype"):
        check_reference_fits(source, wrong_type)


def test_pickle_signature_is_inferred_from_reference(iris_pickle, iris_features):
    source = resolve_source(str(iris_pickle))
    model = load_pickled_model(source.path)
    signature = check_reference_fits(source, iris_features, model)
    assert signature.inputs.input_names() == list(iris_features.columns)
    with pytest.raises(InvalidInputError, match="lacks column"):
        check_reference_fits(source, pd.DataFrame({"x": ["a", "b"]}), model)
    text = iris_features.astype(str).assign(sepal_length="long")
    with pytest.raises(InvalidInputError, match="predict failed"):
        check_reference_fits(source, text, model)


def test_labels_and_metadata_in_reference_data_are_not_pickle_inputs(
    iris_pickle, iris_frame, mlops_home, monkeypatch
):
    source = resolve_source(str(iris_pickle))
    model = load_pickled_model(source.path)
    columns = list(iris_frame.columns[:4])
    # the estimator was fitted on the four features: its feature_names_in_ decide, wherever the
    # label sits and whatever it is called
    labelled = iris_frame.assign(_request_id="r", prediction=0).rename(columns={"label": "y"})
    assert check_reference_fits(source, labelled, model).inputs.input_names() == columns

    class Bare:  # a model that does not know its columns: labels and metadata are left out
        def predict(self, frame):
            assert list(frame.columns) == columns, frame.columns
            return [0] * len(frame)

    monkeypatch.setenv("MLOPS_REDEPLOY_LABEL_COLUMN", "quality")
    get_settings.cache_clear()
    frame = iris_frame.assign(quality=1, target=2, _ts="t", prediction=0)
    assert check_reference_fits(source, frame, Bare()).inputs.input_names() == columns
    with pytest.raises(InvalidInputError, match=r"lacks column\(s\) \['petal_width'\]"):
        check_reference_fits(source, iris_frame.drop(columns="petal_width"), model)


def test_pickle_requirements_pin_the_model_libraries(iris_estimator):
    import sklearn

    requirements = pickle_requirements(iris_estimator)
    assert f"scikit-learn=={sklearn.__version__}" in requirements
    assert any(r.startswith("numpy==") for r in requirements)
    assert any(r.startswith("mlflow==") for r in requirements)


def test_registered_version_carries_reference_profile_and_suite(registered_model):
    assert registered_model["version"] == "1"
    assert registered_model["aliases"] == ["champion"]
    tags = registered_model["tags"]
    connect()
    reference = pd.read_parquet(mlflow.artifacts.download_artifacts(tags[REFERENCE_TAG]))
    assert len(reference) == 150
    profile = json.loads(Path(mlflow.artifacts.download_artifacts(tags[PROFILE_TAG])).read_text())
    assert set(profile["columns"]) == set(reference.columns)
    suite = json.loads(Path(mlflow.artifacts.download_artifacts(tags[SUITE_TAG])).read_text())
    assert suite["expectations"]


def test_list_filters_by_tag_and_show_by_alias(registered_model):
    assert [v.version for v in list_model_versions("iris", {"team": "risk"})] == ["1"]
    assert list_model_versions("iris", {"team": "other"}) == []
    assert get_model_version("iris", alias="champion").version == "1"
    with pytest.raises(NotFoundError, match="no alias 'nope'"):
        get_model_version("iris", alias="nope")
    with pytest.raises(NotFoundError, match="no version '9'"):
        get_model_version("iris", version="9")
    with pytest.raises(NotFoundError, match="'ghost' is not registered"):
        get_model_version("ghost")


def test_in_use_version_cannot_be_deleted(registered_model):
    client = connect()
    inuse.mark_in_use(client, "iris", "1", "prod", "local:")
    with pytest.raises(InUseError, match=r"version 1 by prod \(local:\)") as exc:
        delete_model_versions("iris", "1")
    assert exc.value.http_status == 409
    with pytest.raises(InUseError):
        delete_model_versions("iris")
    inuse.release(client, "iris", "1", "prod")
    assert delete_model_versions("iris", "1", force=True) == ["1"]  # it holds 'champion'


def test_a_version_holding_an_alias_or_a_rollback_is_deleted_only_with_force(
    registered_model, iris_model_dir
):
    from mlops_pipeline import ledger
    from mlops_pipeline.deployment import Deployment
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from mlops_pipeline.registry import set_model_alias

    v2 = run_flow(register_model, source=str(iris_model_dir), name="iris")["version"]
    v3 = run_flow(register_model, source=str(iris_model_dir), name="iris")["version"]
    set_model_alias("iris", "champion", "1")
    with pytest.raises(ConflictError, match=r"Version 1 of 'iris' holds alias 'champion'\.") as exc:
        delete_model_versions("iris", "1")
    assert exc.value.exit_code == 4 and "--force" in exc.value.hint
    assert get_model_version("iris", version="1").aliases == ["champion"]

    # prod served v2 and now v3: `mlops rollback prod` would return to v2
    for action, version in (("create", v2), ("update", v3)):
        ledger.record_event("prod", action, "succeeded", model_name="iris", to_version=version)
    ledger.upsert_deployment(
        Deployment(
            name="prod",
            target_uri="local:",
            model_name="iris",
            model_version=v3,
            model_uri=f"models:/iris/{v3}",
        )
    )
    with pytest.raises(ConflictError, match="is the rollback version of deployment 'prod'"):
        delete_model_versions("iris", v2)
    with pytest.raises(InUseError):  # --force never deletes what a deployment serves
        delete_model_versions("iris", v3, force=True)

    assert delete_model_versions("iris", v2, force=True) == [v2]
    assert delete_model_versions("iris", "1", force=True) == ["1"]
    ledger.delete_deployment("prod")


def test_register_from_a_run_uri_keeps_the_run(mlops_home, iris_estimator, iris_features):
    from mlflow.models import infer_signature
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from mlops_pipeline.tracking import ensure_experiment

    connect()
    with mlflow.start_run(experiment_id=ensure_experiment("training")) as run:
        mlflow.sklearn.log_model(
            iris_estimator,
            name="model",
            signature=infer_signature(iris_features, iris_estimator.predict(iris_features)),
        )
    registered = run_flow(
        register_model,
        source=f"runs:/{run.info.run_id}/model",
        name="from-run",
        reference_data=None,
    )
    assert registered["version"] == "1"
    loaded = mlflow.pyfunc.load_model("models:/from-run/1")
    assert list(loaded.predict(iris_features.head(3))) == list(
        iris_estimator.predict(iris_features.head(3))
    )
    with pytest.raises(NotFoundError, match="not a loadable MLflow model"):
        run_flow(register_model, source="runs:/0123456789abcdef/model", name="from-run")


@pytest.fixture
def constant_pickle(tmp_path) -> Path:
    import joblib

    from tests.serving.reference_model import ConstantModel

    joblib.dump(ConstantModel(), tmp_path / "constant.joblib")
    return tmp_path / "constant.joblib"


def test_pickle_signature_marks_every_column_with_missing_values_optional(
    constant_pickle, iris_features
):
    """Nullability comes from the whole reference, not from the rows types are inferred from."""
    reference = iris_features.assign(
        kids=pd.array([1] * 149 + [None], dtype="Int64"),
        owner=pd.array([None] + [True] * 149, dtype="boolean"),
    )
    source = resolve_source(str(constant_pickle))
    model = load_pickled_model(source.path)
    signature = check_reference_fits(source, reference, model)
    specs = {spec.name: spec for spec in signature.inputs.inputs}
    assert (specs["kids"].type.name, specs["kids"].required) == ("long", False)
    assert (specs["owner"].type.name, specs["owner"].required) == ("boolean", False)
    assert all(specs[c].required for c in iris_features.columns)


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("waited", pd.to_timedelta(range(150), unit="s")),
        ("notes", pd.Series([None] * 150, dtype=object)),
        ("mixed", pd.Series([1, "a"] * 75, dtype=object)),
    ],
)
def test_pickle_reference_column_without_a_signature_type_is_refused(
    constant_pickle, iris_features, column, values
):
    source = resolve_source(str(constant_pickle))
    model = load_pickled_model(source.path)
    with pytest.raises(InvalidInputError, match=f"column '{column}'") as exc:
        check_reference_fits(source, iris_features.assign(**{column: values}), model)
    assert exc.value.exit_code == 2


def test_mlflow_signature_that_refuses_the_reference_nulls_is_refused(tmp_path):
    """A version whose signature requires `kids` in every row would refuse its own reference."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from sklearn.dummy import DummyClassifier

    frame = pd.DataFrame({"kids": [0, 1, 2, 3], "income": [1.0, 2.0, 3.0, 4.0]})
    estimator = DummyClassifier().fit(frame, [0, 1, 0, 1])
    path = tmp_path / "model"
    required = ModelSignature(Schema([ColSpec("long", "kids"), ColSpec("double", "income")]))
    mlflow.sklearn.save_model(estimator, path, signature=required)
    source = resolve_source(str(path))
    reference = frame.assign(
        kids=pd.array([0, None, 2, 3], dtype="Int64"), income=[1.0, None, 3.0, 4.0]
    )
    with pytest.raises(InvalidInputError, match="column 'kids' has missing values") as exc:
        check_reference_fits(source, reference)
    assert "required=False" in exc.value.hint
    # doubles hold missing values as NaN, and an optional column may hold them
    optional = ModelSignature(
        Schema([ColSpec("long", "kids", required=False), ColSpec("double", "income")])
    )
    mlflow.sklearn.save_model(estimator, tmp_path / "optional", signature=optional)
    assert check_reference_fits(resolve_source(str(tmp_path / "optional")), reference)


def test_model_version_info_is_typed_and_dumps_the_summary_shape(registered_model):
    info = get_model_version("iris", alias="champion")
    assert isinstance(info, ModelVersionInfo)
    assert info.ref == ModelRef("iris", "1")
    assert info.tags["team"] == "risk" and info.deployments == {}
    assert isinstance(info.created, int) and info.status == "READY"
    # the register flow returns it as JSON: the shape `mlops models show --json` always printed
    assert list(registered_model) == [
        "name", "version", "aliases", "tags", "description", "run_id", "source", "created",
        "status", "deployments",
    ]  # fmt: skip
    assert info.model_dump(mode="json") == registered_model
    assert ModelVersionInfo.model_validate(registered_model) == info

    client = connect()
    inuse.mark_in_use(client, "iris", "1", "prod", "local:")
    [listed] = list_model_versions("iris")
    assert listed.deployments == {"prod": "local:"} and listed.aliases == ["champion"]


def test_registered_pickle_loads_without_this_package(
    mlops_home, iris_pickle, iris_reference_csv, iris_features
):
    """The version's code is the copied pickled_model.py: loading it imports nothing of ours."""
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from mlops_pipeline.settings import get_settings

    version = run_flow(
        register_model,
        source=str(iris_pickle),
        name="iris-pickle",
        reference_data=str(iris_reference_csv),
    )["version"]
    connect()
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/iris-pickle/{version}"))
    code = [p.name for p in model_dir.rglob("*.py")]
    assert code == [pickled_model_code().name]
    assert "mlops_pipeline" not in (model_dir / "MLmodel").read_text()

    rows = iris_features.head(5)
    rows.to_csv(model_dir.parent / "rows.csv", index=False)
    script = (
        "import sys; sys.modules['mlops_pipeline'] = None\n"  # any import of ours now fails
        "import json, mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({str(model_dir)!r})\n"
        f"rows = pd.read_csv({str(model_dir.parent / 'rows.csv')!r})\n"
        "print(json.dumps(pd.Series(model.predict(rows)).tolist()))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": get_settings().resolved_tracking_uri}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = load_pickled_model(iris_pickle).predict(rows).tolist()
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected
