"""The embedded sqlite registry under concurrent first use by several processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_concurrent_processes_on_a_new_sqlite_registry(tmp_path, iris_model_dir):
    # without the schema lock, processes that create the database together all fail
    mlops = Path(sys.executable).with_name("mlops")
    env = {**os.environ, "MLOPS_HOME": str(tmp_path / "home")}
    env.pop("MLOPS_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    processes = [
        subprocess.Popen(
            [str(mlops), "register", str(iris_model_dir), "--name", "shared", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0] * 5, [err for _, err in outputs]
    versions = sorted(int(json.loads(out)["version"]) for out, _ in outputs)
    assert versions == [1, 2, 3, 4, 5]
