"""Loggers that go to the Prefect run when there is one, else to standard logging."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow or task run, otherwise `logging.getLogger(name)`."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
