"""The orchestration seam: how a flow and each of its steps run, decided here and nowhere else.

Two modes, one rule each:

* **Flows.** `run_flow(flow, **params)` runs a tracked Prefect flow run when a Prefect API is
  configured (`MLOPS_ORCHESTRATE=auto` with `PREFECT_API_URL` set, or `always`), and a tracked
  subflow when called inside a flow run (flows call flows through it too); otherwise it
  validates the parameters exactly as Prefect would (`Flow.validate_parameters`) and calls the
  flow's function in-process, sparing the ~15 s temporary server Prefect would start per command.
* **Steps.** A `Step` wraps a Prefect task. Called while a Prefect flow run is active (a worker,
  `prefect_test_harness`, or `run_flow` in orchestrated mode) it is that task: state, retries,
  caching and logging are Prefect's. Called anywhere else (direct mode, the CLI's read commands,
  other code) it runs the plain function with the same `retries` and `retry_delay_seconds` the
  task declares, so retries hold in both modes. Direct mode has no task-run state and no result
  caching, and offers no `.submit()`/`.map()`: a step that needs concurrency must say so here.

Nothing patches Prefect: the seam is composition over its public `Task` and `Flow` objects.

Logs: the Prefect-free layers log to standard loggers under `mlops_pipeline`; inside a flow or
task run, `RunLogHandler` copies those records into the run's log (the Prefect UI), and outside a
run it stays silent (Prefect's own API handler would warn there).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.settings import get_settings
from prefect import Flow, Task, task
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError, ParameterTypeError
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


def in_prefect_run() -> bool:
    """Whether a Prefect flow or task run is active (logs, artifacts and events have a run)."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class RunLogHandler(APILogHandler):
    """Sends `mlops_pipeline.*` records to the current Prefect run's log, and only inside one."""

    def emit(self, record: logging.LogRecord) -> None:
        if in_prefect_run():
            super().emit(record)


def _attach_run_log_handler() -> None:
    root = logging.getLogger("mlops_pipeline")
    if not any(isinstance(h, RunLogHandler) for h in root.handlers):
        root.addHandler(RunLogHandler())


_attach_run_log_handler()


def get_logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow or task run, otherwise `logging.getLogger(name)`."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)


def prefect_api_configured() -> bool:
    """Whether a Prefect API (server or Cloud) is configured for this process."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def prefect_ui_url() -> str | None:
    """The Prefect UI's address for the configured API (None without one)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.ui_url or (str(settings.api.url) if settings.api.url else None)
    return url.removesuffix("/").removesuffix("/api") if url else None


def deployment_served(name: str) -> bool:
    """Whether the Prefect API knows deployment `name` ("flow-name/deployment-name"), e.g. the
    event-triggered redeploy that `mlops up` serves. False without an API or on any error."""
    if not prefect_api_configured():
        return False
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except Exception:  # not found, or the API is unreachable: either way nothing serves it
        return False
    return True


def deployment_run_states(name: str, **parameters: Any) -> list[str]:
    """State types (`SCHEDULED`, `RUNNING`, `COMPLETED`, `CANCELLED`, ...) of the flow runs of
    deployment `name` ("flow-name/deployment-name") whose parameters include `parameters`,
    newest first; [] without an API, for an unknown deployment or on any error."""
    if not prefect_api_configured():
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )
    except Exception:  # unreachable or unknown: nothing known to run
        return []
    return [
        run.state.type.value
        for run in runs
        if run.state is not None
        and all(run.parameters.get(key) == value for key, value in parameters.items())
    ]


def orchestrated() -> bool:
    """Whether `run_flow` starts tracked Prefect flow runs (`MLOPS_ORCHESTRATE` and the API)."""
    mode = get_settings().orchestrate
    return mode == "always" or (mode == "auto" and prefect_api_configured())


