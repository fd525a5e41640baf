"""Run the scoring service under uvicorn (httptools + uvloop, long keep-alive, no access log)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile

import uvicorn

from .settings import ServingSettings, env_name


def run(settings: ServingSettings) -> None:
    """Serve until SIGTERM/SIGINT: uvicorn stops accepting, finishes requests, flushes capture."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; the handler it restores
    # then is this one, so SIGTERM/SIGINT end the process with status 0 as deployments expect
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    multiproc_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # must be set before workers import prometheus_client, so /metrics sums all workers
        multiproc_dir = tempfile.mkdtemp(prefix="mlops-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    # workers rebuild the settings from the environment
    os.environ.update(
        {env_name(k): str(v) for k, v in settings.model_dump(exclude_none=True).items()}
    )
    try:
        uvicorn.run(
            "mlops_pipeline.serving.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            server_header=False,
            timeout_keep_alive=settings.keep_alive_seconds,
            timeout_graceful_shutdown=int(settings.shutdown_timeout),
            log_level=settings.log_level.lower(),
        )
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
