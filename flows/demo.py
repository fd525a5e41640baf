"""Flow: the whole loop on embedded defaults, as `make demo` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy, undeploy, update_deployment
from mlops_pipeline.flows.monitor import monitor_deployment
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.tasks.demo import (
    clear_captures,
    send_demo_traffic,
    train_demo_models,
    wait_for_captures,
)
from mlops_pipeline.tasks.deploy import list_deployments
from mlops_pipeline.tasks.registry import delete_model_versions, list_model_versions
from prefect import flow

DEMO_MODEL = "wine-demo"
DEMO_DEPLOYMENT = "wine-demo"


@flow(name="demo")
def run_demo(workdir: Path = Path(".mlops/demo"), keep_serving: bool = False) -> dict[str, Any]:
    """Register two versions, serve the champion, watch drift appear, switch to the challenger."""
    workdir = workdir.resolve()
    data = train_demo_models(workdir)
    # each demo run starts afresh: its deployment and model history from last time go
    if any(d["name"] == DEMO_DEPLOYMENT for d in list_deployments()):
        run_flow(undeploy, name=DEMO_DEPLOYMENT, reason="demo restart")
    if list_model_versions(DEMO_MODEL):
        delete_model_versions(DEMO_MODEL)
    captures = workdir / "captures"
    clear_captures(captures)

    run_flow(
        register_model,
        source=str(data.logreg_model_dir),
        name=DEMO_MODEL,
        tags={"dataset": "wine", "algorithm": "logistic_regression"},
        description="Scaled logistic regression",
        reference_data=str(data.reference_csv),
        alias="champion",
    )
    run_flow(
        register_model,
        source=str(data.forest_pickle),
        name=DEMO_MODEL,
        tags={"dataset": "wine", "algorithm": "random_forest"},
        description="Random forest trained outside MLflow (joblib pickle)",
        reference_data=str(data.reference_csv),
        alias="challenger",
    )

    served = run_flow(
        deploy,
        model_uri=f"models:/{DEMO_MODEL}@champion",
        name=DEMO_DEPLOYMENT,
        target="local:",
        capture_uri=str(captures),
    )
    sent = send_demo_traffic(served["endpoint_url"], data.traffic_csv)
    wait_for_captures(captures, sent["rows"])
    healthy = run_flow(monitor_deployment, deployment=DEMO_DEPLOYMENT)
    drift_sent = send_demo_traffic(served["endpoint_url"], data.drifted_traffic_csv, feedback=False)
    wait_for_captures(captures, sent["rows"] + drift_sent["rows"])
    drifted = run_flow(monitor_deployment, deployment=DEMO_DEPLOYMENT)
    updated = None
    if drifted["drift"]:
        updated = run_flow(
            update_deployment,
            name=DEMO_DEPLOYMENT,
            model_uri=f"models:/{DEMO_MODEL}@challenger",
            reason="drift detected",
        )
    if not keep_serving:
        run_flow(undeploy, name=DEMO_DEPLOYMENT, reason="demo finished")
    return {
        "model": DEMO_MODEL,
        "endpoint_url": served["endpoint_url"],
        "monitor_before_drift": healthy,
        "monitor_after_drift": drifted,
        "updated_to_version": updated["model_version"] if updated else None,
        "still_serving": keep_serving,
        "versions": [v.model_dump(mode="json") for v in list_model_versions(DEMO_MODEL)],
    }
