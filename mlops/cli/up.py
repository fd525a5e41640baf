"""Local stack commands: `mlops up` (and `up --status`), `mlops down`.

The processes are managed by the Prefect-free `mlops_pipeline.stack`. `stack_prefect_api()`
is how every other command finds the running stack: with no Prefect API configured by the
user, it points Prefect at the stack's server for the command, so CLI steps run as flow runs.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import (
    JsonOption,
    command,
    console,
    emit,
    err_console,
    finite,
    format_time,
    port_option,
    print_table,
)
from mlops_pipeline.settings import Settings
from mlops_pipeline.webhooks.settings import DEFAULT_PORT

app = typer.Typer()

STATE_STYLES = {"healthy": "green", "alive": "yellow", "dead": "red"}


@contextmanager
def stack_prefect_api() -> Iterator[None]:
    """While the block runs, Prefect uses this MLOPS_HOME's stack when nothing else is set.

    Nothing changes when PREFECT_API_URL is set (environment or Prefect profile), when
    MLOPS_ORCHESTRATE=never, or when no stack runs. When Prefect is not imported yet, the URL
    goes into this process's PREFECT_API_URL for the block, which Prefect reads when a step
    first imports it: a command the stack runs elsewhere (`mlops register`) never pays the
    seconds Prefect takes to import.
    """
    from mlops_pipeline.errors import MLOpsError
    from mlops_pipeline.settings import get_settings

    url = None
    if "PREFECT_API_URL" not in os.environ:
        try:
            settings = get_settings()
        except MLOpsError:
            settings = None  # the command itself reports the bad setting
        if settings is not None and settings.orchestrate != "never":
            from mlops_pipeline import stack

            url = stack.running_prefect_api(settings.resolved_home)
    if url is None:
        yield
        return
    if "prefect" not in sys.modules:
        if prefect_profile_api() is not None:  # the user's Prefect profile names an API: it wins
            yield
            return
        os.environ["PREFECT_API_URL"] = url
        try:
            yield
        finally:
            os.environ.pop("PREFECT_API_URL", None)
        return
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:  # the user's Prefect profile names an API: it wins
        yield
        return
    with temporary_settings({PREFECT_API_URL: url}):
        yield


def prefect_profile_api() -> str | None:
    """PREFECT_API_URL of the active Prefect profile, read from its file without importing
    Prefect (PREFECT_PROFILES_PATH, else $PREFECT_HOME/profiles.toml; PREFECT_PROFILE, else
    the file's `active`, else Prefect's default `ephemeral`)."""
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or None


def render_status(status: dict[str, Any]) -> None:
    """The components as a table, then what to open."""
    components = status["components"]
    if not components:
        console.print(f"Nothing runs for MLOPS_HOME {status['home']}. Start it with `mlops up`.")
        return
    # URLs stay whole, to be opened or copied, in 80 columns; pids and ports are in --json
    print_table(
        ["name", "state", "url", "since"],
        [
            [
                c["title"],
                c["state"] + (" (started now)" if c.get("started") else ""),
                c["url"],
                format_time(c["started_at"]),
            ]
            for c in components
        ],
        fold=frozenset({"name", "state"}),
        styles=[STATE_STYLES.get(c["state"]) for c in components],
    )
    logs = sorted({str(Path(c["log_file"]).parent) for c in components})
    console.print(f"Logs: {', '.join(logs)}", highlight=False)


def render_up(status: dict[str, Any]) -> None:
    render_status(status)
    urls = {c["name"]: c["url"] for c in status["components"]}
    console.print()
    if "prefect" in urls:
        console.print(
            f"Prefect UI: {urls['prefect']}  flow runs of every `mlops` command run with "
            f"MLOPS_HOME={status['home']}, and the served deployments (schedules, triggers, "
            f"run forms) under {urls['prefect']}/deployments"
        )
    if "mlflow" in urls:
        console.print(
            f"MLflow UI:  {urls['mlflow']}  runs, models and versions (deleting a version "
            "an active deployment uses is refused)"
        )
    console.print(
        "CLI commands in any shell with the same MLOPS_HOME now run as Prefect flow runs "
        "(unless PREFECT_API_URL is set or MLOPS_ORCHESTRATE=never). "
        "`mlops up --status` shows the stack; `mlops down` stops it."
    )


def status_payload(status: Any) -> dict[str, Any]:
    return {
        "home": status.home,
        "state_file": status.state_file,
        "running": status.running,
        "healthy": status.healthy,
        "components": [c.model_dump(mode="json") for c in status.components],
    }


def _default(field: str) -> int:
    return Settings.model_fields[field].default


@command(app, "up")
def up_cmd(
    status: Annotated[
        bool, typer.Option("--status", help="Show what runs instead of starting anything.")
    ] = False,
    prefect_port: Annotated[
        int | None,
        port_option("the Prefect server", "MLOPS_PREFECT_PORT", _default("prefect_port")),
    ] = None,
    mlflow_port: Annotated[
        int | None, port_option("the MLflow server", "MLOPS_MLFLOW_PORT", _default("mlflow_port"))
    ] = None,
    webhook_port: Annotated[
        int | None, port_option("the webhook receiver", "MLOPS_WEBHOOK_PORT", DEFAULT_PORT)
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            parser=finite(min=1), help="Seconds each component may take to become healthy."
        ),
    ] = 120.0,
    as_json: JsonOption = False,
) -> None:
    """Start the local stack in the background: Prefect and MLflow servers, the served
    flows, the step runner (`mlops register` runs there, warm) and the webhook receiver.

    Idempotent: what runs is kept, a dead component is restarted on its port.
    State and logs: $MLOPS_HOME/up/ (state.json, logs/).

    Exit codes: 0 running and healthy; 4 a port is taken by another program;
    5 a component exited while starting; 6 one did not answer within --timeout.
    --status: 0 all healthy; 3 nothing runs; 6 one is dead or not answering.
    """
    from mlops_pipeline import stack
    from mlops_pipeline.settings import get_settings

    settings = get_settings()
    if status:
        current = stack.status(settings.resolved_home)
        emit(status_payload(current), as_json, render_status)
        if not current.running:
            raise typer.Exit(3)
        if not current.healthy:
            raise typer.Exit(6)
        return

    def progress(line: str) -> None:
        err_console.print(line, highlight=False)

    result = stack.up(
        settings,
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        webhook_port=webhook_port,
        timeout=timeout,
        progress=progress,
    )
    emit(status_payload(result), as_json, render_up)


def render_down(result: dict[str, Any]) -> None:
    if not result["stopped"]:
        console.print(f"Nothing to stop for MLOPS_HOME {result['home']}.")
        return
    words = {
        "terminated": "stopped",
        "killed": "killed (did not stop on SIGTERM in time)",
        "gone": "was not running",
        "pid_reused": "was not running (its pid belongs to another process now, left alone)",
    }
    for s in result["stopped"]:
        console.print(f"{s['title']} (pid {s['pid']}): {words[s['outcome']]}")


@command(app, "down")
def down_cmd(
    timeout: Annotated[
        float,
        typer.Option(parser=finite(min=0), help="Seconds to wait after SIGTERM before SIGKILL."),
    ] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Stop exactly what `mlops up` started (recorded pids and start times).

    Each component's process group gets SIGTERM, then SIGKILL after --timeout s.
    A recorded pid that now belongs to another program is left alone. The state
    file is removed; the logs stay in $MLOPS_HOME/up/logs.

    Exit codes: 0 stopped, or nothing was running.
    """
    from mlops_pipeline import stack
    from mlops_pipeline.settings import get_settings

    home = get_settings().resolved_home
    stopped = stack.down(home, timeout=timeout)
    emit(
        {"home": str(home), "stopped": [s.model_dump(mode="json") for s in stopped]},
        as_json,
        render_down,
    )
