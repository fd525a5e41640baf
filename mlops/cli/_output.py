"""What every command shares: the error contract, JSON or human output, tables and times.

* `command(typer_app, name)` registers a command so that an error becomes one stderr line and
  its exit code (`mlops_pipeline.errors`), plus `{"error": {...}}` on stdout under `--json`;
  with `--debug` or MLOPS_DEBUG=1 the traceback shows instead.
* `run_flow` runs a step; in a command, a failed step's Prefect error records stay off the
  terminal (the one error line says it; the Prefect UI keeps the traceback) unless `--debug`.
* `show_progress(*loggers)` shows those loggers' INFO records on stderr while a command runs.
* `emit(result, as_json, render)` prints a result as JSON for scripts or through `render`.
* `print_table` and `format_time` print rows and times without cutting any value short.
* `console` (stdout) and `err_console` (stderr) are soft-wrapped: rich never breaks a line of
  free text, so a path or URL in it stays whole and can be copied.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from mlops_pipeline.errors import MLOpsError
from mlops_pipeline.settings import get_settings
from rich.console import Console

# soft_wrap: free-text lines are never broken by rich, so a path or URL in them stays one line
# that can be copied (the terminal wraps it only visually); tables lay out their own cells.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON result on stdout.")]


def port_option(what: str, variable: str, default: int, *names: str) -> Any:
    """A `--port`-style option (1-65535, None when not given) whose help names the environment
    VARIABLE and the DEFAULT that apply without it; NAMES are the option's flags, if not derived
    from the parameter."""
    return typer.Option(
        *names,
        min=1,
        max=65535,
        help=f"Port of {what} (env {variable}; default {default}).",
        show_default=False,
    )


# `--debug` of the running invocation, set by the app's callback (see `traceback_wanted`)
_debug_option = False


def remember_debug_option(debug: bool) -> None:
    """Record `--debug` for `traceback_wanted`, which must work when the settings do not load."""
    global _debug_option
    _debug_option = debug


def traceback_wanted() -> bool:
    """Whether an error shows its traceback: `--debug`, or the setting MLOPS_DEBUG."""
    try:
        return get_settings().debug
    except MLOpsError:
        # the settings themselves failed to load: read the two inputs as they were given
        flag = os.environ.get("MLOPS_DEBUG", "").strip().lower()
        return _debug_option or flag in {"1", "true", "yes", "on"}


# a command run from the terminal (not the step runner, whose log keeps every traceback)
_in_command = False
# prefect.flows: "Parameter validation failed" with every parameter, before the command's line
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flows")


class StepErrorsOffTheTerminal(logging.Filter):
    """Keeps Prefect's flow- and task-run ERROR records (a failed step's traceback, twice) off
    the terminal. The command prints the error as one line with its exit code; the run's log in
    the Prefect UI keeps the whole record, as its API handler has no such filter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(_RUN_LOGGERS))


def _keep_step_errors_off_the_terminal() -> None:
    import prefect.main  # noqa: F401  (sets up Prefect's console handler, if not yet)
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, StepErrorsOffTheTerminal) for f in handler.filters
        ):
            handler.addFilter(StepErrorsOffTheTerminal())


