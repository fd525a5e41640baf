"""The local stack `mlops up` runs: a Prefect server, an MLflow server, the served flows, the
step runner (a warm process `mlops register` hands its flow run to) and the webhook receiver.

Each component is a background process in its own process group (session), logging to
`$MLOPS_HOME/up/logs/<name>.log`. `$MLOPS_HOME/up/state.json` records what was started: pid,
the process's start time (so a pid the OS later reuses is never mistaken for ours), port, URL,
health URL, command and log file. `up` starts only the components that are not running,
`status` reads the record, `down` stops exactly the recorded processes and removes it.

Prefect-free: the components are commands (`prefect server start`, `python -m
mlops_pipeline.flows.deployments`, `mlflow server`, ...), checked over HTTP. Process mechanics
(identity by start time, stopping a group) live in `mlops_pipeline.processes`.
"""

# Over 400 lines on purpose: the component specs, the state file and up/status/down change
# together (a component added to the specs is started, shown and stopped by the rest).

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import psutil
from mlops_pipeline import processes
from mlops_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
)
from mlops_pipeline.serving.contract import free_port, port_problem
from mlops_pipeline.settings import Settings
from mlops_pipeline.webhooks import registration as mlflow_webhooks
from mlops_pipeline.webhooks.settings import load_webhook_settings
from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
#: the module the `flows` component runs: it serves every deployment with its triggers
FLOWS_MODULE = "mlops_pipeline.flows.deployments"
#: seconds between the served flows' polls for runs (Prefect's default 10 s delays a redeploy)
RUNNER_POLL_SECONDS = "2"
#: the module the `steps` component runs: `mlops register` hands its flow run to it, warm
STEPS_MODULE = "mlops_pipeline.cli.step_runner"
Progress = Callable[[str], None]
REMOTE_TRACKING_SCHEMES = {"http", "https", "databricks"}


class ComponentSpec(BaseModel):
    """How to start one component and tell that it is ready."""

    name: str  # key in the state file: prefect, flows, mlflow
    title: str  # for people: "Prefect server"
    command: list[str]
    env: dict[str, str]  # set over the inherited environment, and recorded
    # set too, never recorded: URIs that may carry a password stay out of the state and `ps`
    secret_env: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)
    port: int
    url: str  # what a person opens
    health_url: str  # answers 200 once the component is ready
    port_hint: str  # how to choose another port when this one is taken


class ComponentRecord(ComponentSpec):
    """A started component, as the state file records it."""

    pid: int
    create_time: float  # the process's start time (psutil), seconds since the epoch
    log_file: str
    started_at: datetime


ComponentState = Literal["healthy", "alive", "dead"]


class ComponentStatus(BaseModel):
    """One component now: `healthy` (answers), `alive` (runs, does not answer) or `dead`."""

    name: str
    title: str
    state: ComponentState
    started: bool = False  # started by this `up` (False: it was running already)
    pid: int
    port: int
    url: str
    log_file: str
    started_at: datetime


class StackStatus(BaseModel):
    home: str
    state_file: str
    components: list[ComponentStatus]

    @property
    def running(self) -> bool:
        return bool(self.components)

    @property
    def healthy(self) -> bool:
        return self.running and all(c.state == "healthy" for c in self.components)


class StoppedComponent(BaseModel):
    name: str
    title: str
    pid: int
    outcome: processes.StopOutcome


def stack_dir(home: Path) -> Path:
    return home / "up"


def state_path(home: Path) -> Path:
    return stack_dir(home) / "state.json"


