"""The `local:` target: scoring services as supervised processes behind one stable port.

No Docker needed. Each deployment gets a supervisor process (`python -m targets.local DIR`,
detached from the CLI that started it) that owns two kinds of children and restarts them when
they crash:

* the proxy (`python -m mlops_pipeline.serving.proxy`) on the deployment's stable port, and
* the active scoring service (`python -m mlops_pipeline.serving`) on a private port.

`update` asks the supervisor (a token-protected HTTP control API on 127.0.0.1) to start the new
version on a fresh port, wait for its /ready, switch the proxy to it, let the old one drain and
then stop it. A new version that exits or never becomes ready is stopped and the old one keeps
serving. Everything lives in $MLOPS_HOME/local/<name>/ (spec.json, state.json, control.json,
logs/), so `mlops status` works from any process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from mlops_pipeline.errors import (
    BackendUnavailableError,
    ConflictError,
    DeploymentError,
    InvalidInputError,
    MLOpsError,
    NotFoundError,
)
from mlops_pipeline.settings import get_settings
from mlops_pipeline.targets.base import (
    DeployConfig,
    Deployment,
    DeploymentStatus,
    ModelRef,
    Target,
    serving_env,
)

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 20
# Never inherited by children: the supervisor's secret, and service settings of the caller's
# shell that would otherwise leak into a deployment that did not ask for them.
PRIVATE_ENV = frozenset(
    {
        "MLOPS_SUPERVISOR_TOKEN",
        "MLOPS_MODEL_URI",
        "MLOPS_MODEL_NAME",
        "MLOPS_MODEL_VERSION",
        "MLOPS_HOST",
        "MLOPS_PORT",
        "MLOPS_WORKERS",
        "MLOPS_CAPTURE_URI",
        "MLOPS_SAMPLE_RATE",
        "MLOPS_API_KEY_FILE",
        "MLOPS_IMAGE",
        "MLOPS_PROXY_TOKEN",
        "MLOPS_PROXY_TOKEN_FILE",
    }
)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _write_json(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Write atomically so a reader in another process never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def free_port() -> int:
    """A port the OS considers free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def pid_alive(pid: int | None) -> bool:
    """True for a running process; zombies (exited, not yet reaped) count as gone."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _last_error(log: Path) -> str:
    """The line of a log that best says what went wrong (the exception, else the last line)."""
    lines = [line.strip() for line in _tail(log, 200).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", line):
            return line
    return lines[-1] if lines else "(no output)"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class Child:
    """One supervised process with its port and log file."""

    def __init__(
        self, role: str, args: list[str], env: dict[str, str], port: int, log: Path
    ) -> None:
        self.role, self.args, self.env, self.port, self.log = role, args, env, port, log
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
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
        """SIGTERM (the service drains and flushes capture), SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def describe(self) -> dict[str, Any]:
        return {
            "pid": self.proc.pid if self.proc else None,
            "port": self.port,
            "log": str(self.log),
            "restarts": self.restarts,
        }


