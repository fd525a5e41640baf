"""Every module of ours sits in a layer the import-linter contracts check, and in the wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FOLDERS = PYPROJECT["tool"]["setuptools"]["package-dir"]  # package -> folder
LAYERED = {"cli", "flows", "tasks", "targets", "serving"}


def contract(name_start: str) -> dict:
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(name_start))


def test_every_core_module_is_in_the_core_contract():
    core = {
        f"mlops_pipeline.{path.stem}"
        for path in (ROOT / "mlops").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists() and path.name not in LAYERED)
    }
    listed = set(contract("The core never imports")["source_modules"])
    assert core == listed, f"add to the core contract: {core - listed}; gone: {listed - core}"
    serving_forbidden = set(contract("The scoring service is independent")["forbidden_modules"])
    assert core <= serving_forbidden, core - serving_forbidden


def test_every_package_folder_is_installed():
    packages = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for package, folder in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" in relative:
                continue
            name = ".".join([package, *relative])
            # a sub-package mapped to a folder of its own is found from that mapping instead
            if name == package or name not in FOLDERS:
                found.add(name)
    assert found == packages, f"missing from [tool.setuptools] packages: {found - packages}"
