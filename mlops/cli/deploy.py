"""The `mlops` command line: one command per pipeline step, each with --help and --json."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer
from mlops_pipeline.errors import MLOpsError
from mlops_pipeline.flows import run_flow
from mlops_pipeline.settings import get_settings
from rich.console import Console

app = typer.Typer(
    name="mlops",
    help="Self-hosted MLOps loop: register -> build-image -> deploy -> monitor -> redeploy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Browse and manage registered models.", no_args_is_help=True)
alias_app = typer.Typer(help="Set or remove model version aliases.", no_args_is_help=True)
deployments_app = typer.Typer(help="Inspect deployments and their history.", no_args_is_help=True)
models_app.add_typer(alias_app, name="alias")
app.add_typer(models_app, name="models")
app.add_typer(deployments_app, name="deployments")

# soft_wrap: free-text lines are never broken by rich, so a path or URL in them stays one line
# that can be copied (the terminal wraps it only visually); tables lay out their own cells.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON result on stdout.")]


@app.callback()
def main_options(
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
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri:
        os.environ["MLOPS_TRACKING_URI"] = tracking_uri
    if debug:
        os.environ["MLOPS_DEBUG"] = "1"
    get_settings.cache_clear()


def command(typer_app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable:
    """Register a CLI command that turns MLOpsError into one stderr line and its exit code."""

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return func(*args, **kw)
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:
                # read directly: the settings themselves may be what failed to load
                if os.environ.get("MLOPS_DEBUG", "").lower() in {"1", "true", "yes"}:
                    raise
                error = exc if isinstance(exc, MLOpsError) else unexpected(exc)
                if kw.get("as_json"):
                    typer.echo(json.dumps({"error": error.to_dict()}))
                err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
                raise typer.Exit(error.exit_code) from None

        return typer_app.command(name, **kwargs)(wrapper)

    return decorator


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


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """Turn ['k=v', ...] into a dict, naming the option and value when one is malformed."""
    from mlops_pipeline.errors import InvalidInputError

    parsed: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(
                f"{option} '{pair}' is not KEY=VALUE.", hint=f"Write it as {option} team=fraud."
            )
        parsed[key.strip()] = value
    return parsed


# --- output helpers for tables ---

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


# --- registry commands ---


def render_versions(versions: list[dict[str, Any]]) -> None:
    rows = []
    for mv in versions:
        tags = ", ".join(
            f"{k}={v}" for k, v in sorted(mv["tags"].items()) if not k.startswith("mlops.")
        )
        rows.append(
            [
                mv["name"],
                mv["version"],
                ", ".join(mv["aliases"]),
                tags,
                ", ".join(mv["deployments"]),
            ]
        )
    print_table(
        ["name", "version", "aliases", "tags", "deployments"],
        rows,
        fold=frozenset({"aliases", "tags", "deployments"}),
    )


@command(app, "register")
def register_cmd(
    source: Annotated[
        str, typer.Argument(help="runs:/<run_id>/<path>, an MLflow model dir, or a pickle file.")
    ],
    name: Annotated[str, typer.Option(help="Registered model name.")],
    tag: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE tag on the version (repeatable).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Version description.")] = None,
    reference_data: Annotated[
        str | None, typer.Option(help="CSV/Parquet sample of training data (for drift).")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias to point at the new version.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a model as the next version of NAME."""
    from mlops_pipeline.flows.register import register_model

    result = run_flow(
        register_model,
        source=source,
        name=name,
        tags=parse_pairs(tag, "--tag"),
        description=description,
        reference_data=reference_data,
        alias=alias,
    )
    emit(
        result,
        as_json,
        lambda r: console.print(f"Registered [bold]{r['name']}[/] version {r['version']}"),
    )


@command(models_app, "list")
def models_list_cmd(
    name: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE filter (repeatable).")] = None,
    as_json: JsonOption = False,
) -> None:
    """List model versions, filtered by name and tags."""
    from mlops_pipeline.tasks.registry import list_model_versions

    emit(list_model_versions.fn(name, parse_pairs(tag, "--tag")), as_json, render_versions)


