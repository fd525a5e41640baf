"""What the batch: target tests share beyond fixtures (those are in tests/targets/conftest.py)."""

from __future__ import annotations

import httpx


def prefect_deployment(api: str, name: str) -> dict | None:
    """The `score-batch/NAME` deployment on the Prefect server at API, None if there is none."""
    response = httpx.get(f"{api}/deployments/name/score-batch/{name}", timeout=10)
    return None if response.status_code == 404 else response.json()
