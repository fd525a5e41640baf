"""What the `local:` target's client and supervisor exchange: files, control calls, helpers.

The two sides never share memory. The client (`LocalTarget`, in the CLI or a flow) and the
detached supervisor of one deployment (`local_supervisor`) meet only in the deployment's
directory, $MLOPS_HOME/local/<name>/, and over the supervisor's control API:

=======================  ============================  =========================================
file                     written by                    model
=======================  ============================  =========================================
spec.json                client at create; supervisor  `DeploymentSpec`: what should run
                         after each update
state.json               supervisor, on every change   `SupervisorState`: what runs now (pids,
                                                       ports, logs, restarts, status, error)
control.json (0600)      supervisor at start           `ControlEndpoint`: its pid, port, token
proxy-upstream.json      the proxy, on every switch    its current upstream, read back when the
                                                       proxy restarts
logs/                    supervisor and its children   supervisor.log, proxy.log,
                                                       service-v<version>-<port>.log
=======================  ============================  =========================================

Control API (127.0.0.1 only, header `X-Token: <ControlEndpoint.token>`):

* `POST /update`, body `UpdateRequest` -> 200 `SwitchResult`, or 500 `ControlError` when the new
  version failed (the old one keeps serving); 400 `ControlError` for a malformed body.
* `POST /stop` -> 202 `StopAccepted`; the supervisor stops its children and exits.
* `POST /challenger/start`, body `ChallengerRequest` -> 200 `ChallengerStarted` once the
  challenger's /ready answers (no traffic yet: the caller sets the proxy routes); 409
  `ControlError` when one already runs; 500 when it failed to start (nothing is left running).
* `POST /challenger/stop` -> 200 `StopAccepted`; idempotent.
* `POST /challenger/promote` -> 200 `SwitchResult`: the proxy's primary becomes the challenger
  (its canary route goes), the old active service drains and stops, spec.json names the new
  version; 409 `ControlError` when no challenger runs.

Files are written atomically (write, then rename), so a reader in another process sees either
the old or the new content, never half of it. The JSON shapes are the models' own
(`model_dump_json`); read them through these models, and write them from the two sides only.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from mlops_pipeline.deployment import DeployConfig, DeploymentStatus, ModelRef
from pydantic import BaseModel, ConfigDict, Field, ValidationError

logger = logging.getLogger(__name__)

#: Every process of a local deployment listens on this address only.
HOST = "127.0.0.1"
#: The environment variable that hands the supervisor its control token at start.
TOKEN_VARIABLE = "MLOPS_SUPERVISOR_TOKEN"
LOG_TAIL_LINES = 20

Model = TypeVar("Model", bound=BaseModel)


def now() -> datetime:
    """The current time in UTC (timestamps in spec and state)."""
    return datetime.now(UTC)


class ServedModel(BaseModel):
    """One registered model version as a scoring service serves it."""

    model_name: str
    model_version: str
    model_uri: str = Field(description="What the service loads, e.g. models:/iris/3.")

    model_config = ConfigDict(protected_namespaces=())

    @classmethod
    def of(cls, model: ModelRef) -> ServedModel:
        return cls(model_name=model.name, model_version=model.version, model_uri=model.uri)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.model_name, self.model_version)


class DeploymentSpec(BaseModel):
    """spec.json: what the deployment should run; the supervisor rewrites it after an update."""

    name: str
    target_uri: str
    port: int = Field(ge=1, le=65535, description="The stable port the proxy holds.")
    model: ServedModel
    config: DeployConfig
    tracking_uri: str = Field(description="MLflow URI the services resolve models:/ against.")
    registry_uri: str
    created_at: datetime


class ChildState(BaseModel):
    """One supervised process as state.json records it."""

    pid: int | None = None
    port: int
    log: Path
    restarts: int = Field(default=0, ge=0, description="Restarts after a crash or a hang.")


class ActiveService(ChildState, ServedModel):
    """The scoring service that receives traffic, with the version it serves."""


class SwitchResult(BaseModel):
    """The proxy's answer to a switch (PUT /-/proxy/upstream), with when it happened."""

    previous: str | None = None
    upstream: str
    drained: bool
    in_flight_left: int
    drain_seconds: float = Field(description="Seconds the old upstream took to drain.")
    at: datetime | None = None


