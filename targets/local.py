"""The `local:` target: scoring services as supervised processes behind one stable port.

No Docker needed. Each deployment gets a supervisor process (`local_supervisor`, detached from
the CLI that started it) that runs a proxy on the deployment's stable port and the active
scoring service on a private port, restarting either when it crashes or hangs. This module is
the client side, `LocalTarget`: it writes the deployment's spec, starts the supervisor and waits
for it, and reads and controls it afterwards through the files and the control API described in
local_protocol. Everything lives in $MLOPS_HOME/local/<name>/, so `mlops status` works from any
process.

The services inherit the environment of the process that runs `mlops deploy`. They read only
`MLOPS_SERVING_*` variables (serving/settings.py); what the deployment sets (model, port,
workers, capture, API keys) always wins, and any other MLOPS_SERVING_ setting found there, e.g.
MLOPS_SERVING_MAX_ROWS, applies to the deployment's services too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from mlops_pipeline.errors import (
    BackendUnavailableError,
    ConflictError,
    DeploymentError,
    InvalidInputError,
    MLOpsError,
    NotFoundError,
)
from mlops_pipeline.rollout.admin import ProxyAccess
from mlops_pipeline.serving.contract import free_port, port_problem
from mlops_pipeline.settings import get_settings
from mlops_pipeline.targets.base import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    ModelRef,
    Target,
)
from mlops_pipeline.targets.local_process import STOP_TIMEOUT
from mlops_pipeline.targets.local_protocol import (
    HOST,
    TOKEN_VARIABLE,
    ChallengerRequest,
    ChallengerStarted,
    ControlError,
    DeploymentFiles,
    DeploymentSpec,
    ServedModel,
    UpdateRequest,
    last_error,
    log_tail,
    now,
    pid_alive,
    write_model,
)
from pydantic import BaseModel, ValidationError

__all__ = ["LocalTarget"]

SUPERVISOR_MODULE = "mlops_pipeline.targets.local_supervisor"
# beyond the service's own ready timeout: interpreter start-up, the proxy, file polling
START_MARGIN = 60.0
# beyond ready + drain timeouts for an update: the old service's stop and the proxy switch
UPDATE_MARGIN = 90.0


class LocalTarget(Target):
    """Deployments as local processes; the embedded default that needs no Docker."""

    scheme = "local"
    needs_image = False

    def __init__(self, target_uri: str = "local:") -> None:
        super().__init__(target_uri)
        if self.location:
            raise InvalidInputError(
                f"The local target takes no location, got '{target_uri}'.",
                hint="Use --target local:",
                field="target",
            )
        self.root = get_settings().resolved_home / "local"

    def _files(self, name: str) -> DeploymentFiles:
        return DeploymentFiles(self.root / name)

    def _control(
        self, name: str, path: str, body: BaseModel | None, timeout: float
    ) -> httpx.Response:
        """POST `body` to the supervisor's control API; BackendUnavailableError when the
        supervisor is not running."""
        control = self._files(name).read_control()
        if control is None or not pid_alive(control.pid):
            raise BackendUnavailableError(
                f"The supervisor of local deployment '{name}' is not running.",
                hint=f"Run `mlops undeploy {name}` and deploy it again.",
            )
        return httpx.post(
            f"http://{HOST}:{control.port}{path}",
            content=body.model_dump_json() if body is not None else b"",
            headers={"X-Token": control.token, "Content-Type": "application/json"},
            timeout=timeout,
        )

    def create(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        files = self._files(name)
        if files.spec.exists():
            raise ConflictError(
                f"A local deployment named '{name}' already exists.",
                hint=f"Use `mlops update {name} --model MODEL_URI`, or undeploy it first.",
                deployment=name,
            )
        port = config.port or free_port()
        if port_problem(port, HOST) is not None:
            raise ConflictError(
                f"Port {port} is already in use on {HOST}.",
                hint="Choose another with --port, or omit --port to get a free one.",
                field="port",
                value=port,
            )
        settings = get_settings()
        files.logs.mkdir(parents=True, exist_ok=True)
        spec = DeploymentSpec(
            name=name,
            target_uri=self.target_uri,
            port=port,
            model=ServedModel.of(model),
            config=config,
            tracking_uri=settings.resolved_tracking_uri,
            registry_uri=settings.registry_uri or settings.resolved_tracking_uri,
            created_at=now(),
        )
        write_model(files.spec, spec)
        try:
            with files.supervisor_log.open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", SUPERVISOR_MODULE, str(files.root)],
                    env={**os.environ, TOKEN_VARIABLE: secrets.token_urlsafe(32)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            # reap it when it exits, so a long-lived caller does not keep a zombie
            threading.Thread(target=proc.wait, daemon=True).start()
            self._await_start(name, model, proc, config.ready_timeout + START_MARGIN)
        except BaseException:
            # nothing half-deployed: also on Ctrl-C while waiting
            self.delete(name)
            raise
        return self.get(name)

    def _await_start(
        self, name: str, model: ModelRef, proc: subprocess.Popen, timeout: float
    ) -> None:
        files = self._files(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = files.read_state()
            if state.status == DeploymentStatus.READY:
                return
            if state.status == DeploymentStatus.FAILED or proc.poll() is not None:
                reason = state.error or last_error(files.supervisor_log)
                raise DeploymentError(
                    f"Local deployment '{name}' of {model.uri} failed: {reason}",
                    deployment=name,
                )
            time.sleep(0.2)
        raise DeploymentError(
            f"Local deployment '{name}' of {model.uri} was not ready within {timeout:.0f} s; "
            "nothing was left running.",
            deployment=name,
        )

    def update(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        self.get(name)
        request = UpdateRequest(model=ServedModel.of(model), config=config)
        timeout = config.ready_timeout + config.drain_timeout + UPDATE_MARGIN
        try:
            response = self._control(name, "/update", request, timeout=timeout)
        except httpx.HTTPError as exc:
            raise DeploymentError(
                f"Updating local deployment '{name}' to {model.uri} failed: {exc}."
            ) from exc
        if response.status_code != 200:
            try:
                reason = ControlError.model_validate_json(response.content).error
            except ValidationError:
                reason = response.text
            raise DeploymentError(
                f"Updating local deployment '{name}' to {model.uri} failed; the previous "
                f"version keeps serving. {reason}",
                deployment=name,
            )
        return self.get(name)

    # --- live challenger -------------------------------------------------------------------

    def _challenger_call(self, name: str, action: str, body: BaseModel | None, timeout: float):
        self.get(name)
        try:
            response = self._control(name, f"/challenger/{action}", body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise DeploymentError(
                f"The supervisor of '{name}' did not answer /challenger/{action}: {exc}."
            ) from exc
        if response.status_code == 200:
            return response
        try:
            reason = ControlError.model_validate_json(response.content).error
        except ValidationError:
            reason = response.text
        if response.status_code == 409:
            raise ConflictError(
                f"Local deployment '{name}': {reason}",
                hint=f"Stop the running challenger first (mlops canary/shadow of '{name}' "
                "stops it when it ends).",
                deployment=name,
            )
        raise DeploymentError(
            f"Challenger {action} for local deployment '{name}' failed; the champion keeps "
            f"serving. {reason}",
            deployment=name,
        )

    def start_challenger(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> str:
        request = ChallengerRequest(model=ServedModel.of(model))
        timeout = config.ready_timeout + START_MARGIN
        response = self._challenger_call(name, "start", request, timeout)
        return ChallengerStarted.model_validate_json(response.content).upstream

    def stop_challenger(self, name: str) -> None:
        if self._files(name).read_spec() is None:
            return
        self._challenger_call(name, "stop", None, timeout=STOP_TIMEOUT + 10)

    def promote_challenger(self, name: str) -> Deployment:
        config = self.get(name).deploy_config
        self._challenger_call(name, "promote", None, config.drain_timeout + UPDATE_MARGIN)
        return self.get(name)

    def proxy_access(self, name: str) -> ProxyAccess:
        spec = self._files(name).read_spec()
        control = self._files(name).read_control()
        if spec is None:
            self.get(name)  # NotFoundError
        if control is None or not control.proxy_token or not pid_alive(control.pid):
            raise BackendUnavailableError(
                f"The supervisor of local deployment '{name}' is not running (or predates "
                "canary support).",
                hint=f"Redeploy it: `mlops undeploy {name}` then `mlops deploy`.",
            )
        return ProxyAccess(url=f"http://{HOST}:{spec.port}", token=control.proxy_token)

    def delete(self, name: str) -> None:
        files = self._files(name)
        if not files.root.exists():
            return
        control = files.read_control()
        supervisor_pid = control.pid if control else None
        if pid_alive(supervisor_pid):
            with contextlib.suppress(MLOpsError, httpx.HTTPError):
                self._control(name, "/stop", None, timeout=10.0)
            deadline = time.monotonic() + STOP_TIMEOUT + 10
            while pid_alive(supervisor_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        _kill_leftovers(files)
        shutil.rmtree(files.root, ignore_errors=True)

    def list(self) -> list[Deployment]:
        if not self.root.exists():
            return []
        return [
            self.get(path.name)
            for path in sorted(self.root.iterdir())
            if (path / "spec.json").exists()
        ]

    def get(self, name: str) -> Deployment:
        files = self._files(name)
        spec = files.read_spec()
        if spec is None:
            raise NotFoundError(
                f"No local deployment named '{name}'.",
                hint="List them with `mlops deployments list`.",
                deployment=name,
            )
        state = files.read_state()
        control = files.read_control()
        status = state.status
        supervisor_alive = control is not None and pid_alive(control.pid)
        if status in (DeploymentStatus.READY, DeploymentStatus.CREATING) and not supervisor_alive:
            status = DeploymentStatus.UNHEALTHY
        config = spec.config.model_dump()
        return Deployment(
            name=name,
            target_uri=self.target_uri,
            model_name=spec.model.model_name,
            model_version=spec.model.model_version,
            model_uri=spec.model.model_uri,
            endpoint_url=f"http://{HOST}:{spec.port}",
            status=status,
            capture_uri=spec.config.capture_uri,
            created_at=spec.created_at,
            updated_at=state.updated_at or spec.created_at,
            config={**config, "port": spec.port},
        )

    def health(self, name: str) -> dict:
        """The base health plus the proxy's `routes` (the canary/shadow split) while a
        challenger runs, so `mlops status` shows the split."""
        result = super().health(name)
        if self._files(name).read_state().challenger is not None:
            result["routes"] = _routes(self, name)
        return result

    def logs(self, name: str, tail: int = 100) -> str:
        self.get(name)
        files = self._files(name)
        active = files.read_state().active
        return log_tail(active.log if active else files.supervisor_log, tail)


def _routes(target: Target, name: str) -> dict | None:
    """The proxy's routes as JSON, or None when they cannot be read (health never raises)."""
    from mlops_pipeline.rollout.admin import ProxyAdmin

    try:
        return ProxyAdmin(target.proxy_access(name), timeout=5.0).routes().model_dump()
    except MLOpsError:
        return None


def _kill_leftovers(files: DeploymentFiles) -> None:
    """Kill what a dead or stuck supervisor left behind, by the pids it recorded."""
    state = files.read_state()
    control = files.read_control()
    pids = [control.pid if control else None] + [
        child.pid
        for child in (state.proxy, state.pending, state.active, state.challenger)
        if child is not None
    ]
    for pid in pids:
        if not pid_alive(pid):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        # only processes we started: guards against a recycled pid
        if b"serving" not in cmdline and str(files.root).encode() not in cmdline:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
