"""`mlops webhook serve` (the receiver) and `mlops webhook register-mlflow` (its MLflow side).

The receiver is `mlops_pipeline.webhooks.app` (Prefect-free) with Prefect's run starter from
`mlops_pipeline.tasks.webhooks` wired in here; `mlops up` starts it as one of its components.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import JsonOption, command, console, emit, port_option
from mlops_pipeline.webhooks.settings import DEFAULT_PORT

app = typer.Typer()
webhook_app = typer.Typer(
    help="Receive GitHub and MLflow registry webhooks that start Prefect flow runs.",
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook")


@command(webhook_app, "serve")
def serve_cmd(
    host: Annotated[
        str | None,
        typer.Option(help="Interface to listen on (env MLOPS_WEBHOOK_HOST; default 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None, port_option("the receiver", "MLOPS_WEBHOOK_PORT", DEFAULT_PORT)
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="YAML/JSON file mapping events to Prefect deployments "
            "(env MLOPS_WEBHOOK_MAPPING_FILE; example .ci/examples/webhooks.yaml).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the receiver: POST /hooks/github and /hooks/mlflow start mapped flow runs.

    Secrets: MLOPS_GITHUB_WEBHOOK_SECRET and MLOPS_MLFLOW_WEBHOOK_SECRET (or Prefect Secret
    blocks named by MLOPS_WEBHOOK_GITHUB_SECRET_BLOCK / MLOPS_WEBHOOK_MLFLOW_SECRET_BLOCK); an
    endpoint without one answers 503 to every request. Runs start on PREFECT_API_URL (or the
    server of `mlops up`).

    Answers: 202 accepted (with the flow run ids) or ignored; 401 bad or missing signature;
    409 stale or replayed delivery; 413 body too large; 503 no secret, or Prefect did not
    start the run.

    --json: an error that stops it from starting is printed as a JSON object too.

    Exit codes: 0 stopped; 2 invalid setting or mapping file; 3 no such Secret block;
    4 the port is taken; 6 Prefect unreachable.
    """
    import uvicorn
    from mlops_pipeline.errors import ConflictError
    from mlops_pipeline.serving.contract import port_problem
    from mlops_pipeline.tasks.webhooks import (
        PrefectRunStarter,
        require_prefect_api,
        resolve_secrets,
    )
    from mlops_pipeline.webhooks.app import create_app
    from mlops_pipeline.webhooks.settings import load_webhook_settings

    settings = load_webhook_settings(host=host, port=port, mapping_file=mapping)
    api = require_prefect_api()
    starter = PrefectRunStarter()
    receiver = create_app(
        settings, starter, secrets=resolve_secrets(settings), lifespan=starter.lifespan
    )
    if problem := port_problem(settings.port, settings.host):
        raise ConflictError(
            f"Port {settings.port} is not free ({problem}).",
            hint="Choose another with --port or MLOPS_WEBHOOK_PORT.",
            field="port",
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Prefect's logging set-up (on import) leaves other loggers at WARNING: one line per delivery
    logging.getLogger("mlops_pipeline").setLevel(logging.INFO)
    logging.getLogger(__name__).info(
        "Webhook receiver on http://%s:%d (runs on %s)", settings.host, settings.port, api
    )
    # the app logs each delivery itself; uvicorn's access log would double every line
    uvicorn.run(receiver, host=settings.host, port=settings.port, access_log=False)


def _tracking_uri(given: str | None) -> str:
    from mlops_pipeline import stack
    from mlops_pipeline.settings import get_settings

    if given:
        return given
    settings = get_settings()
    uri = settings.resolved_tracking_uri
    if uri.split(":", 1)[0] in {"http", "https"}:
        return uri
    record = stack.read_state(settings.resolved_home).get("mlflow")
    return record.url if record is not None else uri


def render_registration(result: dict[str, Any]) -> None:
    verb = "Created" if result["created"] else "Updated"
    console.print(
        f"{verb} MLflow webhook '{result['name']}' ({result['id']}): "
        f"{', '.join(result['events'])} -> {result['url']}",
        highlight=False,
    )
    if result["test"] is not None:
        test = result["test"]
        outcome = "answered " + str(test["status"]) if test["status"] else test["error"]
        console.print(f"Test delivery: {'ok' if test['success'] else 'failed'} ({outcome})")


@command(webhook_app, "register-mlflow")
def register_mlflow_cmd(
    url: Annotated[
        str,
        typer.Option(
            help="The receiver's MLflow endpoint, e.g. http://127.0.0.1:8787/hooks/mlflow."
        ),
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="The MLflow server (default: MLOPS_TRACKING_URI when it is a server, else the "
            "one `mlops up` runs).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Webhook name; registering again updates it.")] = (
        "mlops-pipeline"
    ),
    event: Annotated[
        list[str] | None,
        typer.Option(
            help="Event to deliver, repeatable (default: model_version.created and "
            "model_version_alias.created).",
            show_default=False,
        ),
    ] = None,
    test: Annotated[
        bool, typer.Option("--test", help="Have MLflow send a test delivery, and report it.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create (or update) the webhook on an MLflow server, signed with MLOPS_MLFLOW_WEBHOOK_SECRET.

    MLflow delivers webhooks only from `mlflow server`; for http or loopback URLs that server
    needs MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true
    (`mlops up` sets both), and it caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL s.

    Exit codes: 0 registered; 2 no secret, not a server, or MLflow refused the URL;
    3 no such Secret block; 5 MLflow failed.
    """
    from mlops_pipeline.errors import InvalidInputError
    from mlops_pipeline.webhooks.registration import DEFAULT_EVENTS, register_mlflow_webhook
    from mlops_pipeline.webhooks.settings import load_webhook_settings

    settings = load_webhook_settings()
    secret = settings.mlflow_secret
    if (secret is None or not secret.get_secret_value()) and settings.mlflow_secret_block:
        from mlops_pipeline.tasks.secret_blocks import load_secret_block

        secret = load_secret_block(settings.mlflow_secret_block)
    if secret is None or not secret.get_secret_value():
        raise InvalidInputError(
            "MLOPS_MLFLOW_WEBHOOK_SECRET is not set: MLflow must sign what it sends.",
            hint="Set it (or MLOPS_WEBHOOK_MLFLOW_SECRET_BLOCK) to the receiver's key.",
            field="MLOPS_MLFLOW_WEBHOOK_SECRET",
        )
    result = register_mlflow_webhook(
        _tracking_uri(tracking_uri),
        url,
        secret.get_secret_value(),
        name=name,
        events=tuple(event or DEFAULT_EVENTS),
        test=test,
    )
    emit(result, as_json, render_registration)
