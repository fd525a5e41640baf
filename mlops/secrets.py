"""Secrets a setting names by Prefect Secret block: read by the layer that has Prefect.

The core and the targets never import Prefect (import-linter enforces it), yet a target's
credential may live in a Prefect Secret block (the IoT hub connection string, say). The layers
that run with Prefect (the tasks, which flow runs and workers import, and the CLI) register a
reader here; the core asks through `read_block` and never learns how the value was fetched.
"""

from __future__ import annotations

from collections.abc import Callable

from mlops_pipeline.errors import InvalidInputError
from pydantic import SecretStr

BlockReader = Callable[[str], SecretStr]

_reader: BlockReader | None = None


def register_block_reader(reader: BlockReader) -> None:
    """Make READER (block name -> value) the way `read_block` fetches a Prefect Secret block."""
    global _reader
    _reader = reader


def read_block(name: str, setting: str) -> SecretStr:
    """The value of the Prefect Secret block NAME, which the variable SETTING names.

    Raises:
        InvalidInputError: no reader is registered (the core was called without the tasks layer
            or the CLI), exit 2.
        NotFoundError / BackendUnavailableError: from the reader (no such block; no Prefect API).
    """
    if _reader is None:
        raise InvalidInputError(
            f"{setting} names the Prefect Secret block '{name}', but no Prefect layer is loaded "
            "here to read it.",
            hint=f"Run through the mlops CLI or a flow run, or set the secret's own environment "
            f"variable instead of {setting}.",
            field=setting,
        )
    return _reader(name)
