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