@command(models_app, "show")
def models_show_cmd(
    name: str,
    version: Annotated[str | None, typer.Option(help="Version number.")] = None,
    alias: Annotated[str | None, typer.Option(help="Alias, e.g. champion.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show one model version (the latest unless --version or --alias)."""
    from mlops_pipeline.tasks.registry import get_model_version

    emit(get_model_version.fn(name, version=version, alias=alias), as_json)


@command(models_app, "tag")
def models_tag_cmd(
    name: str,
    version: Annotated[str, typer.Option(help="Version number.")],
    tag: Annotated[list[str], typer.Option(help="KEY=VALUE (repeatable).")],
    as_json: JsonOption = False,
) -> None:
    """Set tags on a model version."""
    from mlops_pipeline.tasks.registry import tag_model_version

    emit(tag_model_version.fn(name, version, parse_pairs(tag, "--tag")), as_json)


@command(alias_app, "set")
def alias_set_cmd(
    name: str,
    alias: str,
    version: Annotated[str, typer.Option(help="Version the alias points at.")],
    as_json: JsonOption = False,
) -> None:
    """Point ALIAS of model NAME at a version."""
    from mlops_pipeline.tasks.registry import get_model_version, set_model_alias

    set_model_alias.fn(name, alias, version)
    emit(
        get_model_version.fn(name, alias=alias),
        as_json,
        lambda r: console.print(f"{name}@{alias} -> version {r['version']}"),
    )


@command(alias_app, "remove")
def alias_remove_cmd(name: str, alias: str, as_json: JsonOption = False) -> None:
    """Remove ALIAS from model NAME."""
    from mlops_pipeline.tasks.registry import remove_model_alias

    remove_model_alias.fn(name, alias)
    emit({"name": name, "alias": alias, "removed": True}, as_json)


@command(models_app, "delete")
def models_delete_cmd(
    name: str,
    version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a model version, or the whole model; refused while a deployment uses it."""
    from mlops_pipeline.tasks.registry import delete_model_versions

    deleted = delete_model_versions.fn(name, version)
    emit(
        {"name": name, "deleted_versions": deleted},
        as_json,
        lambda r: console.print(f"Deleted {name} versions {', '.join(r['deleted_versions'])}"),
    )


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


# --- serving commands ---


def _check_model_uri(model_uri: str) -> None:
    """Fail before binding a port when the model cannot be found."""
    from pathlib import Path

    from mlops_pipeline.errors import BackendError, NotFoundError

    if model_uri.startswith("models:/"):
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        ref = model_uri.removeprefix("models:/").strip("/")
        name, at, alias = ref.partition("@")
        client = MlflowClient()
        try:
            if at:
                client.get_model_version_by_alias(name, alias)
            else:
                name, _, version = ref.partition("/")
                if version.isdigit():
                    client.get_model_version(name, version)
                else:
                    client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
                raise NotFoundError(
                    f"Model '{model_uri}' is not in the registry at "
                    f"{get_settings().resolved_tracking_uri}.",
                    hint="List versions with `mlops models list` or register one first.",
                    model_uri=model_uri,
                ) from exc
            raise BackendError(
                f"The MLflow registry failed: {exc.message}", model_uri=model_uri
            ) from exc
    elif "://" not in model_uri or model_uri.startswith("file://"):
        path = Path(model_uri.removeprefix("file://"))
        if not (path / "MLmodel").is_file():
            raise NotFoundError(
                f"'{model_uri}' is not an MLflow model directory (no MLmodel file).",
                hint="Pass a directory written by mlflow.<flavor>.save_model or a models:/ URI.",
                model_uri=model_uri,
            )


@command(app, "serve")
def serve(
    model_uri: Annotated[
        str, typer.Argument(help="models:/name/3, models:/name@alias, runs:/..., or a model dir.")
    ],
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    capture_dir: Annotated[
        str | None, typer.Option(help="Local directory for captured inputs and predictions.")
    ] = None,
    capture_uri: Annotated[
        str | None, typer.Option(help="fsspec URI for captured data (s3://, gs://, az://, ...).")
    ] = None,
    sample_rate: Annotated[float, typer.Option(help="Share of requests to capture, 0..1.")] = 1.0,
    api_key_file: Annotated[
        str | None, typer.Option(help="File: primary API key on line 1, optional secondary on 2.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Serve a model over HTTP (MLflow-compatible /invocations) until Ctrl+C or SIGTERM."""
    import socket
    from pathlib import Path

    from mlops_pipeline.errors import ConflictError, InvalidInputError, NotFoundError
    from pydantic import ValidationError

    if capture_dir and capture_uri:
        raise InvalidInputError(
            "--capture-dir and --capture-uri both given.", hint="Pass only one of them."
        )
    if not 0.0 <= sample_rate <= 1.0:
        raise InvalidInputError(
            f"--sample-rate {sample_rate} is outside 0..1.", hint="Use e.g. --sample-rate 0.1."
        )
    key_path = Path(api_key_file).resolve() if api_key_file else None
    if key_path and not key_path.is_file():
        raise NotFoundError(
            f"--api-key-file {api_key_file} does not exist.", path=str(api_key_file)
        )
    settings = get_settings()
    # models:/ and runs:/ URIs resolve against this project's registry, also in the server process
    os.environ["MLFLOW_TRACKING_URI"] = settings.resolved_tracking_uri
    if settings.registry_uri:
        os.environ["MLFLOW_REGISTRY_URI"] = settings.registry_uri
    _check_model_uri(model_uri)
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConflictError(
                f"Cannot listen on {host}:{port}: {exc.strerror}.",
                hint="Pick another --port or stop what is using it.",
                port=port,
            ) from exc

    from mlops_pipeline.serving.server import run
    from mlops_pipeline.serving.settings import ServingSettings

    capture = str(Path(capture_dir).resolve()) if capture_dir else capture_uri
    try:
        serving_settings = ServingSettings(
            model_uri=model_uri,
            host=host,
            port=port,
            workers=workers,
            capture_uri=capture,
            sample_rate=sample_rate,
            api_key_file=key_path,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"]))
        raise InvalidInputError(
            f"Invalid serving setting {field}: {first['msg']}.", field=field
        ) from exc
    url = f"http://{host}:{port}"
    emit(
        {"url": url, "model_uri": model_uri, "workers": workers, "capture_uri": capture},
        as_json,
        lambda r: err_console.print(
            f"Serving [bold]{model_uri}[/] at {url} (capture: {capture or 'off'}); Ctrl+C stops."
        ),
    )
    run(serving_settings)


@command(app, "predict")
def predict(
    url: Annotated[str, typer.Argument(help="Base URL of a scoring service.")],
    input_file: Annotated[
        str,
        typer.Option("--input", help="Rows to score: .csv, .json (payload or records), .parquet."),
    ],
    api_key_file: Annotated[
        str | None, typer.Option(help="API key file (or env MLOPS_API_KEY).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send rows to a running scoring service and print the predictions."""
    from pathlib import Path

    from mlops_pipeline.errors import (
        AuthError,
        BackendError,
        BackendUnavailableError,
        InvalidInputError,
        NotFoundError,
    )
    from mlops_pipeline.serving.client import ScoringClient, ScoringError, read_api_key, to_payload

    path = Path(input_file)
    if not path.is_file():
        raise NotFoundError(f"--input {input_file} does not exist.", path=input_file)
    api_key = None
    if api_key_file:
        try:
            api_key = read_api_key(api_key_file)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"Cannot read --api-key-file {api_key_file}: {exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            body, content_type = path.read_bytes(), "text/csv"
        elif suffix == ".json":
            body = json.dumps(to_payload(json.loads(path.read_text()))).encode()
            content_type = "application/json"
        elif suffix == ".parquet":
            import pandas as pd

            body = json.dumps(to_payload(pd.read_parquet(path)), default=str).encode()
            content_type = "application/json"
        else:
            raise InvalidInputError(
                f"--input {path.name}: unsupported file type '{suffix}'.",
                hint="Use a .csv, .json or .parquet file.",
            )
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"--input {input_file} could not be read: {exc}") from exc
    try:
        with ScoringClient(url, api_key=api_key) as client:
            result = client.predict_raw(body, content_type)
    except ScoringError as exc:
        details = {"status": exc.status, "code": exc.code, **exc.details}
        if exc.status is None:
            raise BackendUnavailableError(exc.message, hint="Is the service running?") from exc
        if exc.status == 401:
            raise AuthError(exc.message, hint="Pass --api-key-file or set MLOPS_API_KEY.") from exc
        if exc.status < 500:
            raise InvalidInputError(exc.message, **details) from exc
        raise BackendError(f"The scoring service failed: {exc.message}", **details) from exc

    def render(r: dict[str, Any]) -> None:
        print_table(
            ["row", "prediction"],
            [[str(i), json.dumps(value)] for i, value in enumerate(r["predictions"])],
            fold=frozenset({"prediction"}),
        )
        console.print(f"request id: {r['request_id']}")

    emit({"predictions": result.predictions, "request_id": result.request_id}, as_json, render)


# --- deploy commands ---


def absolute_path(value: str | None, option: str, must_exist: bool = False) -> str | None:
    """Services run in other processes (and containers): hand them absolute paths."""
    from pathlib import Path

    from mlops_pipeline.errors import InvalidInputError

    if value is None or "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    if must_exist and not path.is_file():
        raise InvalidInputError(
            f"{option} '{value}' is not a file.", hint="Pass the path of an existing file."
        )
    return str(path)


def render_deployment(d: dict[str, Any]) -> None:
    console.print(
        f"[bold]{d['name']}[/] serves {d['model_uri']} on {d['target_uri']} "
        f"at {d.get('endpoint_url') or '-'} ({d['status']})"
    )


def render_deployments(rows: list[dict[str, Any]]) -> None:
    print_table(
        ["name", "model", "version", "target", "endpoint", "status", "updated"],
        [
            [
                d["name"],
                d["model_name"],
                str(d["model_version"]),
                d["target_uri"],
                d.get("endpoint_url") or "-",
                str(d["status"]),
                format_time(d["updated_at"]),
            ]
            for d in rows
        ],
        fold=frozenset({"target", "endpoint"}),
    )


def render_history(events: list[dict[str, Any]]) -> None:
    print_table(
        ["when", "who", "action", "from", "to", "image", "result", "reason"],
        [
            [
                format_time(e["at"]),
                e["who"],
                str(e["action"]),
                e["from_version"] or "-",
                e["to_version"] or "-",
                e["image"] or "-",
                str(e["result"]),
                e["reason"] or "",
            ]
            for e in events
        ],
        fold=frozenset({"image", "reason"}),
    )


@command(app, "deploy")
def deploy_cmd(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION or models:/NAME@ALIAS.")],
    name: Annotated[str, typer.Option(help="Deployment name (lowercase, digits, '-').")],
    target: Annotated[
        str, typer.Option(help="Target URI: local:, docker:, kubernetes:/namespace, ...")
    ] = "local:",
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Stable port (default: a free one).", show_default=False
        ),
    ] = None,
    capture_dir: Annotated[
        str | None, typer.Option(help="Capture inputs+predictions here (dir or fsspec URI).")
    ] = None,
    sample_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests captured.")
    ] = 1.0,
    api_key_file: Annotated[
        str | None, typer.Option(help="File with the API key(s) clients must send.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Scoring worker processes.")] = 1,
    base_image: Annotated[
        str | None, typer.Option(help="Base image when the target builds one.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Serve a registered model version behind a stable endpoint (updates NAME if it exists)."""
    from mlops_pipeline.flows.deploy import deploy

    result = run_flow(
        deploy,
        model_uri=model_uri,
        name=name,
        target=target,
        port=port,
        capture_uri=absolute_path(capture_dir, "--capture-dir"),
        sample_rate=sample_rate,
        api_key_file=absolute_path(api_key_file, "--api-key-file", must_exist=True),
        workers=workers,
        base_image=base_image,
    )
    emit(result, as_json, render_deployment)


@command(app, "update")
def update_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    model: Annotated[str, typer.Option(help="New version: models:/NAME/VERSION or @ALIAS.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Switch a deployment to another model version with zero downtime."""
    from mlops_pipeline.flows.deploy import update_deployment

    emit(
        run_flow(update_deployment, name=name, model_uri=model, reason=reason),
        as_json,
        render_deployment,
    )


@command(app, "rollback")
def rollback_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Return a deployment to the version it served before, with zero downtime."""
    from mlops_pipeline.flows.deploy import rollback_deployment

    emit(run_flow(rollback_deployment, name=name, reason=reason), as_json, render_deployment)


@command(app, "undeploy")
def undeploy_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a deployment and release the model version it served."""
    from mlops_pipeline.flows.deploy import undeploy

    result = run_flow(undeploy, name=name, reason=reason)
    emit(result, as_json, lambda d: console.print(f"Undeployed [bold]{d['name']}[/]"))


@command(app, "status")
def status_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    as_json: JsonOption = False,
) -> None:
    """Endpoint URL, served version and health of a deployment (exit 1 when not ready)."""
    from mlops_pipeline.tasks.deploy import get_status

    status = get_status.fn(name)

    def render(s: dict[str, Any]) -> None:
        render_deployment(s)
        health = s["health"]
        console.print(
            "health: "
            + ("[green]ready[/]" if health.get("ready") else "[red]not ready[/]")
            + (f" ({health['error']})" if health.get("error") else "")
        )

    emit(status, as_json, render)
    if not status["health"].get("ready"):
        raise typer.Exit(1)


@command(deployments_app, "list")
def deployments_list_cmd(
    target: Annotated[str | None, typer.Option(help="Only deployments on this target URI.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List deployments."""
    from mlops_pipeline.tasks.deploy import list_deployments

    emit(list_deployments.fn(target), as_json, render_deployments)


@command(deployments_app, "show")
def deployments_show_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    as_json: JsonOption = False,
) -> None:
    """Show one deployment as recorded in the ledger."""
    from mlops_pipeline.tasks.deploy import get_deployment

    emit(get_deployment.fn(name).model_dump(mode="json"), as_json)


@command(deployments_app, "history")
def deployments_history_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    as_json: JsonOption = False,
) -> None:
    """Every create/update/rollback/delete of a deployment: who, when, from, to, result."""
    from mlops_pipeline.tasks.deploy import get_deployment_history

    emit(get_deployment_history.fn(name), as_json, render_history)


@command(app, "build-image")
def build_image_cmd(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION or models:/NAME@ALIAS.")],
    tag: Annotated[
        str | None, typer.Option(help="Image tag (default mlops/NAME:VERSION).", show_default=False)
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option(help="Base image (default: env MLOPS_BASE_IMAGE).", show_default=False),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Rebuild every layer, ignoring Docker's cache.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build a Docker image serving a model version; dependencies come from a host wheelhouse."""
    import logging

    from mlops_pipeline.tasks.images import build_image

    # build steps as progress through Prefect's console handler (stderr; stdout stays JSON)
    logging.getLogger("mlops_pipeline.tasks.images").setLevel(logging.INFO)
    result = build_image.fn(model_uri, tag=tag, base_image=base_image, no_cache=no_cache)
    emit(
        result.to_dict(),
        as_json,
        lambda r: console.print(
            f"Built [bold]{r['tag']}[/] for {r['model_uri']} in {r['seconds']} s "
            f"({r['cached_steps']} of {r['steps']} steps from cache)"
        ),
    )


# --- monitor commands ---


def _drift_config(config_file: str | None, min_samples: int | None) -> Any:
    """Drift settings (a checked tasks.drift_settings.DriftConfig) from a JSON file plus CLI
    overrides; a wrong key, type or value is exit 2 naming the setting, value and type."""
    from pathlib import Path

    from mlops_pipeline.errors import InvalidInputError, NotFoundError
    from mlops_pipeline.tasks.drift_settings import DriftConfig

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
    elif not result["drift"]:
        console.print("[green]No drift.[/]")
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
        str | None, typer.Option(help="JSON file with drift settings and per-feature thresholds.")
    ] = None,
    min_samples: Annotated[
        int | None, typer.Option(min=1, help="Rows needed before a column is tested.")
    ] = None,
    cooldown_hours: Annotated[
        float, typer.Option(min=0.0, help="Hours before one drift episode re-signals.")
    ] = 24.0,
    as_json: JsonOption = False,
) -> None:
    """Validate and drift-test what deployment NAME captured; signal drift (exit 0 either way)."""
    from mlops_pipeline.flows.monitor import monitor_deployment

    with err_console.status(f"Validating and drift-testing what {name} captured..."):
        result = run_flow(
            monitor_deployment,
            deployment=name,
            window=since,
            capture_uri=capture_uri,
            model_uri=model_uri,
            drift_config=_drift_config(config, min_samples),
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

    from mlops_pipeline.tasks.drift import compare_frames, json_safe
    from mlops_pipeline.tasks.profile import infer_kinds
    from mlops_pipeline.tasks.tables import read_table_file

    settings = _drift_config(config, min_samples)
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
    predictions = [c for c in common if c == "prediction" or c.startswith("prediction.")]
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
        from mlops_pipeline.tasks.report import write_report

        verdict["report"] = str(
            write_report(verdict, Path(report), f"Drift: {reference} vs {current}").resolve()
        )
    for feature in verdict["features"]:
        feature.pop("plot", None)
    emit(verdict, as_json, render_drift)


# --- redeploy commands ---