class Supervisor:
    """Runs inside the detached supervisor process of one deployment."""

    def __init__(self, state_dir: Path, token: str) -> None:
        self.dir = state_dir
        self.token = token
        self.proxy_token = secrets.token_urlsafe(32)
        self.spec = _read_json(state_dir / "spec.json") or {}
        self.lock = threading.RLock()
        self.update_lock = threading.Lock()
        self.stopping = threading.Event()
        self.proxy: Child | None = None
        self.active: Child | None = None
        self.active_model: dict[str, Any] = {}
        self.pending: Child | None = None
        self.status = DeploymentStatus.CREATING
        self.error: str | None = None
        self.last_switch: dict[str, Any] | None = None

    # -- children --------------------------------------------------------------------------

    def _service(self, model: dict[str, Any], port: int | None = None) -> Child:
        config = DeployConfig.model_validate(self.spec["config"])
        port = port or free_port()
        ref = ModelRef(model["model_name"], model["model_version"])
        inherited = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        env = {**inherited, **serving_env(model["model_uri"], ref, config, port=port)}
        # serving resolves models:/ URIs with MLflow's own variables
        env["MLFLOW_TRACKING_URI"] = self.spec["tracking_uri"]
        env["MLFLOW_REGISTRY_URI"] = self.spec["registry_uri"]
        log = self.dir / "logs" / f"service-v{ref.version}-{port}.log"
        return Child("service", [sys.executable, "-m", "mlops_pipeline.serving"], env, port, log)

    def _proxy(self, upstream: str) -> Child:
        port = self.spec["port"]
        env = {
            **{k: v for k, v in os.environ.items() if k not in PRIVATE_ENV},
            "MLOPS_PROXY_HOST": HOST,
            "MLOPS_PROXY_PORT": str(port),
            "MLOPS_PROXY_UPSTREAM": upstream,
            "MLOPS_PROXY_TOKEN": self.proxy_token,
            "MLOPS_PROXY_STATE_FILE": str(self.dir / "proxy-upstream.json"),
        }
        log = self.dir / "logs" / "proxy.log"
        return Child(
            "proxy", [sys.executable, "-m", "mlops_pipeline.serving.proxy"], env, port, log
        )

    def _wait_ready(self, child: Child, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        where = f"The {child.role} on port {child.port} (log {child.log})"
        while time.monotonic() < deadline and not self.stopping.is_set():
            if child.exited():
                raise DeploymentError(
                    f"{where} exited with code {child.proc.returncode} before it was ready: "
                    f"{_last_error(child.log)}"
                )
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                response = httpx.get(child.url + path, timeout=2.0)
                if response.status_code == 200:
                    return
                error = response.json()["error"]
                # the scoring service stays up after a failed load; waiting longer won't help
                if error["code"] == "model_load_failed":
                    raise DeploymentError(f"{where} could not load the model: {error['message']}")
            time.sleep(0.1)
        raise DeploymentError(
            f"{where} was not ready within {timeout:.0f} s: {_last_error(child.log)}"
        )

    def _start_service(self, model: dict[str, Any]) -> Child:
        config = DeployConfig.model_validate(self.spec["config"])
        child = self._service(model)
        with self.lock:
            self.pending = child
            child.start()
            self._save()
        try:
            self._wait_ready(child, "/ready", config.ready_timeout)
        except BaseException:
            child.stop()
            with self.lock:
                self.pending = None
                self._save()
            raise
        return child

    def _switch(self, new: Child) -> dict[str, Any]:
        config = DeployConfig.model_validate(self.spec["config"])
        try:
            response = httpx.put(
                f"http://{HOST}:{self.spec['port']}/-/proxy/upstream",
                json={"upstream": new.url, "drain_timeout": config.drain_timeout},
                headers={"Authorization": f"Bearer {self.proxy_token}"},
                timeout=config.drain_timeout + 30,
            )
        except httpx.HTTPError as exc:
            raise DeploymentError(f"The proxy did not accept the switch: {exc}.") from exc
        if response.status_code != 200:
            raise DeploymentError(f"The proxy refused the switch: {response.text}")
        return response.json()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """First deployment: service, then the proxy in front of it."""
        service = self._start_service(self.spec["model"])
        proxy = self._proxy(service.url)
        with self.lock:
            self.active, self.active_model, self.pending = service, self.spec["model"], None
            self.proxy = proxy
            proxy.start()
            self._save()
        self._wait_ready(proxy, "/ready", 30.0)
        with self.lock:
            self.status = DeploymentStatus.READY
            self._save()

    def update(self, model: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        """Start `model`, switch the proxy to it, drain and stop the old service."""
        with self.update_lock:
            previous_config = self.spec["config"]
            self.spec["config"] = config
            try:
                new = self._start_service(model)
            except BaseException:
                self.spec["config"] = previous_config
                raise
            with self.lock:
                try:
                    switched = self._switch(new)
                except DeploymentError:
                    new.stop()
                    self.pending = None
                    self.spec["config"] = previous_config
                    self._save()
                    raise
                old, self.active, self.active_model, self.pending = self.active, new, model, None
                self.last_switch = {**switched, "at": _now()}
                self.spec["model"] = model
                _write_json(self.dir / "spec.json", self.spec)
                self.status = DeploymentStatus.READY
                self._save()
            if old is not None:
                old.stop()
            return switched

    def stop(self) -> None:
        """Proxy first (stop accepting), then the services (they flush capture)."""
        self.stopping.set()
        with self.lock:
            for child in (self.proxy, self.pending, self.active):
                if child is not None:
                    child.stop()
            self.status = DeploymentStatus.STOPPED
            self._save()

    def watch(self) -> None:
        """Restart crashed children, with backoff, until asked to stop."""
        next_try: dict[str, float] = {}
        while not self.stopping.wait(0.5):
            with self.lock:
                for child in (self.active, self.proxy):
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
                    next_try[child.role] = time.monotonic() + min(30.0, 2.0**child.restarts)
                    if child is self.proxy and self.active is not None:
                        child.env["MLOPS_PROXY_UPSTREAM"] = self.active.url
                    child.start()
                    self._save()

    def _save(self) -> None:
        _write_json(
            self.dir / "state.json",
            {
                "status": str(self.status),
                "error": self.error,
                "supervisor_pid": os.getpid(),
                "proxy": self.proxy.describe() if self.proxy else None,
                "active": {**self.active.describe(), **self.active_model} if self.active else None,
                "pending": self.pending.describe() if self.pending else None,
                "last_switch": self.last_switch,
                "updated_at": _now(),
            },
        )

    def serve_control(self) -> ThreadingHTTPServer:
        supervisor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                logger.debug(format, *args)

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if not secrets.compare_digest(self.headers.get("X-Token", ""), supervisor.token):
                    self._reply(401, {"error": "unauthorized"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/update":
                    try:
                        result = supervisor.update(request["model"], request["config"])
                    except DeploymentError as exc:
                        self._reply(500, {"error": str(exc)})
                        return
                    self._reply(200, result)
                elif self.path == "/stop":
                    self._reply(202, {"stopping": True})
                    threading.Thread(target=supervisor.stop, daemon=True).start()
                else:
                    self._reply(404, {"error": "unknown path"})

        server = ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def supervise(state_dir: Path) -> int:
    """Entry point of the detached supervisor process."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    token = os.environ["MLOPS_SUPERVISOR_TOKEN"]
    supervisor = Supervisor(state_dir, token)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    server = supervisor.serve_control()
    _write_json(
        state_dir / "control.json",
        {"pid": os.getpid(), "port": server.server_address[1], "token": token},
        mode=0o600,
    )
    try:
        supervisor.start()
    except (MLOpsError, OSError) as exc:
        logger.error("deployment failed: %s", exc)
        supervisor.stop()
        supervisor.status, supervisor.error = DeploymentStatus.FAILED, str(exc)
        supervisor._save()
        return 1
    logger.info("deployment ready on port %s", supervisor.spec["port"])
    supervisor.watch()
    supervisor.stop()
    server.shutdown()
    return 0


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

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _control(
        self, name: str, path: str, body: dict[str, Any], timeout: float
    ) -> httpx.Response:
        control = _read_json(self._dir(name) / "control.json")
        if not control or not pid_alive(control.get("pid")):
            raise BackendUnavailableError(
                f"The supervisor of local deployment '{name}' is not running.",
                hint=f"Run `mlops undeploy {name}` and deploy it again.",
            )
        return httpx.post(
            f"http://{HOST}:{control['port']}{path}",
            json=body,
            headers={"X-Token": control["token"]},
            timeout=timeout,
        )

    def create(
        self, name: str, model: ModelRef, config: DeployConfig, *, image: str | None = None
    ) -> Deployment:
        state_dir = self._dir(name)
        if (state_dir / "spec.json").exists():
            raise ConflictError(
                f"A local deployment named '{name}' already exists.",
                hint=f"Use `mlops update {name} --model MODEL_URI`, or undeploy it first.",
                deployment=name,
            )
        port = config.port or free_port()
        if port_in_use(port):
            raise ConflictError(
                f"Port {port} is already in use on {HOST}.",
                hint="Choose another with --port, or omit --port to get a free one.",
                field="port",
                value=port,
            )
        settings = get_settings()
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        spec = {
            "name": name,
            "target_uri": self.target_uri,
            "port": port,
            "model": {
                "model_name": model.name,
                "model_version": model.version,
                "model_uri": model.uri,
            },
            "config": config.model_dump(),
            "tracking_uri": settings.resolved_tracking_uri,
            "registry_uri": settings.registry_uri or settings.resolved_tracking_uri,
            "created_at": _now(),
        }
        _write_json(state_dir / "spec.json", spec)
        token = secrets.token_urlsafe(32)
        try:
            with (state_dir / "logs" / "supervisor.log").open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mlops_pipeline.targets.local", str(state_dir)],
                    env={**os.environ, "MLOPS_SUPERVISOR_TOKEN": token},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            # reap it when it exits, so a long-lived caller does not keep a zombie
            threading.Thread(target=proc.wait, daemon=True).start()
            self._await_start(name, model, proc, config.ready_timeout + 60)
        except BaseException:
            # nothing half-deployed: also on Ctrl-C while waiting
            self.delete(name)
            raise
        return self.get(name)

    def _await_start(
        self, name: str, model: ModelRef, proc: subprocess.Popen, timeout: float
    ) -> None:
        state_dir = self._dir(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _read_json(state_dir / "state.json") or {}
            if state.get("status") == DeploymentStatus.READY:
                return
            if state.get("status") == DeploymentStatus.FAILED or proc.poll() is not None:
                reason = state.get("error") or _last_error(state_dir / "logs" / "supervisor.log")
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
        body = {
            "model": {
                "model_name": model.name,
                "model_version": model.version,
                "model_uri": model.uri,
            },
            "config": config.model_dump(),
        }
        try:
            response = self._control(
                name, "/update", body, timeout=config.ready_timeout + config.drain_timeout + 90
            )
        except httpx.HTTPError as exc:
            raise DeploymentError(
                f"Updating local deployment '{name}' to {model.uri} failed: {exc}."
            ) from exc
        if response.status_code != 200:
            raise DeploymentError(
                f"Updating local deployment '{name}' to {model.uri} failed; the previous "
                f"version keeps serving. {response.json().get('error', response.text)}",
                deployment=name,
            )
        return self.get(name)

    def delete(self, name: str) -> None:
        state_dir = self._dir(name)
        if not state_dir.exists():
            return
        control = _read_json(state_dir / "control.json") or {}
        supervisor_pid = control.get("pid")
        if pid_alive(supervisor_pid):
            with contextlib.suppress(MLOpsError, httpx.HTTPError):
                self._control(name, "/stop", {}, timeout=10.0)
            deadline = time.monotonic() + STOP_TIMEOUT + 10
            while pid_alive(supervisor_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self._kill_leftovers(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)

    def _kill_leftovers(self, state_dir: Path) -> None:
        """Kill what a dead or stuck supervisor left behind, by the pids it recorded."""
        state = _read_json(state_dir / "state.json") or {}
        control = _read_json(state_dir / "control.json") or {}
        pids = [control.get("pid")] + [
            (state.get(role) or {}).get("pid") for role in ("proxy", "pending", "active")
        ]
        for pid in pids:
            if not pid_alive(pid):
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            # only processes we started: guards against a recycled pid
            if b"serving" not in cmdline and str(state_dir).encode() not in cmdline:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def list(self) -> list[Deployment]:
        if not self.root.exists():
            return []
        return [
            self.get(path.name)
            for path in sorted(self.root.iterdir())
            if (path / "spec.json").exists()
        ]

    def get(self, name: str) -> Deployment:
        spec = _read_json(self._dir(name) / "spec.json")
        if spec is None:
            raise NotFoundError(
                f"No local deployment named '{name}'.",
                hint="List them with `mlops deployments list`.",
                deployment=name,
            )
        state = _read_json(self._dir(name) / "state.json") or {}
        control = _read_json(self._dir(name) / "control.json") or {}
        status = DeploymentStatus(state.get("status", DeploymentStatus.CREATING))
        if status in (DeploymentStatus.READY, DeploymentStatus.CREATING) and not pid_alive(
            control.get("pid")
        ):
            status = DeploymentStatus.UNHEALTHY
        model = spec["model"]
        config = spec["config"]
        return Deployment(
            name=name,
            target_uri=self.target_uri,
            model_name=model["model_name"],
            model_version=model["model_version"],
            model_uri=model["model_uri"],
            endpoint_url=f"http://{HOST}:{spec['port']}",
            status=status,
            capture_uri=config.get("capture_uri"),
            created_at=spec["created_at"],
            updated_at=state.get("updated_at") or spec["created_at"],
            config={**config, "port": spec["port"]},
        )

    def logs(self, name: str, tail: int = 100) -> str:
        self.get(name)
        state = _read_json(self._dir(name) / "state.json") or {}
        active = state.get("active") or {}
        log = (
            Path(active["log"])
            if active.get("log")
            else self._dir(name) / "logs" / "supervisor.log"
        )
        return _tail(log, tail)


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1])))
