"""The whole loop as `make demo` runs it, on the embedded defaults (local target, sqlite)."""

from __future__ import annotations

import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.demo import DEMO_DEPLOYMENT, run_demo
from mlops_pipeline.tasks.deploy import list_deployments

pytestmark = pytest.mark.e2e


def test_demo_registers_serves_detects_drift_and_switches(mlops_home, tmp_path):
    # the second run must start afresh: same names, new versions, its own captures
    for _ in range(2):
        result = run_flow(run_demo, workdir=tmp_path / "demo")

    assert [v["version"] for v in result["versions"]] == ["2", "1"]
    aliases = {v["version"]: v["aliases"] for v in result["versions"]}
    assert aliases == {"1": ["champion"], "2": ["challenger"]}

    before, after = result["monitor_before_drift"], result["monitor_after_drift"]
    assert before["drift"] is False and before["stats"]["rows_labelled"] == 1500
    assert after["drift"] is True
    assert sorted(after["drifted"]) == ["alcohol", "color_intensity", "prediction"]
    assert (tmp_path / "demo").exists() and after["report"].endswith("report.html")

    assert result["updated_to_version"] == "2"
    assert DEMO_DEPLOYMENT not in {d["name"] for d in list_deployments.fn()}
    # undeployed, so nothing guards the versions any more
    assert all(not v["deployments"] for v in result["versions"])
