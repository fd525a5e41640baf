"""Flow: the whole loop on embedded defaults, as `make demo` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.register import register_model
from tasks.demo import train_demo_models
from tasks.registry import delete_model_versions, list_model_versions

DEMO_MODEL = "wine-demo"


@flow(name="demo")
def run_demo(workdir: Path = Path(".mlops/demo")) -> dict[str, Any]:
    """Train two models, register them as versions 1 and 2 of one name, and list them."""
    data = train_demo_models(workdir)
    if list_model_versions(DEMO_MODEL):
        delete_model_versions(DEMO_MODEL)  # each demo run starts the model's history afresh
    first = register_model(
        source=str(data.logreg_model_dir),
        name=DEMO_MODEL,
        tags={"dataset": "wine", "algorithm": "logistic_regression"},
        description="Scaled logistic regression",
        reference_data=str(data.reference_csv),
        alias="champion",
    )
    second = register_model(
        source=str(data.forest_pickle),
        name=DEMO_MODEL,
        tags={"dataset": "wine", "algorithm": "random_forest"},
        description="Random forest trained outside MLflow (joblib pickle)",
        reference_data=str(data.reference_csv),
        alias="challenger",
    )
    return {
        "model": DEMO_MODEL,
        "registered": [first["version"], second["version"]],
        "versions": list_model_versions(DEMO_MODEL),
    }
