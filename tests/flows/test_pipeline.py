"""`mlops_pipeline`: one run registers, deploys, monitors and redeploys, on real local services."""

from __future__ import annotations

from pathlib import Path

import joblib
import pandas as pd
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.pipeline import mlops_pipeline
from mlops_pipeline.registry.versions import get_model_version

from tests.flows.redeploy_support import strong_model, weak_model
from tests.targets.local_support import served_version


def test_first_run_deploys_a_champion_and_the_next_run_gates_the_new_version(
    undeploy_all, mlops_home: Path, tmp_path: Path, iris_frame: pd.DataFrame
) -> None:
    reference = tmp_path / "reference.csv"
    iris_frame.to_csv(reference, index=False)
    weak, strong = tmp_path / "weak.joblib", tmp_path / "strong.joblib"
    joblib.dump(weak_model(iris_frame), weak)
    joblib.dump(strong_model(iris_frame), strong)
    params = {"name": "iris", "reference_data": str(reference), "bake_seconds": 0}

    first = run_flow(mlops_pipeline, source=str(weak), **params)

    assert first["registered"]["version"] == "1" and first["redeploy"] is None
    deployed = first["deployed"]
    assert deployed["name"] == "iris" and deployed["capture_uri"] == str(
        mlops_home.resolve() / "captures" / "iris"
    )
    assert get_model_version("iris", version="1").aliases == ["champion"]
    assert first["monitor"]["status"] == "no_new_data" and first["drift_redeploy"] is None

    second = run_flow(mlops_pipeline, source=str(strong), **params)

    assert second["deployed"] is None
    decision = second["redeploy"]
    assert decision["decision"] == "promoted", decision["reason"]
    assert decision["challenger"]["version"] == "2" and decision["champion"]["version"] == "1"
    assert served_version(deployed["endpoint_url"]) == "2"
    assert get_model_version("iris", version="2").aliases == ["champion"]

    # a worse version through the pipeline is turned down and the champion keeps serving
    third = run_flow(mlops_pipeline, source=str(weak), **params)
    assert third["redeploy"]["decision"] == "rejected"
    assert served_version(deployed["endpoint_url"]) == "2"
