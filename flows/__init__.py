"""Prefect flows, one per pipeline step, and how the CLI runs them."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

from mlops_pipeline.settings import get_settings


def prefect_api_configured() -> bool:
    """Whether a Prefect API (server or Cloud) is configured for this process."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


_run_directly: ContextVar[bool] = ContextVar("mlops_run_tasks_directly", default=False)
_install_lock = threading.Lock()


def _install_direct_calls() -> None:
    """Let tasks and subflows run as plain functions where `_run_directly` is set.

    The switch is a context variable, so concurrent threads and async tasks each keep their own
    mode; the wrappers are installed once per process.
    """
    from prefect import Flow, Task

    with _install_lock:
        for cls in (Task, Flow):
            if getattr(cls.__call__, "_mlops_direct", False):
                continue
            orchestrated_call = cls.__call__

            def call(obj: Any, *args: Any, _orchestrated=orchestrated_call, **kwargs: Any) -> Any:
                if _run_directly.get():
                    return obj.fn(*args, **kwargs)
                return _orchestrated(obj, *args, **kwargs)

            call._mlops_direct = True  # type: ignore[attr-defined]
            cls.__call__ = call


def run_flow(flow: Any, **params: Any) -> Any:
    """Run a flow as a tracked Prefect flow run, or in-process when no Prefect API is set.

    Without an API, Prefect would start a temporary server (~15 s) for every command; running
    the flow's function with its tasks called directly executes the same steps without it.
    """
    mode = get_settings().orchestrate
    if mode == "always" or (mode == "auto" and prefect_api_configured()):
        return flow(**params)
    _install_direct_calls()
    token = _run_directly.set(True)
    try:
        return flow.fn(**params)
    finally:
        _run_directly.reset(token)
