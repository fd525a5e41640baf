"""serving/ ships alone in images: it must not pull in the rest of the project."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from packaging.requirements import Requirement

from tests.serving.conftest import REPO

FORBIDDEN = ("prefect", "mlops", "tasks", "flows", "targets")


def test_serving_imports_none_of_the_project():
    code = (
        "import sys, serving.app, serving.client, serving.server, serving.__main__\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_serving_extra_lists_the_runtime_requirements():
    declared = [Requirement(r) for r in importlib.metadata.requires("mlops-pipeline") or []]
    serving = {r.name for r in declared if r.marker and r.marker.evaluate({"extra": "serving"})}
    assert {
        "mlflow-skinny",
        "fastapi",
        "uvicorn",
        "pydantic-settings",
        "prometheus-client",
        "httpx",
        "orjson",
        "pandas",
        "pyarrow",
        "fsspec",
    } <= serving
