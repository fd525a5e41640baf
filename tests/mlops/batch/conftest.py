"""Batch fixtures: the registered iris model, and landing files in Parquet and CSV."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import IRIS_COLUMNS


@pytest.fixture(scope="module")
def iris_registry(tmp_path_factory, iris_model_dir: Path, iris_reference_csv: Path):
    """One MLOPS_HOME per test module holding `iris` version 1 (registering takes seconds)."""
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from mlops_pipeline.settings import get_settings

    home = tmp_path_factory.mktemp("batch-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_HOME", str(home))
        for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLOPS_LEDGER_URI"):
            patch.delenv(var, raising=False)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        get_settings.cache_clear()
        run_flow(
            register_model,
            source=str(iris_model_dir),
            name="iris",
            reference_data=str(iris_reference_csv),
        )
    get_settings.cache_clear()
    return home


@pytest.fixture
def iris_model(iris_registry: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """`iris` version 1 in the module's registry (this test's MLOPS_HOME), and its predict."""
    from mlops_pipeline.settings import get_settings
    from mlops_pipeline.tracking import connect

    monkeypatch.setenv("MLOPS_HOME", str(iris_registry))
    for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLOPS_LEDGER_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    get_settings.cache_clear()
    connect()
    model = mlflow.pyfunc.load_model("models:/iris/1")
    yield {"uri": "models:/iris/1", "predict": model.predict, "home": iris_registry}
    get_settings.cache_clear()


@pytest.fixture
def landing(tmp_path: Path, iris_features: pd.DataFrame) -> Path:
    """a.parquet (rows 0-99 with an id) and b.csv (rows 100-149), all valid."""
    folder = tmp_path / "landing"
    folder.mkdir()
    frame = iris_features.assign(id=[f"r{i}" for i in range(len(iris_features))])
    frame.iloc[:100].to_parquet(folder / "a.parquet", index=False)
    frame.iloc[100:].to_csv(folder / "b.csv", index=False)
    return folder


def expected_predictions(iris_model: dict, frame: pd.DataFrame) -> list:
    return list(iris_model["predict"](frame[IRIS_COLUMNS]))
