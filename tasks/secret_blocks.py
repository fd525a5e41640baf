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
    except Exception as exc:  # the API is down, or Prefect's temporary server did not start
        reason = " ".join(str(exc).split())[:200] or "no detail"
        raise BackendUnavailableError(
            f"The Prefect Secret block '{name}' could not be read: {type(exc).__name__}: {reason}.",
            hint="Point PREFECT_API_URL at the Prefect server that holds the block (or run "
            "`mlops up`), or set the secret's environment variable instead.",
        ) from exc
    return SecretStr(str(value))