def _delays(retries: int, delay: float | list[float] | None) -> list[float]:
    """Seconds to wait before each retry, read like Prefect's `retry_delay_seconds`."""
    if delay is None:
        return [0.0] * retries
    if isinstance(delay, int | float):
        return [float(delay)] * retries
    delays = [float(d) for d in delay] or [0.0]
    return [delays[min(i, len(delays) - 1)] for i in range(retries)]


class Step(Generic[P, R]):
    """A pipeline step: a Prefect task inside a flow run, its plain function with retries outside.

    Args:
        prefect_task: the task, with its name, retries, retry delay and cache policy.

    Raises:
        ValueError: if the task declares a `retry_condition_fn`, which direct mode cannot honour.
    """

    def __init__(self, prefect_task: Task[P, R]) -> None:
        if prefect_task.retry_condition_fn is not None:
            raise ValueError(
                f"Step {prefect_task.name!r} declares retry_condition_fn, which direct mode "
                "cannot honour; retry on exception types inside the function instead."
            )
        self.task = prefect_task
        self.fn: Callable[P, R] = prefect_task.fn
        self.name = prefect_task.name
        functools.update_wrapper(self, prefect_task.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if FlowRunContext.get() is not None:
            return self.task(*args, **kwargs)
        return self.call_directly(*args, **kwargs)

    def call_directly(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the plain function, retrying as the task declares (logged at WARNING)."""
        delays = _delays(self.task.retries or 0, self.task.retry_delay_seconds)
        for attempt, delay in enumerate([*delays, None], start=1):
            try:
                return self.fn(*args, **kwargs)
            except Exception as exc:
                if delay is None:
                    raise
                logger.warning(
                    "Step %s failed (attempt %d of %d: %s); retrying in %.1f s.",
                    self.name, attempt, len(delays) + 1, type(exc).__name__, delay,
                )  # fmt: skip
                time.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


@overload
def step(fn: Callable[P, R], **task_options: Any) -> Step[P, R]: ...
@overload
def step(fn: None = None, **task_options: Any) -> Callable[[Callable[P, R]], Step[P, R]]: ...
def step(fn: Callable[..., Any] | None = None, **task_options: Any) -> Any:
    """Make a `Step` of a plain function: `step(fn, name=..., retries=...)` or `@step(...)`.

    `task_options` are Prefect's `@task` keyword arguments (name, retries, retry_delay_seconds,
    cache_policy, ...); the task's name defaults to the function's name with dashes.
    """

    def wrap(func: Callable[P, R]) -> Step[P, R]:
        options = {"name": func.__name__.replace("_", "-"), **task_options}
        return Step(task(func, **options))

    return wrap(fn) if fn is not None else wrap


def run_flow(flow: Flow[..., R], **params: Any) -> R:
    """Run FLOW with PARAMS as a tracked flow run, or in-process when not orchestrated.

    Both modes validate and cast the parameters with the flow's type hints first.

    Raises:
        InvalidInputError: a parameter does not fit the flow's signature (exit 2).
        Whatever the flow raises (MLOpsError subclasses carry their exit codes).
    """
    try:
        validated = flow.validate_parameters(params)
    except ParameterTypeError as exc:
        cause = exc.__cause__ or exc.__context__
        problems = cause.errors() if hasattr(cause, "errors") else []
        if problems:  # one line: the first parameter, its value and what it should be
            first = problems[0]
            field = ".".join(map(str, first["loc"]))
            message = f"Flow {flow.name!r} parameter {field}={first.get('input')!r}: {first['msg']}"
        else:
            message = f"Invalid parameters for flow {flow.name!r}: {' '.join(str(exc).split())}"
        raise InvalidInputError(
            message.rstrip(".") + ".", hint="Check the command's options (`--help`)."
        ) from exc
    # inside a flow run, another flow is a tracked subflow whatever the settings say
    if FlowRunContext.get() is not None or orchestrated():
        return flow(**validated)
    return flow.fn(**validated)
