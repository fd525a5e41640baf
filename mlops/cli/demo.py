"""`mlops demo`: the whole loop on embedded defaults, summarised as the README shows it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import JsonOption, command, console, emit, run_flow
from mlops_pipeline.cli.registry import render_versions

app = typer.Typer()


@command(app, "demo")
def demo_cmd(
    keep_serving: Annotated[
        bool, typer.Option(help="Leave the demo deployment running at the end.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the whole loop on embedded defaults with a dataset that ships with scikit-learn."""
    from mlops_pipeline.flows.demo import run_demo

    result = run_flow(run_demo, keep_serving=keep_serving)
    emit(result, as_json, render_demo)


def render_demo(result: dict[str, Any]) -> None:
    """Versions, both monitor verdicts, the rejected challenger, the drift-triggered redeploy
    and its canary steps, the failed requests during it, and where to look next."""
    from mlops_pipeline.cli.redeploy import render_decision
    from mlops_pipeline.cli.rollout import render_rollout
    from mlops_pipeline.settings import get_settings

    render_versions(result["versions"])
    before, after = result["monitor_before_drift"], result["monitor_after_drift"]
    console.print(f"normal traffic: drift={before['drift']}")
    console.print("[bold]a quick experiment asks to replace the champion:[/]")
    render_decision(result["rejected_challenger"])
    drifted = ", ".join(after.get("drifted", [])) or "none"
    console.print(f"drifted traffic: drift={after['drift']} (drifted: {drifted})")
    if result["redeploy"]:
        console.print(f"[bold]redeploy[/] by {result['redeploy_trigger']}:")
        render_decision(result["redeploy"])
    if result.get("canary"):
        console.print("[bold]its canary[/] (share of live traffic, challenger vs champion):")
        render_rollout(result["canary"])
    traffic = result["traffic_during_redeploy"]
    colour = "green" if traffic["failed"] == 0 else "red"
    console.print(
        f"failed requests during the redeploy: [bold {colour}]{traffic['failed']}[/] "
        f"of {traffic['requests']}"
    )
    if result["still_serving"]:
        console.print(f"still serving at {result['endpoint_url']} (mlops undeploy wine-demo)")
    console.print("[bold]where to look:[/]")
    if result["prefect_ui"]:
        console.print(f"  Prefect UI (flow runs, events, automations): {result['prefect_ui']}")
    else:
        console.print("  Prefect UI: run `mlops up`, then `mlops demo` again to see the event path")
    tracking = get_settings().resolved_tracking_uri
    console.print(f"  MLflow UI: mlflow ui --backend-store-uri {tracking}", highlight=False)
    # the paths alone on their lines, never wrapped: they are there to be copied or opened
    console.print(f"  drift report: {after.get('report')}", highlight=False, soft_wrap=True)
