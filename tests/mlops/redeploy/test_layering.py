"""The redeploy domain is core: importing it loads no Prefect, no upper layer, no MLflow."""

from __future__ import annotations

import subprocess
import sys

UPPER = (
    "prefect",
    "mlflow",
    "fastapi",
    "mlops_pipeline.flows",
    "mlops_pipeline.tasks",
    "mlops_pipeline.targets",
    "mlops_pipeline.cli",
)


def test_importing_the_redeploy_package_loads_no_upper_layer():
    code = (
        "import sys\n"
        "import mlops_pipeline.redeploy.bake, mlops_pipeline.redeploy.gate\n"
        "import mlops_pipeline.redeploy.retrain, mlops_pipeline.redeploy.results\n"
        f"print(sorted(m for m in sys.modules if m.startswith({UPPER!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
