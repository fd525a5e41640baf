"""Deployment spec commands: `spec schema`, `diff --spec FILE`; `deploy --spec FILE` (in
`cli/deploy.py`) calls `deploy_from_spec` here.

Exit codes of `diff` follow diff(1) and `git diff --exit-code`: 0 no changes, 1 changes, and an
error's own code otherwise (2 an invalid spec, 3 a model or file not found, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import JsonOption, command, console, emit, run_flow

app = typer.Typer()
spec_app = typer.Typer(
    help="Deployment spec files (`mlops deploy --spec deploy.yaml`).", no_args_is_help=True
)
app.add_typer(spec_app, name="spec")

SpecOption = Annotated[
    Path,
    typer.Option(
        "--spec",
        help="Deployment spec file (YAML; `mlops spec schema` prints its JSON Schema).",
        dir_okay=False,
    ),
]


@command(spec_app, "schema")
def schema_cmd(as_json: JsonOption = False) -> None:
    """Print the spec's JSON Schema, e.g. `mlops spec schema > deploy.schema.json`, for editors
    (`# yaml-language-server: $schema=deploy.schema.json` as a spec's first line)."""
    from mlops_pipeline.spec.model import json_schema

    schema = json_schema()
    emit(schema, as_json, lambda s: typer.echo(json.dumps(s, indent=2)))


def _show(value: Any) -> str:
    return "-" if value is None else json.dumps(value) if not isinstance(value, str) else value


def render_changes(result: dict[str, Any], verb: str) -> None:
    """`iris: 2 changes (update)` then one `  field: current → desired` line per change."""
    changes = result["changes"]
    if not changes:
        console.print(f"[bold]{result['name']}[/]: no changes", highlight=False)
        return
    count = f"{len(changes)} change{'s' if len(changes) != 1 else ''}"
    console.print(f"[bold]{result['name']}[/]: {verb} ({count})", highlight=False)
    for change in changes:
        note = " (recorded)" if change["effect"] == "record" else ""
        console.print(
            f"  {change['field']}: {_show(change['current'])} → {_show(change['desired'])}{note}",
            highlight=False,
            markup=False,
        )


VERBS = {
    "create": "would be created",
    "update": "would be updated",
    "record": "settings would be recorded",
    "replace": "would need re-creating (undeploy first)",
    "none": "no changes",
}
DONE = {
    "create": "created",
    "update": "updated",
    "record": "settings recorded",
    "none": "no changes",
}


@command(app, "diff")
def diff_cmd(spec: SpecOption, as_json: JsonOption = False) -> None:
    """Show what `mlops deploy --spec FILE` would change, field by field (current → desired).

    Exit 0 when the deployment matches the file, 1 when something would change; other codes
    are errors (2 an invalid spec, with `file:line: field:`; 3 a model not found; ...).
    """
    from mlops_pipeline.spec.load import load_spec
    from mlops_pipeline.tasks.spec import plan_for

    loaded = load_spec(spec)
    planned, _ = plan_for(loaded)
    result = planned.model_dump(mode="json") | {"changed": planned.changed}
    emit(result, as_json, lambda r: render_changes(r, VERBS[r["action"]]))
    if planned.changed:
        raise typer.Exit(1)


def deploy_from_spec(ctx: typer.Context, spec: Path, as_json: bool) -> None:
    """`mlops deploy --spec FILE`: apply the file through the `apply-spec` flow.

    Settings come only from the file, so a MODEL_URI or another setting option is refused.
    Applying a file that matches the deployment changes nothing and says `no changes`.
    """
    from mlops_pipeline.errors import InvalidInputError
    from mlops_pipeline.flows.spec import apply_spec

    given = [
        name
        for name in ctx.params
        if name not in {"spec", "as_json"}
        and getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
    ]
    if given:
        raise InvalidInputError(
            f"--spec takes every setting from the file; {', '.join(given)} given as well.",
            hint="Put the setting in the spec file, or deploy without --spec.",
            field=given[0],
        )
    result = run_flow(apply_spec, spec_file=str(spec.expanduser().resolve()))
    emit(result, as_json, render_applied)


def render_applied(result: dict[str, Any]) -> None:
    """What was done, field by field, then the deployment's line (endpoint and status)."""
    from mlops_pipeline.cli.deploy import render_deployment

    render_changes(result, DONE[result["action"]])
    if result.get("deployment"):
        render_deployment(result["deployment"])
