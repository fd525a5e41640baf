"""The Docker SDK is imported so that `except docker.errors.X` catches what the SDK raises.

Prefect puts a lazy `docker` module in sys.modules (`lazy_import("docker")` in
prefect.utilities.dockerutils, imported by prefect.deployments.runner, which our served
deployments import) when the SDK is not imported yet. A first `import docker.errors` (or
`from docker.x import y`) on that lazy module runs docker/errors.py twice: the package body,
run by the lazy module's first attribute read, imports it once, and the submodule import,
which looked in sys.modules before that, a second time. docker.api.client then raises the first
copy's DockerException and `except docker.errors.DockerException` names the second, so an
unreachable engine became a traceback instead of one clear error: in the whole test suite
(`tests/e2e/test_scoring_code_image.py` imported `docker.errors` first), and for any of our
modules that did the same. A plain `import docker` first runs the package body (the import
system reads the lazy module's `__spec__`), so later submodule imports find the loaded ones.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("mlops", "targets", "flows", "tasks", "serving", "tests", "benchmarks")
OUR_DOCKER_MODULES = (
    "mlops_pipeline.images.build",
    "mlops_pipeline.targets.docker",
    "mlops_pipeline.targets.docker_objects",
)


def _is_docker(name: str | None) -> bool:
    return name is not None and (name == "docker" or name.startswith("docker."))


def _docker_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, imported name) of every import of the docker SDK or one of its submodules."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_docker(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_docker(node.module):
            found.append((node.lineno, f"from {node.module}"))
    return sorted(found)


def test_every_file_imports_the_docker_package_before_its_submodules() -> None:
    wrong = []
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            imports = _docker_imports(ast.parse(path.read_text(), str(path)))
            if imports and imports[0][1] != "docker":
                line, name = imports[0]
                wrong.append(f"{path.relative_to(REPO)}:{line}: {name}")
    assert wrong == [], "add `import docker` before these (see this module's docstring)"


@pytest.fixture
def run(tmp_path: Path) -> Callable[[str], str]:
    """Run Python code in a fresh process (nothing imported yet); its last line of output."""

    def run(code: str) -> str:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DOCKER_HOST": "tcp://127.0.0.1:1"}
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    return run


LAZY_FIRST = (
    "import sys, prefect.utilities.dockerutils\n"
    "assert type(sys.modules['docker']).__name__ == '_LazyModule'\n"
)
SAME_CLASS = (
    "import docker.api.client\n"
    "print(sys.modules['docker.errors'].DockerException is docker.api.client.DockerException)\n"
)


def test_the_hazard_is_real_a_first_submodule_import_loads_it_twice(
    run: Callable[[str], str],
) -> None:
    # the checks below would prove nothing if Prefect stopped lazy-importing docker
    assert run(LAZY_FIRST + "import docker.errors\n" + SAME_CLASS) == "False"


@pytest.mark.parametrize("module", OUR_DOCKER_MODULES)
def test_our_modules_import_one_docker_sdk_after_prefects_lazy_one(
    run: Callable[[str], str], module: str
) -> None:
    assert run(LAZY_FIRST + f"import {module}\n" + SAME_CLASS) == "True"


def test_an_unreachable_engine_is_one_clear_error_after_prefects_lazy_import(
    run: Callable[[str], str],
) -> None:
    code = LAZY_FIRST + (
        "from mlops_pipeline.errors import BackendUnavailableError\n"
        "from mlops_pipeline.images.build import docker_client\n"
        "try:\n"
        "    docker_client(timeout=5)\n"
        "except BackendUnavailableError as exc:\n"
        "    print(exc.exit_code)\n"
    )
    assert run(code) == "6"
