"""The register flow as a real Prefect flow run, and in-process as the CLI runs it."""

from __future__ import annotations

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.tracking import connect


def test_flow_run_registers_consecutive_versions(
    prefect_harness, mlops_home, iris_pickle, iris_reference_csv
):
    first = register_model(
        source=str(iris_pickle),
        name="churn",
        tags={"team": "growth"},
        reference_data=str(iris_reference_csv),
    )
    second = register_model(source=str(iris_pickle), name="churn", alias="champion")
    assert (first["version"], second["version"]) == ("1", "2")
    assert first["tags"]["team"] == "growth"
    assert second["aliases"] == ["champion"]


def test_failed_registration_leaves_no_version_or_run(mlops_home, iris_model_dir, tmp_path):
    run_flow(register_model, source=str(iris_model_dir), name="iris")
    bad_reference = tmp_path / "bad.csv"
    bad_reference.write_text("colour\nred\n")
    with pytest.raises(InvalidInputError, match="lacks column"):
        run_flow(
            register_model,
            source=str(iris_model_dir),
            name="iris",
            reference_data=str(bad_reference),
        )
    with pytest.raises(InvalidInputError, match="alias"):
        run_flow(register_model, source=str(iris_model_dir), name="iris", alias="v2")
    client = connect()
    assert [str(mv.version) for mv in client.search_model_versions("name='iris'")] == ["1"]
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=""
    )
    assert len(runs) == 1


def test_nullable_reference_columns_become_optional_in_the_version(mlops_home, tmp_path):
    """Parquet with nullable Int64 `kids` and boolean `owner`: the version takes null there."""
    import joblib
    import mlflow
    import pandas as pd

    from tests.serving.reference_model import DtypeStrictModel

    reference = pd.DataFrame(
        {
            "kids": pd.array([None, 2, 1, 0], dtype="Int64"),
            "owner": pd.array([None, True, False, True], dtype="boolean"),
            "income": [1.0, 2.0, 3.0, 4.0],
        }
    )
    reference.to_parquet(tmp_path / "reference.parquet", index=False)
    model = DtypeStrictModel().fit(pd.read_parquet(tmp_path / "reference.parquet"))
    joblib.dump(model, tmp_path / "model.joblib")
    registered = run_flow(
        register_model,
        source=str(tmp_path / "model.joblib"),
        name="household",
        reference_data=str(tmp_path / "reference.parquet"),
    )
    connect()
    loaded = mlflow.pyfunc.load_model(f"models:/household/{registered['version']}")
    specs = {s.name: (s.type.name, s.required) for s in loaded.metadata.get_input_schema().inputs}
    assert specs == {
        "kids": ("long", False),
        "owner": ("boolean", False),
        "income": ("double", True),
    }
    # the registered wrapper hands the model its own dtypes, even from plain numpy/object input
    plain = pd.DataFrame(
        {
            "kids": [None, 2.0, 1.0, 0.0],
            "owner": [None, True, False, True],
            "income": [1.0, 2, 3, 4],
        }
    )
    assert loaded.unwrap_python_model().predict(None, plain).tolist() == (
        model.predict(reference).tolist()
    )


def test_a_model_dir_saved_outside_a_run_names_its_registration_run(mlops_home, iris_model_dir):
    """The version's MLmodel names the run it was logged to, so the service's /version (and
    MLflow's UI) can link a served model to its run; the source directory is not changed."""
    import mlflow
    from mlflow.models import Model

    assert Model.load(str(iris_model_dir)).run_id is None  # `save_model` outside a run
    registered = run_flow(register_model, source=str(iris_model_dir), name="iris")
    version = connect().get_model_version("iris", registered["version"])
    local = mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/model/MLmodel")
    assert Model.load(local).run_id == version.run_id
    loaded = mlflow.pyfunc.load_model(f"models:/iris/{registered['version']}")
    assert loaded.metadata.run_id == version.run_id
    assert Model.load(str(iris_model_dir)).run_id is None
