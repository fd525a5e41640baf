"""The supervisor of one `local:` deployment: a detached process that keeps it serving.

Run it:  python -m mlops_pipeline.targets.local_supervisor DEPLOYMENT_DIR
(`LocalTarget.create` starts it in a new session, with its control token in the environment
variable MLOPS_SUPERVISOR_TOKEN, which it removes from its own environment before starting
children, so no child inherits it.)

It owns two kinds of children and restarts them when they exit or hang:

* the proxy (`python -m mlops_pipeline.serving.proxy`) on the deployment's stable port, and
* the active scoring service (`python -m mlops_pipeline.serving`) on a private port.

Children inherit the supervisor's environment; what the deployment defines (model, port,
workers, capture, API keys for the service; port, upstream, admin token for the proxy) is set on
top of it. The service and the proxy read only their own `MLOPS_SERVING_` variables, so the
pipeline's `MLOPS_` settings pass through without effect.

Health: a new service counts as started once its `/ready` answers 200, and the proxy once
`/ready` answers through it. After that, every child is asked for `/health/live` every
LIVENESS_PERIOD seconds; a child that answers no HTTP at all LIVENESS_FAILURES times in a row
is killed, and restarted like one that crashed (with backoff: 2, 4, 8 ... 30 s).

`update` starts the new version on a fresh port, waits for its /ready, switches the proxy to it,
lets the old one drain and then stops it. A new version that exits or never becomes ready is
stopped and the old one keeps serving. Files and the control API: see local_protocol.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from mlops_pipeline.errors import ConflictError, DeploymentError, MLOpsError
from mlops_pipeline.serving.contract import free_port
from mlops_pipeline.serving.settings import PROXY_ENV_PREFIX, env_name
from mlops_pipeline.targets.base import DeployConfig, DeploymentStatus, serving_env
from mlops_pipeline.targets.local_process import LIVENESS_PATH, Child
from mlops_pipeline.targets.local_protocol import (
    HOST,
    TOKEN_VARIABLE,
    ActiveService,
    ChallengerRequest,
    ChallengerStarted,
    ControlEndpoint,
    ControlError,
    DeploymentFiles,
    DeploymentSpec,
    ServedModel,
    StopAccepted,
    SupervisorState,
    SwitchResult,
    UpdateRequest,
    now,
    write_model,
)
from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

PROXY_READY_TIMEOUT = 30.0
LIVENESS_PERIOD = 5.0
LIVENESS_FAILURES = 3
MAX_BACKOFF = 30.0


class Supervisor:
    """Runs inside the detached supervisor process of one deployment."""

    def __init__(self, files: DeploymentFiles, spec: DeploymentSpec, token: str) -> None:
        self.files = files
        self.spec = spec
        self.token = token
        self.proxy_token = secrets.token_urlsafe(32)
        self.lock = threading.RLock()
        self.update_lock = threading.Lock()
        self.stopping = threading.Event()
        self.proxy: Child | None = None
        self.active: Child | None = None
        self.active_model: ServedModel | None = None
        self.pending: Child | None = None
        # a challenger beside the active service: the proxy's canary or shadow upstream
        self.challenger: Child | None = None
        self.challenger_model: ServedModel | None = None
        self.challenger_ready = False  # restarted on a crash only once it was ready
        self.status = DeploymentStatus.CREATING
        self.error: str | None = None
        self.last_switch: SwitchResult | None = None

    # -- children --------------------------------------------------------------------------

    def _service(self, model: ServedModel, role: str = "service") -> Child:
        port = free_port()
        env = {
            **os.environ,
            **serving_env(model.model_uri, model.ref, self.spec.config, port=port),
            # the service resolves models:/ URIs with MLflow's own variables
            "MLFLOW_TRACKING_URI": self.spec.tracking_uri,
            "MLFLOW_REGISTRY_URI": self.spec.registry_uri,
        }
        log = self.files.service_log(model.model_version, port)
        return Child(role, [sys.executable, "-m", "mlops_pipeline.serving"], env, port, log)

    def _proxy(self, upstream: str) -> Child:
        env = {
            **os.environ,
            _proxy_env("host"): HOST,
            _proxy_env("port"): str(self.spec.port),
            _proxy_env("upstream"): upstream,
            _proxy_env("token"): self.proxy_token,
            _proxy_env("state_file"): str(self.files.proxy_state),
        }
        args = [sys.executable, "-m", "mlops_pipeline.serving.proxy"]
        return Child("proxy", args, env, self.spec.port, self.files.logs / "proxy.log")

    def _start_service(self, model: ServedModel) -> Child:
        child = self._service(model)
        with self.lock:
            self.pending = child
            child.start()
            self._save()
        try:
            child.wait_ready("/ready", self.spec.config.ready_timeout, self.stopping)
        except BaseException:
            child.stop()
            with self.lock:
                self.pending = None
                self._save()
            raise
        return child

    def _switch(self, new: Child, version: str) -> SwitchResult:
        drain_timeout = self.spec.config.drain_timeout
        try:
            response = httpx.put(
                f"http://{HOST}:{self.spec.port}/-/proxy/upstream",
                # the version labels the primary's stats and X-Model-Version
                json={"upstream": new.url, "drain_timeout": drain_timeout, "version": version},
                headers={"Authorization": f"Bearer {self.proxy_token}"},
                timeout=drain_timeout + 30,
            )
        except httpx.HTTPError as exc:
            raise DeploymentError(f"The proxy did not accept the switch: {exc}.") from exc
        if response.status_code != 200:
            raise DeploymentError(f"The proxy refused the switch: {response.text}")
        return SwitchResult.model_validate_json(response.content).model_copy(update={"at": now()})

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """First deployment: service, then the proxy in front of it; DeploymentError if either
        does not become ready."""
        service = self._start_service(self.spec.model)
        # the proxy reads its state file at start: so its primary is labelled with the version
        # from the first request on (stats per version, X-Model-Version)
        self.files.proxy_state.write_text(
            json.dumps({"upstream": service.url, "version": self.spec.model.model_version})
        )
        proxy = self._proxy(service.url)
        with self.lock:
            self.active, self.active_model, self.pending = service, self.spec.model, None
            self.proxy = proxy
            proxy.start()
            self._save()
        proxy.wait_ready("/ready", PROXY_READY_TIMEOUT, self.stopping)
        with self.lock:
            self.status = DeploymentStatus.READY
            self._save()

    def update(self, model: ServedModel, config: DeployConfig) -> SwitchResult:
        """Start `model`, switch the proxy to it, drain and stop the old service.

        Raises DeploymentError when the new version fails; the old one keeps serving and the
        spec keeps its previous config.
        """
        with self.update_lock:
            previous = self.spec
            self.spec = previous.model_copy(update={"config": config})
            try:
                new = self._start_service(model)
            except BaseException:
                self.spec = previous
                raise
            with self.lock:
                try:
                    switched = self._switch(new, model.model_version)
                except DeploymentError:
                    new.stop()
                    self.pending = None
                    self.spec = previous
                    self._save()
                    raise
                old, self.active, self.active_model, self.pending = self.active, new, model, None
                self.last_switch = switched
                self.spec = self.spec.model_copy(update={"model": model})
                write_model(self.files.spec, self.spec)
                self.status = DeploymentStatus.READY
                self._save()
            if old is not None:
                old.stop()
            return switched

    def start_challenger(self, model: ServedModel) -> Child:
        """Start `model` beside the active service and wait for its /ready; it gets traffic
        only once the caller adds a proxy route to it.

        Raises:
            ConflictError: a challenger already runs.
            DeploymentError: it exited or was not ready in time (then it is stopped).
        """
        with self.update_lock:
            if self.challenger is not None:
                raise ConflictError(
                    f"Challenger version {self.challenger_model.model_version} already runs."
                )
            child = self._service(model, role="challenger")
            with self.lock:
                self.challenger, self.challenger_model = child, model
                child.start()
                self._save()
            try:
                child.wait_ready("/ready", self.spec.config.ready_timeout, self.stopping)
            except BaseException:
                self.stop_challenger()
                raise
            self.challenger_ready = True
            return child

    def stop_challenger(self) -> None:
        """Stop the challenger (it flushes its capture); nothing to do when none runs."""
        with self.lock:
            child, self.challenger, self.challenger_model = self.challenger, None, None
            self.challenger_ready = False
            self._save()
        if child is not None:
            child.stop()

    def promote_challenger(self) -> SwitchResult:
        """Make the challenger the active service: the proxy switches to it (its canary route
        goes), the old service drains and stops, and spec.json names the new version.

        Raises:
            ConflictError: no challenger runs.
            DeploymentError: the proxy refused (the champion keeps serving, the challenger runs).
        """
        with self.update_lock:
            if self.challenger is None or self.challenger_model is None:
                raise ConflictError("No challenger runs, so there is nothing to promote.")
            new, model = self.challenger, self.challenger_model
            with self.lock:
                switched = self._switch(new, model.model_version)
                new.role = "service"
                old, self.active, self.active_model = self.active, new, model
                self.challenger = self.challenger_model = None
                self.challenger_ready = False
                self.last_switch = switched
                self.spec = self.spec.model_copy(update={"model": model})
                write_model(self.files.spec, self.spec)
                self._save()
            if old is not None:
                old.stop()
            return switched

    def stop(self) -> None:
        """Proxy first (stop accepting), then the services (they flush capture)."""
        self.stopping.set()
        with self.lock:
            for child in (self.proxy, self.pending, self.active, self.challenger):
                if child is not None:
                    child.stop()
            self.status = DeploymentStatus.STOPPED
            self._save()

    def watch(self) -> None:
        """Restart exited children, with backoff, until asked to stop."""
        next_try: dict[str, float] = {}
        while not self.stopping.wait(0.5):
            with self.lock:
                challenger = self.challenger if self.challenger_ready else None
                for child in (self.active, self.proxy, challenger):
                    if child is None or not child.exited() or self.stopping.is_set():
                        continue
                    if time.monotonic() < next_try.get(child.role, 0.0):
                        continue
                    logger.warning(
                        "%s on port %d exited with %s; restarting",
                        child.role,
                        child.port,
                        child.proc.returncode,
                    )
                    child.restarts += 1
                    backoff = min(MAX_BACKOFF, 2.0**child.restarts)
                    next_try[child.role] = time.monotonic() + backoff
                    if child is self.proxy and self.active is not None:
                        child.env[_proxy_env("upstream")] = self.active.url
                    child.start()
                    self._save()

    def probe_liveness(self) -> None:
        """Ask every running child for /health/live; kill one that stopped answering, so that
        `watch` restarts it. Runs until asked to stop."""
        while not self.stopping.wait(LIVENESS_PERIOD):
            with self.lock:
                children = [c for c in (self.active, self.proxy) if c and not c.exited()]
            for child in children:
                proc = child.proc
                if proc is None:
                    continue
                if child.answers_liveness():
                    child.answered, child.missed = True, 0
                    continue
                # a (re)started child gets its ready timeout to start answering at all
                grace = self.spec.config.ready_timeout
                if not child.answered and time.monotonic() - child.started_at < grace:
                    continue
                child.missed += 1
                if child.missed >= LIVENESS_FAILURES and not self.stopping.is_set():
                    logger.warning(
                        "%s on port %d answered no %s probe %d times in a row; killing it",
                        child.role,
                        child.port,
                        LIVENESS_PATH,
                        child.missed,
                    )
                    # a hung process may ignore SIGTERM; `watch` restarts it once it is gone
                    proc.kill()

    def state(self) -> SupervisorState:
        active = None
        if self.active is not None and self.active_model is not None:
            active = ActiveService(
                **self.active.describe().model_dump(), **self.active_model.model_dump()
            )
        challenger = None
        if self.challenger is not None and self.challenger_model is not None:
            challenger = ActiveService(
                **self.challenger.describe().model_dump(), **self.challenger_model.model_dump()
            )
        return SupervisorState(
            challenger=challenger,
            status=self.status,
            error=self.error,
            supervisor_pid=os.getpid(),
            proxy=self.proxy.describe() if self.proxy else None,
            active=active,
            pending=self.pending.describe() if self.pending else None,
            last_switch=self.last_switch,
            updated_at=now(),
        )

    def _save(self) -> None:
        write_model(self.files.state, self.state())

    def serve_control(self) -> ThreadingHTTPServer:
        """Start the control API on a free port of HOST, in a daemon thread."""
        server = ThreadingHTTPServer((HOST, 0), _control_handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _control_handler(supervisor: Supervisor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

        def _reply(self, status: int, payload: BaseModel) -> None:
            body = payload.model_dump_json().encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if not secrets.compare_digest(self.headers.get("X-Token", ""), supervisor.token):
                self._reply(401, ControlError(error="unauthorized"))
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/update":
                try:
                    request = UpdateRequest.model_validate_json(body)
                except ValidationError as exc:
                    self._reply(400, ControlError(error=f"invalid update request: {exc}"))
                    return
                try:
                    result = supervisor.update(request.model, request.config)
                except DeploymentError as exc:
                    self._reply(500, ControlError(error=str(exc)))
                    return
                self._reply(200, result)
            elif self.path.startswith("/challenger/"):
                self._challenger(self.path.removeprefix("/challenger/"), body)
            elif self.path == "/stop":
                self._reply(202, StopAccepted())
                threading.Thread(target=supervisor.stop, daemon=True).start()
            else:
                self._reply(404, ControlError(error="unknown path"))

        def _challenger(self, action: str, body: bytes) -> None:
            try:
                if action == "start":
                    request = ChallengerRequest.model_validate_json(body)
                    child = supervisor.start_challenger(request.model)
                    self._reply(200, ChallengerStarted(upstream=child.url, model=request.model))
                elif action == "stop":
                    supervisor.stop_challenger()
                    self._reply(200, StopAccepted())
                elif action == "promote":
                    self._reply(200, supervisor.promote_challenger())
                else:
                    self._reply(404, ControlError(error="unknown path"))
            except ValidationError as exc:
                self._reply(400, ControlError(error=f"invalid challenger request: {exc}"))
            except ConflictError as exc:
                self._reply(409, ControlError(error=str(exc)))
            except DeploymentError as exc:
                self._reply(500, ControlError(error=str(exc)))

    return Handler


def _proxy_env(field: str) -> str:
    return env_name(field, PROXY_ENV_PREFIX)


def supervise(state_dir: Path) -> int:
    """Run the supervisor of the deployment in `state_dir` until it is stopped.

    Args:
        state_dir: $MLOPS_HOME/local/<name>, holding the spec.json the client wrote.

    Returns:
        The process exit status: 0 after a stop, 1 when the deployment never became ready (the
        reason is in state.json as `error`, status `failed`).

    Raises:
        KeyError: MLOPS_SUPERVISOR_TOKEN is not set.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    token = os.environ.pop(TOKEN_VARIABLE)
    files = DeploymentFiles(state_dir)
    spec = files.read_spec()
    if spec is None:
        logger.error("no valid deployment spec in %s", files.spec)
        return 1
    supervisor = Supervisor(files, spec, token)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    server = supervisor.serve_control()
    endpoint = ControlEndpoint(
        pid=os.getpid(),
        port=server.server_address[1],
        token=token,
        proxy_token=supervisor.proxy_token,
    )
    write_model(files.control, endpoint, mode=0o600)
    try:
        supervisor.start()
    except (MLOpsError, OSError) as exc:
        logger.error("deployment failed: %s", exc)
        supervisor.stop()
        supervisor.status, supervisor.error = DeploymentStatus.FAILED, str(exc)
        supervisor._save()
        return 1
    logger.info("deployment ready on port %s", spec.port)
    threading.Thread(target=supervisor.probe_liveness, daemon=True).start()
    supervisor.watch()
    supervisor.stop()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1])))
