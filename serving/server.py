"""Run the scoring service under uvicorn (httptools + uvloop, long keep-alive, no access log).

With several workers each binds its own listening socket on the port with SO_REUSEPORT, and the
kernel spreads new connections over them by a hash of the connection's addresses. uvicorn's
default, one socket shared by every worker, lets whichever worker wakes first accept a whole
burst of connections: 8 keep-alive connections could all land on one worker, leaving a core
idle for their lifetime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from .settings import ServingSettings, env_name

APP = "mlops_pipeline.serving.app:create_app"


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
    ready_dir = None
    if settings.workers > 1 and settings.ready_dir is None:
        # each worker has its own SO_REUSEPORT socket, so /ready reaches one of them: they
        # mark themselves loaded here and every one answers 200 only once all have
        ready_dir = tempfile.mkdtemp(prefix="mlops-ready-")
        settings = settings.model_copy(update={"ready_dir": Path(ready_dir)})
    # workers rebuild the settings from the environment
    os.environ.update(
        {
            env_name(k): json.dumps(v) if isinstance(v, dict) else str(v)
            for k, v in settings.model_dump(exclude_none=True).items()
        }
    )
    options = dict(
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
    try:
        if settings.workers > 1:
            config = uvicorn.Config(APP, factory=True, **options)
            sock = ReusePortSocket.listen_on(settings.host, settings.port)
            logging.getLogger(__name__).info(
                "serving on %s:%d with %d workers, one SO_REUSEPORT socket each",
                settings.host,
                sock.getsockname()[1],
                settings.workers,
            )
            # uvicorn's supervisor: restarts dead or hung workers, stops them all on SIGTERM
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.run(APP, factory=True, **options)
    finally:
        for directory in (multiproc_dir, ready_dir):
            if directory:
                shutil.rmtree(directory, ignore_errors=True)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _bind_reuseport(family: int, address: tuple) -> socket.socket:
    """A TCP socket bound to `address` with SO_REUSEPORT (not yet listening)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


class ReusePortSocket(socket.socket):
    """The supervisor's placeholder socket: bound with SO_REUSEPORT (so it holds the port and
    resolves port 0) but never listening, so the kernel gives it no connections.

    uvicorn's supervisor hands its sockets to each worker it spawns by pickling them; this one
    pickles as a recipe instead of a shared descriptor, so unpickling in a worker binds a new
    SO_REUSEPORT socket on the same address, which that worker alone listens on.
    """

    @classmethod
    def listen_on(cls, host: str, port: int) -> ReusePortSocket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = cls(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        return sock

    def __reduce_ex__(self, protocol: object) -> tuple:
        return _bind_reuseport, (self.family, self.getsockname()[:2])
