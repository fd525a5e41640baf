"""One process a `local:` supervisor runs (the proxy or a scoring service), and its health.

A `Child` starts its process with output appended to a log file, stops it gracefully, and asks
it over HTTP whether it is ready (`wait_ready`, on /ready) or merely alive (`answers_liveness`,
on /health/live). The supervisor (local_supervisor) decides what to do with the answers.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
from mlops_pipeline.errors import DeploymentError
from mlops_pipeline.targets.local_protocol import HOST, ChildState, last_error

STOP_TIMEOUT = 30.0
LIVENESS_PATH = "/health/live"
LIVENESS_TIMEOUT = 3.0
READY_POLL_SECONDS = 0.1


class Child:
    """One supervised process with its port, log file and health record."""

    def __init__(
        self, role: str, args: list[str], env: dict[str, str], port: int, log: Path
    ) -> None:
        self.role, self.args, self.env, self.port, self.log = role, args, env, port, log
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.answered = False  # has it answered HTTP since it was (re)started?
        self.missed = 0  # liveness probes in a row that got no answer

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Start (or restart) the process, its output appended to the log.

        Raises OSError when the executable cannot be started.
        """
        self.started_at, self.answered, self.missed = time.monotonic(), False, 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (the service drains and flushes capture), SIGKILL after `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def answers_liveness(self) -> bool:
        """True when the process answers HTTP on LIVENESS_PATH, whatever the status code:
        liveness asks whether it still serves at all, not whether its model is loaded."""
        try:
            httpx.get(self.url + LIVENESS_PATH, timeout=LIVENESS_TIMEOUT)
        except httpx.HTTPError:
            return False
        return True

    def describe(self) -> ChildState:
        return ChildState(
            pid=self.proc.pid if self.proc else None,
            port=self.port,
            log=self.log,
            restarts=self.restarts,
        )

    def wait_ready(self, path: str, timeout: float, cancel: threading.Event) -> None:
        """Return once GET `path` answers 200 (e.g. "/ready"), polling every 0.1 s.

        Args:
            path: the readiness path on the child's port.
            timeout: seconds to wait at most.
            cancel: set by the supervisor when it is stopping; the wait then ends early.

        Raises:
            DeploymentError: the process exited, the scoring service reports that its model
                failed to load (waiting longer would not help), or `timeout` seconds passed;
                the message names the child, its log and the log's last error line.
        """
        deadline = time.monotonic() + timeout
        where = f"The {self.role} on port {self.port} (log {self.log})"
        while time.monotonic() < deadline and not cancel.is_set():
            if self.exited():
                raise DeploymentError(
                    f"{where} exited with code {self.proc.returncode} before it was ready: "
                    f"{last_error(self.log)}"
                )
            try:
                response = httpx.get(self.url + path, timeout=2.0)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                self.answered = True
                return
            error = _service_error(response)
            if error.get("code") == "model_load_failed":
                raise DeploymentError(f"{where} could not load the model: {error.get('message')}")
            time.sleep(READY_POLL_SECONDS)
        raise DeploymentError(
            f"{where} was not ready within {timeout:.0f} s: {last_error(self.log)}"
        )


def _service_error(response: httpx.Response | None) -> dict:
    """The `error` object of a scoring-service error body; empty for anything else."""
    if response is None:
        return {}
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}