class SupervisorState(BaseModel):
    """state.json: what the supervisor runs right now."""

    status: DeploymentStatus = DeploymentStatus.CREATING
    error: str | None = Field(default=None, description="Why the deployment failed, if it did.")
    supervisor_pid: int | None = None
    proxy: ChildState | None = None
    active: ActiveService | None = None
    pending: ChildState | None = Field(
        default=None, description="A new version that is starting and not yet switched to."
    )
    last_switch: SwitchResult | None = None
    challenger: ActiveService | None = Field(
        default=None, description="A challenger version running beside the active one."
    )
    updated_at: datetime | None = Field(default=None, description="None until first written.")


class ControlEndpoint(BaseModel):
    """control.json: how to reach the supervisor; readable by its owner only (mode 0600)."""

    pid: int
    port: int
    token: str
    proxy_token: str | None = Field(
        default=None, description="The proxy's admin token (canary and shadow routes, stats)."
    )


class UpdateRequest(BaseModel):
    """Body of POST /update: switch to `model` with `config`."""

    model: ServedModel
    config: DeployConfig


class ChallengerRequest(BaseModel):
    """Body of POST /challenger/start: run `model` beside the active version."""

    model: ServedModel


class ChallengerStarted(BaseModel):
    """Answer of POST /challenger/start: where the proxy reaches the ready challenger."""

    upstream: str
    model: ServedModel


class ControlError(BaseModel):
    """Body of every control API error."""

    error: str


class StopAccepted(BaseModel):
    """Body of POST /stop: the supervisor is stopping its children and will exit."""

    stopping: bool = True


@dataclass(frozen=True)
class DeploymentFiles:
    """The files of one local deployment under $MLOPS_HOME/local/<name>/."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def control(self) -> Path:
        return self.root / "control.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def proxy_state(self) -> Path:
        """Where the proxy persists its upstream, so a restarted proxy keeps the switch."""
        return self.root / "proxy-upstream.json"

    def service_log(self, version: str, port: int) -> Path:
        return self.logs / f"service-v{version}-{port}.log"

    def read_spec(self) -> DeploymentSpec | None:
        return read_model(self.spec, DeploymentSpec)

    def read_state(self) -> SupervisorState:
        """The recorded state; a supervisor that has not written one yet is `creating`."""
        return read_model(self.state, SupervisorState) or SupervisorState()

    def read_control(self) -> ControlEndpoint | None:
        return read_model(self.control, ControlEndpoint)


def write_model(path: Path, model: BaseModel, mode: int = 0o644) -> None:
    """Write `model` as JSON to `path` atomically, created with permission bits `mode`.

    Raises OSError when the directory is missing or not writable.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(model.model_dump_json(indent=2))
    tmp.replace(path)


def read_model(path: Path, model: type[Model]) -> Model | None:
    """`path` parsed as `model`; None when the file is missing or does not hold one.

    A file that does not validate is logged and treated as missing, as a reader must be able to
    clean up after any supervisor, also one that died or an older release wrote.
    """
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValidationError as exc:
        logger.warning("ignoring %s: not a valid %s (%s)", path, model.__name__, exc)
        return None


def pid_alive(pid: int | None) -> bool:
    """True for a running process; zombies (exited, not yet reaped) and None count as gone."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file; empty when it does not exist."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def last_error(log: Path) -> str:
    """The line of a log that best says what went wrong: the last exception, else the last line."""
    lines = [line.strip() for line in log_tail(log, 200).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", line):
            return line
    return lines[-1] if lines else "(no output)"
