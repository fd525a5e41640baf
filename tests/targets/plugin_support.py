"""Install a third-party target plug-in for one test: a module plus a dist-info on sys.path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def install_plugin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    source: str,
    entry_points: dict[str, str],
) -> Iterator[None]:
    """Make `entry_points` ({scheme: "module:Class"}) visible in the `mlops.targets` group.

    A generator for fixtures to `yield from`: the module is dropped from sys.modules afterwards.
    """
    (tmp_path / f"{module}.py").write_text(source)
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = "".join(f"{scheme} = {value}\n" for scheme, value in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[mlops.targets]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop(module, None)
