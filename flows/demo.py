"""Flow: the whole loop on embedded defaults, as `make demo` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy, undeploy
from mlops_pipeline.flows.monitor import monitor_deployment
from mlops_pipeline.flows.redeploy import redeploy
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.tasks.demo import (
    SteadyTraffic,
    clear_captures,
    last_decision_id,
    rollout_after,
    send_demo_traffic,
    train_demo_models,
    wait_for_captures,
    wait_for_redeploy,
)
from mlops_pipeline.tasks.deploy import list_deployments
from mlops_pipeline.tasks.orchestration import deployment_served, get_logger, prefect_ui_url
from mlops_pipeline.tasks.registry import delete_model_versions, list_model_versions
from prefect import flow

DEMO_MODEL = "wine-demo"
DEMO_DEPLOYMENT = "wine-demo"
# the event-triggered redeploy that `mlops up` serves (flows/deployments.py)
REDEPLOY_DEPLOYMENT = "redeploy/redeploy"


@flow(name="demo")
def run_demo(
    workdir: Path = Path(".mlops/demo"), keep_serving: bool = False, bake_seconds: float = 33.0
) -> dict[str, Any]:
    """Serve a champion, turn down a weak challenger at the gate, watch drift appear, and let
    the drift event redeploy a retrained challenger under load (0 failed requests).

    Called directly (no Prefect server serving the flows), the redeploy judges the challenger
    live after the offline gate: a canary of 10, 50 and 100 % of the traffic, `bake_seconds`
    in all, whose steps the result carries under `canary`. Each step lasts over twice the
    rollout warm-up (MLOPS_ROLLOUT_WARMUP_SECONDS, 5 s), so the new process's first slow
    answers stay out of its p95; two clients keep enough requests on the 10 % step."""
    log = get_logger(__name__)
    workdir = workdir.resolve()
    data = train_demo_models(workdir)
    # each demo run starts afresh: its deployment and model history from last time go
    if any(d["name"] == DEMO_DEPLOYMENT for d in list_deployments()):
        run_flow(undeploy, name=DEMO_DEPLOYMENT, reason="demo restart")
    if list_model_versions(DEMO_MODEL):
        delete_model_versions(DEMO_MODEL)
    captures = workdir / "captures"
    clear_captures(captures)

    register(data.champion_model_dir, data.reference_csv, "Scaled logistic regression", "champion")
    served = run_flow(
        deploy,
        model_uri=f"models:/{DEMO_MODEL}@champion",
        name=DEMO_DEPLOYMENT,
        target="local:",
        capture_uri=str(captures),
    )
    endpoint = served["endpoint_url"]
    sent = send_demo_traffic(endpoint, data.traffic_csv)
    wait_for_captures(captures, sent["rows"], sent["labels"])
    healthy = run_flow(monitor_deployment, deployment=DEMO_DEPLOYMENT)

    log.info("a quick experiment asks to replace the champion: the gate decides")
    quick = register(
        data.quick_experiment_pickle, data.reference_csv, "Depth-1 decision tree (quick experiment)"
    )
    rejected = run_flow(
        redeploy,
        name=DEMO_DEPLOYMENT,
        challenger=f"models:/{DEMO_MODEL}/{quick}",
        reason="demo: a quick experiment",
        bake_seconds=0,
    )

    log.info("a new grape supplier: drifted traffic, labelled by the lab afterwards")
    drift_sent = send_demo_traffic(endpoint, data.drifted_traffic_csv)
    wait_for_captures(
        captures, sent["rows"] + drift_sent["rows"], sent["labels"] + drift_sent["labels"]
    )
    # the team's retrained model waits under the alias `challenger` for the next drift episode
    register(
        data.retrained_pickle,
        data.retrained_reference_csv,
        "Logistic regression retrained with the new supplier's labelled wine",
        "challenger",
    )
    before_redeploy = last_decision_id(DEMO_DEPLOYMENT)
    with SteadyTraffic(endpoint, data.traffic_csv, clients=2) as traffic:
        drifted = run_flow(monitor_deployment, deployment=DEMO_DEPLOYMENT)
        decision, trigger = None, "none (no drift)"
        episode_id = (drifted.get("event") or {}).get("episode_id")
        if drifted["drift"] and episode_id and deployment_served(REDEPLOY_DEPLOYMENT):
            log.info("drift event sent; waiting for the automation's redeploy flow run")
            decision = wait_for_redeploy(DEMO_DEPLOYMENT, episode_id, REDEPLOY_DEPLOYMENT)
            trigger = "event: mlops.drift.detected -> automation -> redeploy deployment"
        if drifted["drift"] and decision is None:
            # no Prefect server serving the flows: the same flow, gate and bake, called directly
            decision = run_flow(
                redeploy,
                name=DEMO_DEPLOYMENT,
                reason=f"drift detected: {', '.join(drifted['drifted'])}",
                episode_id=episode_id,
                bake_seconds=bake_seconds,
                live_gate="canary",
            )
            trigger = "direct call of the redeploy flow (no Prefect server serving the flows)"
    canary = rollout_after(DEMO_DEPLOYMENT, before_redeploy)
    if not keep_serving:
        run_flow(undeploy, name=DEMO_DEPLOYMENT, reason="demo finished")
    return {
        "model": DEMO_MODEL,
        "endpoint_url": endpoint,
        "monitor_before_drift": healthy,
        "rejected_challenger": rejected,
        "monitor_after_drift": drifted,
        "redeploy_trigger": trigger,
        "redeploy": decision,
        "canary": canary,
        "traffic_during_redeploy": {
            "requests": traffic.requests,
            "failed": traffic.failed,
            "statuses": {str(k): v for k, v in traffic.statuses.items()},
        },
        "prefect_ui": prefect_ui_url(),
        "still_serving": keep_serving,
        "versions": [v.model_dump(mode="json") for v in list_model_versions(DEMO_MODEL)],
    }


def register(source: Path, reference: Path, description: str, alias: str | None = None) -> str:
    """Register a demo model as the next version of wine-demo; returns its version."""
    registered = run_flow(
        register_model,
        source=str(source),
        name=DEMO_MODEL,
        tags={"dataset": "wine"},
        description=description,
        reference_data=str(reference),
        alias=alias,
    )
    return registered["version"]