@contextlib.contextmanager
def show_progress(*names: str) -> Iterator[None]:
    """Show the INFO records of the loggers NAMES (and their children) on stderr while the
    block runs; their levels are restored after it.

    Only the level changes: the records reach the terminal through Prefect's console handler
    on the root logger, the one that already prints every step's log (stderr, so `--json` on
    stdout stays clean). A handler of our own would print each line a second time, and stopping
    propagation instead would also keep the lines from the run's log in the Prefect UI.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def print_error(message: str) -> None:
    """One `error:` line on stderr; the message is text, never rich markup (hints such as
    `pip install 'mlops-pipeline[iotedge]'` keep their brackets)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def command(typer_app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable:
    """Register a CLI command that turns MLOpsError into one stderr line and its exit code.

    Any other exception becomes `unexpected(...)` (exit 1). Under `--json` (the command's
    `as_json` parameter) the error object is printed on stdout as well.
    """

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            global _in_command
            _in_command = True
            try:
                return func(*args, **kw)
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:
                error = exc if isinstance(exc, MLOpsError) else unexpected(exc)
                if traceback_wanted():  # the traceback, then the same exit code as without
                    err_console.print_exception(show_locals=False)
                if kw.get("as_json"):
                    typer.echo(json.dumps({"error": error.to_dict()}))
                print_error(str(error))
                raise typer.Exit(error.exit_code) from None

        return typer_app.command(name, **kwargs)(wrapper)

    return decorator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command runs so it unwinds as Ctrl+C does."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """For the block, SIGTERM (schedulers, systemd, Kubernetes, a CI job's timeout) raises
    `Terminated`, a KeyboardInterrupt, in the main thread: the command's clean-up runs as for
    Ctrl+C instead of the process dying mid-work. The previous handler is restored."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped_by(stop: KeyboardInterrupt) -> tuple[str, int]:
    """("terminated", 143) for SIGTERM, ("interrupted", 130) for Ctrl+C: the word for the
    command's last line and its exit code, as shells report the two signals."""
    return ("terminated", 143) if isinstance(stop, Terminated) else ("interrupted", 130)


def run_flow(flow: Any, **params: Any) -> Any:
    """`mlops_pipeline.flows.run_flow`, imported when a command first runs a flow: Prefect then
    loads only in commands that need it (`--help`, or a step the stack runs, stay fast)."""
    from mlops_pipeline.flows import run_flow as run

    if _in_command and not traceback_wanted():
        _keep_step_errors_off_the_terminal()
    return run(flow, **params)


def unexpected(exc: Exception) -> MLOpsError:
    """Wrap an error we did not anticipate so the user still gets one line, not a traceback."""
    return MLOpsError(
        f"Unexpected {type(exc).__name__}: {exc}",
        hint="Re-run with --debug for the traceback, and please report it.",
    )


def emit(result: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print `result` as JSON for scripts, or through `render` for people."""
    if as_json:
        typer.echo(json.dumps(result, default=str, indent=2))
    elif render is not None:
        render(result)
    else:
        console.print(result)


FOLD_MIN_WIDTH = 8  # narrowest a folding column gets before the table stops fitting


def print_table(
    headers: list[str],
    rows: list[list[str]],
    fold: frozenset[str] = frozenset(),
    styles: list[str | None] | None = None,
) -> None:
    """Print `rows` under `headers` without cutting any value short.

    Columns named in `fold` (free text, tags, URIs) wrap onto more lines in a narrow terminal;
    the others (names, versions, times, statuses) always stay whole on one line. When even they
    do not fit, the table keeps the width they need and the terminal wraps it, instead of rich
    shortening every column with an ellipsis. Cells are plain text (never rich markup);
    `styles` gives each row a rich style (or None).
    """
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    rows = [[str(value) for value in row] for row in rows]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for header in headers:
        table.add_column(header, no_wrap=header not in fold, overflow="fold")
    for row, style in zip(rows, styles or [None] * len(rows), strict=True):
        table.add_row(*(Text(value) for value in row), style=style)
    widths = [max(map(cell_len, column)) for column in zip(headers, *rows, strict=True)]
    # two cells of padding and divider between neighbouring columns, none at the edges
    needed = sum(
        min(width, FOLD_MIN_WIDTH) if header in fold else width
        for header, width in zip(headers, widths, strict=True)
    ) + 2 * (len(headers) - 1)
    if needed > console.width:
        table.width = needed
    console.print(table, crop=False)


def format_time(value: Any) -> str:
    """A timestamp (datetime or ISO string) as `2026-11-30 10:44:06Z`: UTC, to the second."""
    from datetime import UTC, datetime

    if value is None:
        return "-"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return f"{when:%Y-%m-%d %H:%M:%S}Z"


def one_of(*values: str) -> Callable[[Any], str]:
    """`parser` for a text option that takes one of `values` (exactly as written).

    Checked by the option, so the error names it (a flow parameter's check names the
    parameter). Raises typer.BadParameter, shown as the option's invalid value.
    """

    def pick(value: Any) -> str:
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}.")
        return value

    return pick


def finite(min: float | None = None, max: float | None = None) -> Callable[[Any], float]:  # noqa: A002
    """`parser` for a float option: a finite number within [min, max] when given.

    click's FLOAT takes "inf" and "nan", and an infinite interval or bake would hold a
    challenger forever. Raises typer.BadParameter, shown as the option's invalid value.
    """

    def number(value: Any) -> float:
        try:
            parsed = float(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not a number.") from None
        if not math.isfinite(parsed):
            raise typer.BadParameter(f"{value!r} is not a finite number.")
        if (min is not None and parsed < min) or (max is not None and parsed > max):
            if min is not None and max is not None:
                wanted = f"from {min:g} to {max:g}"
            else:
                wanted = f"of at least {min:g}" if min is not None else f"of at most {max:g}"
            raise typer.BadParameter(f"{value!r} is out of range: use a number {wanted}.")
        return parsed

    return number
