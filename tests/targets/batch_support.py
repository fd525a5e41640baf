"""What the batch: target tests share beyond fixtures (those are in tests/targets/conftest.py)."""

from __future__ import annotations

import time

import httpx


def prefect_deployment(api: str, name: str) -> dict | None:
    """The `score-batch/NAME` deployment on the Prefect server at API, None if there is none."""
    response = httpx.get(f"{api}/deployments/name/score-batch/{name}", timeout=10)
    return None if response.status_code == 404 else response.json()


def prefect_post(api: str, path: str, body: dict, attempts: int = 5) -> dict:
    """POST `body` to the Prefect server's API and return the answer's JSON. A 5xx (the
    server's SQLite busy under a loaded machine) is retried, at most `attempts` times 1 s
    apart; any other failure fails the test with the server's answer."""
    for attempt in range(1, attempts + 1):
        response = httpx.post(f"{api}{path}", json=body, timeout=30)
        if response.status_code < 500 or attempt == attempts:
            break
        time.sleep(1.0)
    assert response.is_success, f"POST {path}: HTTP {response.status_code} {response.text[:500]}"
    return response.json()
