"""Monitoring commands: `mlops monitor` (a deployment's captures) and `mlops drift` (two files).

Both print the same verdict: a table of columns with their test, score, shift and null rates,
then what drifted or could not be compared, validation results and the HTML report's path.
Drift settings come from a JSON file (`--config`) plus options, checked by DriftConfig.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import (
    JsonOption,
    command,
    console,
    emit,
    err_console,
    finite,
    print_table,
    run_flow,
)

app = typer.Typer()


def drift_config(config_file: str | None, min_samples: int | None) -> Any:
    """Drift settings (a checked monitoring.drift_settings.DriftConfig) from a JSON file plus CLI
    overrides; a wrong key, type or value is exit 2 naming the setting, value and type."""
    from pathlib import Path

    from mlops_pipeline.errors import InvalidInputError, NotFoundError
    from mlops_pipeline.monitoring.drift_settings import DriftConfig

    settings: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise NotFoundError(f"--config file '{config_file}' does not exist.")
        try:
            settings = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"--config file '{config_file}' is not valid JSON: {exc}.",
                hint='Write e.g. {"alpha": 0.01, "features": {"age": {"psi": 0.2}}}.',
            ) from exc
        if not isinstance(settings, dict):
            raise InvalidInputError(f"--config file '{config_file}' must hold a JSON object.")
    if min_samples is not None:
        settings["min_samples"] = min_samples
    source = f"setting in --config file '{config_file}'" if config_file else "drift setting"
    return DriftConfig.parse(settings, source)


def render_drift(result: dict[str, Any]) -> None:
    """A drift verdict as a per-column table, then what drifted, validation and the report."""
    if result.get("status") == "no_new_data":
        console.print(f"No new capture files for {result['deployment']}.")
        return

    def number(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:.3g}{unit}"

    rows = []
    for f in result["features"]:
        nulls = "-"
        if f.get("null_rate_current") is not None:
            nulls = f"{f['null_rate_reference']:.1%} -> {f['null_rate_current']:.1%}"
        rows.append(
            [
                f["name"],
                f.get("role", "-"),
                f["status"],
                f["method"] or "-",
                number(f["score"]),
                number(f.get("wasserstein_sd"), " sd"),
                nulls,
                number(f["p_value"]),
            ]
        )
    print_table(
        ["column", "role", "status", "method", "PSI", "shift", "nulls", "p (corrected)"],
        rows,
        styles=[
            "bold red" if f["drifted"] or f["status"] == "incompatible" else None
            for f in result["features"]
        ],
    )
    for f in result["features"]:
        if f["status"] == "incompatible":
            console.print(f"[bold red]Incompatible[/] {f['name']}: {f.get('reason')}.")
    if result["drift"]:
        console.print(f"[bold red]Drift[/] in {', '.join(result['drifted'])}")
    if result.get("incompatible"):
        console.print(
            f"[bold red]Not comparable:[/] {', '.join(result['incompatible'])} cannot be read "
            "as the kind the reference recorded."
        )
    elif result.get("status") == "insufficient_data":
        wanted = (result.get("config") or {}).get("min_samples")
        console.print(
            "[yellow]Not tested:[/] no column has "
            + (f"{wanted} " if wanted else "enough ")
            + "non-null values on both sides yet, so nothing was compared; capture more "
            "requests, or lower --min-samples.",
            soft_wrap=True,
        )
    elif not result["drift"]:
        short = sum(f["status"] == "insufficient_data" for f in result["features"])
        console.print(
            "[green]No drift.[/]"
            + (f" ({short} column(s) had too little data to test.)" if short else "")
        )
    validation = result.get("validation")
    if validation:
        console.print(
            f"Validation failure rate {validation['failure_rate']:.1%}, "
            f"{len(validation['quarantined'])} file(s) quarantined."
        )
    if result.get("report"):
        console.print(f"Report: {result['report']}")


@command(app, "monitor")
def monitor_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    since: Annotated[
        str | None,
        typer.Option(
            help="Re-analyse a window: 24h, 7d or an ISO time (default: new files since the "
            "last run).",
            show_default=False,
        ),
    ] = None,
    capture_uri: Annotated[
        str | None, typer.Option(help="Read captures here instead of the deployment's URI.")
    ] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(help="models:/NAME/VERSION to compare with, instead of the ledger's."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            help="JSON file with drift settings and per-feature thresholds (default: the "
            "deployment spec's monitoring.drift, else the defaults)."
        ),
    ] = None,
    min_samples: Annotated[
        int | None, typer.Option(min=1, help="Rows needed before a column is tested.")
    ] = None,
    cooldown_hours: Annotated[
        float,
        typer.Option(parser=finite(min=0.0), help="Hours before one drift episode re-signals."),
    ] = 24.0,
    task_runner: Annotated[
        str | None,
        typer.Option(
            help="Summarise the captures one file per task: threads, dask (a local Dask "
            "cluster) or dask:ADDRESS (a scheduler). Drift only, no GX suite. Default: read "
            "the window into one frame.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate and drift-test what deployment NAME captured; signal drift (exit 0 either way)."""
    from mlops_pipeline.flows.monitor import monitor_flow_for

    with err_console.status(f"Validating and drift-testing what {name} captured..."):
        result = run_flow(
            monitor_flow_for(task_runner),
            task_runner=task_runner,
            deployment=name,
            window=since,
            capture_uri=capture_uri,
            model_uri=model_uri,
            # neither given: the deployment's spec (`monitoring.drift`) or the defaults apply
            drift_config=drift_config(config, min_samples) if config or min_samples else None,
            cooldown_hours=cooldown_hours,
        )
    emit(result, as_json, render_drift)


