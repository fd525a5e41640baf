"""`mlops demo`: the whole loop on embedded defaults, summarised as the README shows it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import JsonOption, command, console, emit
from mlops_pipeline.cli.registry import render_versions
from mlops_pipeline.flows import run_flow

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
    """The versions, each monitor verdict with its report path, and what the demo switched."""
    render_versions(result["versions"])
    for label, key in (
        ("normal traffic", "monitor_before_drift"),
        ("drifted traffic", "monitor_after_drift"),
    ):
        verdict = result[key]
        drifted = ", ".join(verdict.get("drifted", [])) or "none"
        console.print(f"{label}: drift={verdict['drift']} (drifted: {drifted})")
        # the path alone on its line, never wrapped: it is there to be copied or opened
        console.print(f"  report: {verdict.get('report')}", highlight=False)
    if result["updated_to_version"]:
        console.print(f"deployment switched to version {result['updated_to_version']} (challenger)")
    if result["still_serving"]:
        console.print(f"still serving at {result['endpoint_url']} (mlops undeploy wine-demo)")
