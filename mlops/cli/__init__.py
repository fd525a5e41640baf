"""The `mlops` command line: one command per pipeline step, each with --help and --json.

`app` holds the global options (the console script `mlops = "mlops_pipeline.cli:main"` runs it,
printing usage errors as one line); the
commands live in one module per command group, each with its own nameless `typer.Typer` named
`app` whose commands (and sub-groups such as `models`) merge into the top level:

* `registry`: register, models list/show/tag/delete, models alias set/remove
* `demo`: demo
* `serve`: serve, predict
* `deploy`: deploy, update, rollback, undeploy, status, build-image, deployments list/show/history
* `batch`: score-batch
* `monitor`: monitor, drift
* `redeploy`: redeploy, redeploys, pipeline
* `up`: up (and up --status), down: the local stack (Prefect server, served flows, MLflow)
* `webhook`: webhook serve, webhook register-mlflow: GitHub and MLflow webhooks start flow runs
* `spec`: spec schema, diff --spec (and `deploy --spec` in `deploy`): deployment spec files

`_output` is the one shared output and error helper: the `command` decorator (MLOpsError -> one
stderr line + exit code + `--json` error object), `emit`, `print_table`, the consoles.

Adding a command group (e.g. `redeploy`) is a two-line change here: write `cli/redeploy.py`
with `app = typer.Typer()` and its commands registered through `_output.command(app, ...)`,
then add `redeploy` to the import below and to `GROUPS`. Modules import the layers below them
lazily inside each command, so `mlops --help` stays fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from mlops_pipeline import secrets
from mlops_pipeline.cli import (
    _output,
    batch,
    demo,
    deploy,
    monitor,
    redeploy,
    registry,
    rollout,
    serve,
    spec,
    up,
    webhook,
)
from mlops_pipeline.cli.steps import CLI_MLFLOW_ENV
from mlops_pipeline.settings import override_settings
from mlops_pipeline.tasks.secret_blocks import load_secret_block

# commands that call the core directly (`mlops status`) read Prefect Secret blocks through it
secrets.register_block_reader(load_secret_block)

app = typer.Typer(
    name="mlops",
    help="Self-hosted MLOps loop: register -> build-image -> deploy -> monitor -> redeploy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: the command groups, in the order `mlops --help` lists them
GROUPS = (registry, demo, serve, deploy, spec, batch, monitor, redeploy, rollout, up, webhook)
for _group in GROUPS:
    app.add_typer(_group.app)


@app.callback()
def main_options(
    ctx: typer.Context,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking/registry URI (env MLOPS_TRACKING_URI).", show_default=False
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks on errors (env MLOPS_DEBUG=1).")
    ] = False,
) -> None:
    """Global options; they apply to every command."""
    # MLflow reads these only from the environment; a user's own value is kept. Against a
    # tracking server MLflow writes "View run ... at: URL" to stdout, which would break --json
    for name, value in CLI_MLFLOW_ENV.items():
        os.environ.setdefault(name, value)
    # options win over MLOPS_ variables for this invocation only: laid over the settings,
    # never written to os.environ (children get what they need explicitly)
    overrides: dict[str, object] = {}
    if tracking_uri:
        overrides["tracking_uri"] = tracking_uri
    if debug:
        overrides["debug"] = True
    _output.remember_debug_option(debug)
    ctx.with_resource(override_settings(**overrides))
    if ctx.invoked_subcommand not in {"up", "down"}:
        # a stack `mlops up` started for this MLOPS_HOME: steps run as its Prefect flow runs
        ctx.with_resource(up.stack_prefect_api())


def main() -> None:
    """The `mlops` console script: the typer app, with usage errors as one line (exit 2).

    Click (vendored by typer) reports a bad option value in a boxed panel under the usage; the
    project's rule is one line naming the option, the value and what to do, as for every other
    error (and the error object on stdout under --json).
    """
    import json
    import sys

    from typer.exceptions import TyperException

    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="mlops", standalone_mode=False)
    except typer.Abort:
        _output.err_console.print("interrupted", highlight=False)
        sys.exit(130)
    except TyperException as exc:  # click's ClickException family: usage errors and the like
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "mlops"
        message = f"{exc.format_message().rstrip('.')}. See `{where} --help`."
        if "--json" in sys.argv[1:]:
            error = {"code": "invalid_input", "message": message, "details": {}}
            typer.echo(json.dumps({"error": error}))
        _output.print_error(message)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
