"""The stack's step runner (`python -m mlops_pipeline.cli.step_runner --port P`): a warm process
that runs the flows of `mlops_pipeline.cli.steps.STEP_FLOWS` for the CLI, one at a time, as flow
runs on the stack's Prefect server.

GET /health answers {"status", "fingerprint", "flows"}; POST /steps {"flow", "params"} with
`Authorization: Bearer <token>` answers {"result", "warnings"}, or the error's HTTP status with
{"error": {"code", "message", ...}, "warnings"}. The token is drawn on start and written to
`$MLOPS_HOME/up/steps.token` (mode 0600).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import sys
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlops_pipeline.cli._output import run_flow, unexpected
from mlops_pipeline.cli.steps import (
    CLI_MLFLOW_ENV,
    STEP_FLOWS,
    fingerprint,
    load_flow,
    token_path,
)
from mlops_pipeline.errors import MLOpsError
from mlops_pipeline.settings import get_settings

logger = logging.getLogger(__name__)


class _WarningsOf(logging.Handler):
    """Collects this project's warnings during a step, to show them in the CLI that asked."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def create_app(token: str, settings_fingerprint: str) -> FastAPI:
    """The runner's FastAPI app: GET /health, POST /steps (bearer TOKEN)."""
    app = FastAPI(title="mlops step runner", docs_url=None, redoc_url=None)
    one_at_a_time = threading.Lock()  # steps share MLflow's process-wide fluent state
    flows = {name: load_flow(name) for name in STEP_FLOWS}  # imported once, here

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "fingerprint": settings_fingerprint, "flows": sorted(flows)}

    @app.post("/steps")
    def run(request: Request, body: dict[str, Any]) -> JSONResponse:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": {"code": "unauthorized", "message": "Bad token."}}, 401)
        flow = flows.get(str(body.get("flow")))
        params, cwd = body.get("params"), str(body.get("cwd"))
        if flow is None or not isinstance(params, dict) or not os.path.isdir(cwd):
            message = (
                f"Unknown step {body.get('flow')!r}, or no parameters or working directory. "
                f"Known steps: {', '.join(flows)}."
            )
            return JSONResponse({"error": {"code": "invalid_input", "message": message}}, 400)
        collected = _WarningsOf()
        project = logging.getLogger("mlops_pipeline")
        with one_at_a_time:  # so the working directory is this step's alone
            started, home = time.monotonic(), os.getcwd()
            project.addHandler(collected)
            os.chdir(cwd)
            try:
                result = run_flow(flow, **params)
            except Exception as exc:  # the CLI shows it as one line, the log keeps the trace
                error = exc if isinstance(exc, MLOpsError) else unexpected(exc)
                logger.exception("Step %s failed", flow.name)
                answer = {"error": error.to_dict(), "warnings": collected.lines}
                return JSONResponse(answer, error.http_status)
            finally:
                os.chdir(home)
                project.removeHandler(collected)
        logger.info("Ran step %s for the CLI in %.1f s", flow.name, time.monotonic() - started)
        return JSONResponse({"result": result, "warnings": collected.lines})

    return app


#: what a registration loads on first use: imported once in the background after start, so the
#: first `mlops register` after `mlops up` is as quick as the later ones
WARM_MODULES = (
    "mlflow.pyfunc",
    "mlops_pipeline.monitoring.profile",
    "mlops_pipeline.monitoring.validation",
    "pyarrow.parquet",
    "sklearn.base",
    "joblib",
)


def warm_up() -> None:
    """Import WARM_MODULES, map modules to distributions and open the registry (creating or
    migrating its schema)."""
    import importlib

    from mlops_pipeline.registry.registration import module_distributions
    from mlops_pipeline.tracking import connect

    started = time.monotonic()
    for module in WARM_MODULES:
        with contextlib.suppress(ImportError):  # e.g. scikit-learn is optional for users
            importlib.import_module(module)
    module_distributions()  # what pins a pickle's requirements; seconds to build
    try:
        connect()
    except Exception:  # the first step reports it, with its exit code
        logger.warning("Could not open the registry yet", exc_info=True)
    logger.info("Warm in %.1f s", time.monotonic() - started)


def serve(host: str, port: int) -> None:
    """Write a fresh token, then serve the runner until stopped (SIGTERM from `mlops down`)."""
    settings = get_settings()
    for name, value in CLI_MLFLOW_ENV.items():
        os.environ.setdefault(name, value)
    token = secrets.token_urlsafe(32)
    path = token_path(settings.resolved_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(token)
    temporary.replace(path)
    app = create_app(token, fingerprint(settings))
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The mlops stack's step runner.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
