"""Batch scoring command: `mlops score-batch`, for analytics (files in, scored files out).

It runs the `score-batch` flow; a progress bar on stderr shows rows scored and rows/s while it
runs (not with --json or when stderr is not a terminal). Exit codes: 0 scored, 2 bad input (an
unreadable or empty file, a missing column or one of the wrong type), 3 input or model not
found, 5 the model or output could not be reached, 8 more rejected rows than --error-threshold
or the model failed on the input, 130 interrupted (Ctrl+C), 143 terminated (SIGTERM); the
files scored so far are kept either way.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import (
    JsonOption,
    command,
    console,
    emit,
    err_console,
    run_flow,
    sigterm_as_interrupt,
    stopped_by,
)

app = typer.Typer()


def render_result(result: dict[str, Any]) -> None:
    """What was scored, how fast, and where the output and rejects are."""
    from datetime import datetime

    seconds = (
        datetime.fromisoformat(result["finished_at"]) - datetime.fromisoformat(result["started_at"])
    ).total_seconds()
    rate = result["rows_read"] / seconds if seconds > 0 else 0.0
    console.print(
        f"Scored {result['rows_scored']:,} rows with {result['model_uri']} "
        f"({result['rows_rejected']:,} rejected) from {result['files_scored']} file(s) in "
        f"{seconds:.1f} s ({rate:,.0f} rows/s); {result['files_skipped']} file(s) were already "
        "scored.",
        highlight=False,
    )
    rejects = [f["rejects"] for f in result["files"] if f.get("rejects")]
    if rejects:
        console.print(f"Rejected rows and why: {', '.join(rejects)}", highlight=False)
    console.print(f"Output: {result['output']} (manifest: _SUCCESS)", highlight=False)


# typer keeps a docstring's line breaks after its first paragraph, which then break lines
# mid-sentence at any width but the one they were written for: one line per paragraph here
_HELP = "\n\n".join(
    [
        "Score files with a registered model version, in bounded memory, into OUTPUT.",
        "Rows that fail the model signature go to OUTPUT/_rejects with the reason. A rerun "
        "skips the input files already scored for the same model version (a file changed "
        "since is scored again). `_SUCCESS`, written last, describes the whole folder.",
        "Exit codes: 0 ok, 2 bad input, 3 not found, 5 backend, 8 too many rejected rows, "
        "130 interrupted (Ctrl+C), 143 terminated (SIGTERM).",
    ]
)


@command(app, "score-batch", help=_HELP)
def score_batch_cmd(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION, @ALIAS or /latest.")],
    input: Annotated[
        str,
        typer.Option(
            "--input", help="CSV or Parquet file, folder or glob (local path or fsspec URI)."
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", help="Output folder (local path or fsspec URI).")
    ],
    format: Annotated[
        str, typer.Option("--format", help="Output format: parquet or csv.")
    ] = "parquet",
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows per chunk; memory grows with it, not the input.")
    ] = 100_000,
    id_column: Annotated[
        list[str] | None,
        typer.Option(
            "--id-column",
            help="Keep only this input column (repeatable) beside the predictions; "
            "default: all input columns.",
            show_default=False,
        ),
    ] = None,
    error_threshold: Annotated[
        int, typer.Option(min=0, help="Most rejected rows tolerated; one more fails the run.")
    ] = 0,
    capture_uri: Annotated[
        str | None,
        typer.Option(help="Also write inputs+predictions in the capture layout here."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """`mlops score-batch` (its help text is `_HELP`)."""
    from mlops_pipeline.batch import progress_listener
    from mlops_pipeline.errors import InvalidInputError
    from mlops_pipeline.flows.batch import score_batch
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if format not in ("parquet", "csv"):
        raise InvalidInputError(
            f"--format {format} is not an output format.",
            hint="Use --format parquet or --format csv.",
            field="format",
            value=format,
        )
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    task = progress.add_task("score", total=None, rate="")

    def advance(rows: int) -> None:
        progress.advance(task, rows)
        speed = progress.tasks[0].speed
        progress.update(task, rate=f"{speed:,.0f} rows/s" if speed else "")

    # schedulers, systemd and Kubernetes stop a job with SIGTERM: the same clean stop as Ctrl+C
    try:
        with sigterm_as_interrupt(), progress, progress_listener(advance):
            result = run_flow(
                score_batch,
                model_uri=model_uri,
                input=input,
                output=output,
                format=format,
                chunk_rows=chunk_rows,
                id_columns=id_column or None,
                error_threshold=error_threshold,
                capture_uri=capture_uri,
            )
    except KeyboardInterrupt as stop:
        # the run removed _SUCCESS first and renames a part only when its file is done, so
        # the folder holds whole files and no manifest: this line says exactly that
        how, code = stopped_by(stop)
        err_console.print(
            f"{how}: no _SUCCESS written; rerun to finish (files already scored are kept).",
            highlight=False,
        )
        raise typer.Exit(code) from None
    emit(result, as_json, render_result)
