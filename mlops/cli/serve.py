"""Serving commands: `mlops serve` runs the scoring service, `mlops predict` calls one.

`serve` checks what it can before any port is bound (options, the model in the registry, the
port), then replaces this process with the service (`python -m mlops_pipeline.serving`), handing
it its settings and the registry's URIs in the environment it starts with. The CLI's own
environment is never written, and signals reach the service directly, as before.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from mlops_pipeline.cli._output import (
    JsonOption,
    command,
    console,
    emit,
    err_console,
    finite,
    print_table,
)
from mlops_pipeline.settings import get_settings

if TYPE_CHECKING:
    from mlops_pipeline.serving.settings import ServingSettings

app = typer.Typer()


def check_model_uri(model_uri: str) -> None:
    """Fail before binding a port when the model cannot be found.

    `models:/` URIs are resolved in the project registry (`registry.resolve_model_uri`, the
    shared contract's grammar); local paths must be MLflow model directories. Other URIs
    (runs:/, s3://, ...) are left to the service.

    Raises:
        InvalidInputError: a `models:/` URI that breaks the grammar (exit 2).
        NotFoundError: the version, alias or model directory does not exist (exit 3).
    """
    from pathlib import Path

    from mlops_pipeline.errors import NotFoundError
    from mlops_pipeline.serving.contract import is_model_uri

    if is_model_uri(model_uri):
        from mlops_pipeline import registry

        try:
            registry.resolve_model_uri(model_uri)
        except NotFoundError as exc:
            raise NotFoundError(
                f"Model '{model_uri}' is not in the registry at "
                f"{get_settings().resolved_tracking_uri}.",
                hint="List versions with `mlops models list` or register one first.",
                model_uri=model_uri,
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
    sample_rate: Annotated[
        float,
        typer.Option(parser=finite(min=0.0, max=1.0), help="Share of requests to capture."),
    ] = 1.0,
    api_key_file: Annotated[
        str | None, typer.Option(help="File: primary API key on line 1, optional secondary on 2.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Serve a model over HTTP (MLflow-compatible /invocations) until Ctrl+C or SIGTERM."""
    from pathlib import Path

    from mlops_pipeline.errors import ConflictError, InvalidInputError, NotFoundError
    from mlops_pipeline.serving.contract import port_problem
    from mlops_pipeline.serving.settings import ServingSettings
    from pydantic import ValidationError

    if capture_dir and capture_uri:
        raise InvalidInputError(
            "--capture-dir and --capture-uri both given.", hint="Pass only one of them."
        )
    key_path = Path(api_key_file).resolve() if api_key_file else None
    if key_path and not key_path.is_file():
        raise NotFoundError(
            f"--api-key-file {api_key_file} does not exist.", path=str(api_key_file)
        )
    check_model_uri(model_uri)
    problem = port_problem(port, host)
    if problem:
        raise ConflictError(
            f"Cannot listen on {host}:{port}: {problem}.",
            hint="Pick another --port or stop what is using it.",
            port=port,
        )
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
    exec_service(serving_settings)


def exec_service(serving_settings: ServingSettings) -> NoReturn:
    """Replace this process with the scoring service configured by SERVING_SETTINGS.

    The service gets its settings as `MLOPS_SERVING_*` variables and resolves models:/ and
    runs:/ URIs against this project's registry through MLflow's own variables, all in the
    environment it starts with (its uvicorn workers inherit it). Same PID, so Ctrl+C and
    SIGTERM reach the service and its exit status is the command's.
    """
    import os
    import sys

    from mlops_pipeline.serving.settings import env_name

    settings = get_settings()
    env = {
        **os.environ,
        **{
            env_name(field): str(value)
            for field, value in serving_settings.model_dump(exclude_none=True).items()
        },
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.registry_uri or settings.resolved_tracking_uri,
    }
    sys.stdout.flush()
    sys.stderr.flush()
    args = [sys.executable, "-m", "mlops_pipeline.serving"]
    os.execve(sys.executable, args, env)


def _typed_input(client: Any) -> bool:
    """Whether the service's scoring code has a typed `run()` (its /version says so): then it
    takes its own JSON, not an MLflow payload. A service without /version (plain MLflow
    serving) is not; an unreachable one or a refused key raises as /invocations would."""
    from mlops_pipeline.serving.client import ScoringError

    try:
        return bool(client.version().get("typed_input"))
    except ScoringError as exc:
        if exc.status in (None, 401):
            raise
        return False
    except ValueError:  # not JSON: not our scoring service
        return False


def _predict_body(path: Any, suffix: str, typed: bool) -> tuple[bytes, str]:
    """The /invocations body and content type for an input file: CSV as it is and JSON or
    Parquet as an MLflow payload, or, for a service whose scoring code has a typed `run()`,
    JSON as it is and rows as a list of objects. Raises ValueError/TypeError on unreadable
    input."""
    import pandas as pd
    from mlops_pipeline.serving.client import to_payload

    if typed:
        if suffix == ".json":
            body = path.read_bytes()
            json.loads(body)  # fails here, not as the service's 400
            return body, "application/json"
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        return frame.to_json(orient="records", date_format="iso").encode(), "application/json"
    if suffix == ".csv":
        return path.read_bytes(), "text/csv"
    if suffix == ".json":
        return json.dumps(to_payload(json.loads(path.read_text()))).encode(), "application/json"
    frame = pd.read_parquet(path)
    return json.dumps(to_payload(frame), default=str).encode(), "application/json"


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
    from mlops_pipeline.serving.client import ScoringClient, ScoringError, read_api_key

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
    if suffix not in (".csv", ".json", ".parquet"):
        raise InvalidInputError(
            f"--input {path.name}: unsupported file type '{suffix}'.",
            hint="Use a .csv, .json or .parquet file.",
        )
    try:
        with ScoringClient(url, api_key=api_key) as client:
            body, content_type = _predict_body(path, suffix, _typed_input(client))
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
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"--input {input_file} could not be read: {exc}") from exc

    def render(r: dict[str, Any]) -> None:
        print_table(
            ["row", "prediction"],
            [[str(i), json.dumps(value)] for i, value in enumerate(r["predictions"])],
            fold=frozenset({"prediction"}),
        )
        console.print(f"request id: {r['request_id']}")

    emit({"predictions": result.predictions, "request_id": result.request_id}, as_json, render)