@command(app, "drift")
def drift_cmd(
    reference: Annotated[str, typer.Option(help="Reference data (CSV or Parquet).")],
    current: Annotated[str, typer.Option(help="Current data (CSV or Parquet).")],
    report: Annotated[
        str | None, typer.Option(help="Write an HTML report with per-column plots here.")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="JSON file with drift settings and per-feature thresholds.")
    ] = None,
    min_samples: Annotated[
        int | None, typer.Option(min=1, help="Rows needed before a column is tested.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Compare two CSV/Parquet files column by column; exit 0 whether or not they drift."""
    from pathlib import Path

    from mlops_pipeline.monitoring.drift import compare_frames, json_safe
    from mlops_pipeline.monitoring.profile import infer_kinds
    from mlops_pipeline.monitoring.tables import read_table_file
    from mlops_pipeline.serving.contract import is_prediction_column

    settings = drift_config(config, min_samples)
    reference_frame = read_table_file(reference, option="--reference")
    current_frame = read_table_file(current, option="--current")
    common = [c for c in reference_frame.columns if c in current_frame.columns]
    if not common:
        from mlops_pipeline.errors import InvalidInputError

        raise InvalidInputError(
            f"'{reference}' and '{current}' have no columns in common.",
            hint=f"'{reference}' has {list(reference_frame.columns)[:10]}; "
            f"'{current}' has {list(current_frame.columns)[:10]}.",
        )
    predictions = [c for c in common if is_prediction_column(c)]
    verdict = json_safe(
        compare_frames(
            reference_frame,
            current_frame,
            columns=common,
            prediction_columns=predictions,
            config=settings,
            # no registered profile here: each column's kind is decided from the reference
            kinds=infer_kinds(reference_frame[common]),
        )
    )
    if report:
        from mlops_pipeline.monitoring.report import write_report

        verdict["report"] = str(
            write_report(verdict, Path(report), f"Drift: {reference} vs {current}").resolve()
        )
    for feature in verdict["features"]:
        feature.pop("plot", None)
    emit(verdict, as_json, render_drift)
