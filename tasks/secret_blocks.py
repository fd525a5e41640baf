"""Prefect Secret blocks, read for the layers that cannot import Prefect.

Registered with `mlops_pipeline.secrets` by this package and by the CLI.
"""

from __future__ import annotations

from mlops_pipeline.errors import BackendUnavailableError, NotFoundError
from pydantic import SecretStr


def load_secret_block(name: str) -> SecretStr:
    """The value of the Prefect Secret block NAME.

    Raises:
        NotFoundError: no such block.
        BackendUnavailableError: the Prefect API cannot be reached.
    """
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as exc:
        raise NotFoundError(
            f"No Prefect Secret block named '{name}'.",
            hint="Create it (`prefect block create secret`) or fix the setting that names it.",
        ) from exc
    except Exception as exc:
        raise BackendUnavailableError(
            f"The Prefect Secret block '{name}' could not be read: {type(exc).__name__}."
        ) from exc
    return SecretStr(str(value))