def component_specs(
    settings: Settings,
    prefect_port: int | None = None,
    mlflow_port: int | None = None,
    webhook_port: int | None = None,
) -> list[ComponentSpec]:
    """The components in start order (`down` stops them in reverse); ports from the arguments
    or the settings.

    The webhook receiver (`mlops webhook serve`, port WEBHOOK_PORT else MLOPS_WEBHOOK_PORT) is
    the last one; the MLflow server gets the environment it needs to deliver webhooks to it.

    Raises:
        InvalidInputError: an MLOPS_WEBHOOK_* variable does not validate; names it.
    """
    home = settings.resolved_home
    prefect_port = prefect_port or settings.prefect_port
    mlflow_port = mlflow_port or settings.mlflow_port
    prefect_url = f"http://{HOST}:{prefect_port}"
    # PREFECT_HOME inside MLOPS_HOME: the stack's database and profiles never touch the user's
    common = {"PREFECT_HOME": str(home / "prefect"), "MLOPS_HOME": str(home)}
    # e.g. `mlops --tracking-uri ... up`: the served flows use the same registry
    tracking = {"MLOPS_TRACKING_URI": settings.tracking_uri} if settings.tracking_uri else {}
    mlflow_stores = {"MLFLOW_BACKEND_STORE_URI": settings.resolved_tracking_uri}
    if settings.registry_uri:
        mlflow_stores["MLFLOW_REGISTRY_STORE_URI"] = settings.registry_uri
    bin_dir = Path(sys.executable).parent
    job_execution = os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    runner_port = free_port()  # the served flows' health endpoint; nobody else uses it
    specs = [
        ComponentSpec(
            name="prefect",
            title="Prefect server",
            command=[
                str(bin_dir / "prefect"),
                *("server", "start", "--host", HOST, "--port", str(prefect_port)),
            ],
            env={**common, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            port=prefect_port,
            url=prefect_url,
            health_url=f"{prefect_url}/api/health",
            port_hint="choose another with --prefect-port or MLOPS_PREFECT_PORT",
        ),
    ]
    # an MLflow server of its own only for a database registry (the embedded sqlite or a DB
    # URI): a tracking URI that is already a server (http, databricks) is used as it is
    if settings.resolved_tracking_uri.split(":", 1)[0] not in REMOTE_TRACKING_SCHEMES:
        specs.append(
            ComponentSpec(
                name="mlflow",
                title="MLflow server",
                command=[
                    str(bin_dir / "mlflow"),
                    *("server", "--app-name", "mlops-guard"),  # stores: MLFLOW_*_STORE_URI
                    *("--default-artifact-root", settings.artifact_root),
                    *("--artifacts-destination", settings.artifact_root),
                    *("--host", HOST, "--port", str(mlflow_port), "--workers", "1"),
                ],
                # the job runner serves GenAI features (prompt optimisation, trace rollups) with
                # about eight worker processes; the registry loop does not use it
                env={
                    **common,
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": job_execution,
                    **mlflow_webhooks.mlflow_server_env(),
                },
                secret_env={
                    **mlflow_stores,
                    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": mlflow_webhooks.encryption_key(home),
                },
                port=mlflow_port,
                url=f"http://{HOST}:{mlflow_port}",
                health_url=f"http://{HOST}:{mlflow_port}/health",
                port_hint="choose another with --mlflow-port or MLOPS_MLFLOW_PORT",
            )
        )
    specs.append(
        ComponentSpec(
            name="flows",
            title="Served flows",
            command=[sys.executable, "-m", FLOWS_MODULE],
            env={
                **common,
                "PREFECT_API_URL": f"{prefect_url}/api",
                # the runner's own webserver answers /health while it polls for work
                "PREFECT_RUNNER_SERVER_ENABLE": "true",
                "PREFECT_RUNNER_SERVER_HOST": HOST,
                "PREFECT_RUNNER_SERVER_PORT": str(runner_port),
                # a drift event's redeploy starts within ~2 s, not Prefect's default 10 s poll
                "PREFECT_RUNNER_POLL_FREQUENCY": os.environ.get(
                    "PREFECT_RUNNER_POLL_FREQUENCY", RUNNER_POLL_SECONDS
                ),
            },
            secret_env=tracking,
            port=runner_port,
            url=f"{prefect_url}/deployments",
            health_url=f"http://{HOST}:{runner_port}/health",
            port_hint="run `mlops up` again: this port is picked free each time",
        )
    )
    steps_port = free_port()  # found through the state file, like the runner's
    specs.append(
        ComponentSpec(
            name="steps",
            title="Step runner",
            command=[sys.executable, "-m", STEPS_MODULE, "--host", HOST, "--port", str(steps_port)],
            env={**common, "PREFECT_API_URL": f"{prefect_url}/api"},
            secret_env=tracking,
            port=steps_port,
            url=f"http://{HOST}:{steps_port}",
            health_url=f"http://{HOST}:{steps_port}/health",
            port_hint="run `mlops up` again: this port is picked free each time",
        )
    )
    # the receiver's secrets (MLOPS_*_WEBHOOK_SECRET) are inherited, never recorded
    webhook_port = webhook_port or load_webhook_settings().port
    specs.append(
        ComponentSpec(
            name="webhook",
            title="Webhook receiver",
            command=[
                str(bin_dir / "mlops"),
                *("webhook", "serve", "--host", HOST, "--port", str(webhook_port)),
            ],
            env={**common, "PREFECT_API_URL": f"{prefect_url}/api"},
            port=webhook_port,
            url=f"http://{HOST}:{webhook_port}",
            health_url=f"http://{HOST}:{webhook_port}/health",
            port_hint="choose another with --webhook-port or MLOPS_WEBHOOK_PORT",
        )
    )
    return specs


# --- processes ---------------------------------------------------------------------------


def _process(record: ComponentRecord) -> psutil.Process | None:
    return processes.running(record.pid, record.create_time)


def component_status(record: ComponentRecord, started: bool = False) -> ComponentStatus:
    state: ComponentState = "dead"
    if _process(record) is not None:
        state = "healthy" if processes.answers(record.health_url) else "alive"
    return ComponentStatus(
        **record.model_dump(include=set(ComponentStatus.model_fields)), state=state, started=started
    )


def _start(spec: ComponentSpec, log_dir: Path) -> ComponentRecord:
    log_file = log_dir / f"{spec.name}.log"
    env = {**os.environ, **spec.env, **spec.secret_env}
    if "PREFECT_API_URL" not in spec.env:
        env.pop("PREFECT_API_URL", None)  # a server must not talk to another API
    pid, create_time = processes.start_background(spec.command, env, log_file)
    logger.info("Started %s (pid %d): %s", spec.title, pid, spec.command)
    return ComponentRecord(
        **spec.model_dump(),
        pid=pid,
        create_time=create_time,
        log_file=str(log_file),
        started_at=datetime.now(UTC),
    )


def _wait_healthy(record: ComponentRecord, timeout: float, progress: Progress) -> None:
    """Wait until the component answers its health URL.

    Raises:
        BackendError: the process exited first (exit 5).
        BackendUnavailableError: no answer within TIMEOUT seconds (exit 6).
    """
    start = time.monotonic()
    outcome = processes.wait_ready(
        record.pid,
        record.create_time,
        record.health_url,
        timeout,
        lambda waited: progress(f"Waiting: {record.title} ({waited:.0f} s)..."),
    )
    if outcome == "exited":
        last = processes.last_line(record.log_file)
        raise BackendError(
            f"{record.title} exited before it was ready"
            + (f" (last log line: {last})." if last else "."),
            hint=f"See its log {record.log_file}.",
            component=record.name,
        )
    if outcome == "timeout":
        raise BackendUnavailableError(
            f"{record.title} did not answer {record.health_url} within {timeout:.0f} s.",
            hint=f"See its log {record.log_file}, or raise --timeout.",
            component=record.name,
        )
    progress(f"Ready: {record.title} at {record.url} ({time.monotonic() - start:.1f} s).")


def _stop(record: ComponentRecord, timeout: float) -> StoppedComponent:
    return StoppedComponent(
        name=record.name,
        title=record.title,
        pid=record.pid,
        outcome=processes.stop(record.pid, record.create_time, timeout),
    )


# --- state -------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One `up` or `down` at a time per MLOPS_HOME (an advisory lock on up/lock)."""
    stack_dir(home).mkdir(parents=True, exist_ok=True)
    with open(stack_dir(home) / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_state(home: Path) -> dict[str, ComponentRecord]:
    """The recorded components by name ({} when nothing was started or the file is unreadable)."""
    try:
        raw = json.loads(state_path(home).read_text())
        return {name: ComponentRecord(**c) for name, c in raw["components"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("Ignoring the unreadable stack state %s: %s", state_path(home), exc)
        return {}


def _write_state(home: Path, records: dict[str, ComponentRecord]) -> None:
    path = state_path(home)
    if not records:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    components = {name: r.model_dump(mode="json") for name, r in records.items()}
    tmp.write_text(json.dumps({"version": 1, "components": components}, indent=2))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


# --- the commands ------------------------------------------------------------------------


def status(home: Path) -> StackStatus:
    """What runs now, from the state file: each recorded component healthy, alive or dead."""
    return StackStatus(
        home=str(home),
        state_file=str(state_path(home)),
        components=[component_status(r) for r in read_state(home).values()],
    )


def running_prefect_api(home: Path) -> str | None:
    """The Prefect API URL of this home's stack when its server process runs, else None."""
    record = read_state(home).get("prefect")
    if record is None or _process(record) is None:
        return None
    return f"{record.url}/api"


def up(
    settings: Settings,
    prefect_port: int | None = None,
    mlflow_port: int | None = None,
    webhook_port: int | None = None,
    timeout: float = 120.0,
    progress: Progress = logger.info,
) -> StackStatus:
    """Start every component that is not running, and wait until each is healthy.

    Components recorded and still running are kept as they are; a dead one restarts on its
    recorded port unless a port is given; the served flows restart when the Prefect server
    comes back on another port. If a component fails to start, the ones this call started
    are stopped again and the state keeps only the others.

    Args:
        settings: home, tracking URI and default ports (MLOPS_PREFECT_PORT, MLOPS_MLFLOW_PORT).
        prefect_port, mlflow_port, webhook_port: ports for components this call starts
            (default: the recorded port of a dead component, else the settings).
        timeout: seconds each component may take to answer its health URL.
        progress: called with one line of progress at a time (the CLI prints them).

    Raises:
        InvalidInputError: the two servers were given one port (exit 2).
        ConflictError: a port is taken by another process (exit 4).
        BackendError: a component exited before it was ready (exit 5).
        BackendUnavailableError: a component did not answer within TIMEOUT (exit 6).
    """
    home = settings.resolved_home
    log_dir = stack_dir(home) / "logs"
    with _locked(home):
        log_dir.mkdir(parents=True, exist_ok=True)
        records = read_state(home)
        running = {n for n, r in records.items() if _process(r) is not None}

        def port(name: str, given: int | None) -> int | None:
            # a running component keeps its port; a dead one restarts on it unless told otherwise
            if name in records and (name in running or given is None):
                return records[name].port
            return given

        specs = component_specs(
            settings,
            port("prefect", prefect_port),
            port("mlflow", mlflow_port),
            port("webhook", webhook_port),
        )
        for first, second in itertools.combinations(specs, 2):
            if first.port == second.port:
                raise InvalidInputError(
                    f"The {first.title} and the {second.title} cannot share port {first.port}.",
                    hint=f"For the {second.title}, {second.port_hint}.",
                    field="port",
                )
        for spec in specs:  # the Prefect server comes back elsewhere: its clients follow
            api = spec.env.get("PREFECT_API_URL")
            if spec.name in running and records[spec.name].env.get("PREFECT_API_URL") != api:
                _stop(records[spec.name], timeout=30)
                running.discard(spec.name)
        to_start = [s for s in specs if s.name not in running]
        for spec in to_start:
            if spec.name in records:  # dead: clear what its group left behind (e.g. workers)
                _stop(records.pop(spec.name), timeout=10)
            if problem := port_problem(spec.port, HOST):
                raise ConflictError(
                    f"Port {spec.port} for the {spec.title} is not free ({problem}"
                    f"{', used by ' + user if (user := processes.port_user(spec.port)) else ''}):"
                    f" stop what uses it, or {spec.port_hint}.",
                    field="port",
                    port=spec.port,
                )
        started: list[str] = []
        ready: set[str] = set()

        def wait(name: str) -> None:
            if name not in ready:
                _wait_healthy(records[name], timeout, progress)
                ready.add(name)

        try:
            for spec in to_start:
                if spec.name in {"flows", "steps", "webhook"}:  # they use the Prefect API
                    wait("prefect")
                progress(f"Starting: {spec.title} (port {spec.port})...")
                records[spec.name] = _start(spec, log_dir)
                started.append(spec.name)
                # kept in start order, which `down` reverses
                order = [s.name for s in specs]
                records = dict(sorted(records.items(), key=lambda r: _rank(order, r[0])))
                _write_state(home, records)  # recorded at once: `down` can stop it whatever happens
            for name in [*started, *running]:
                wait(name)
        except BaseException:
            for name in reversed(started):
                _stop(records.pop(name), timeout=10)
            _write_state(home, records)
            raise
        return StackStatus(
            home=str(home),
            state_file=str(state_path(home)),
            components=[component_status(records[s.name], s.name in started) for s in specs],
        )


def _rank(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def down(home: Path, timeout: float = 30.0) -> list[StoppedComponent]:
    """Stop exactly the recorded components (served flows first) and remove the state.

    Each recorded process is signalled only if it is still the process we started (same pid
    and start time): SIGTERM to its process group, up to TIMEOUT seconds, then SIGKILL.
    Returns one entry per recorded component ([] when nothing was recorded).
    """
    with _locked(home):
        records = read_state(home)
        stopped = [_stop(r, timeout) for r in reversed(list(records.values()))]
        _write_state(home, {})
        return stopped
