"""The whole loop as `make demo` runs it, on the embedded defaults (local target, sqlite)."""

from __future__ import annotations

import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.demo import DEMO_DEPLOYMENT, run_demo
from mlops_pipeline.redeploy.records import decisions
from mlops_pipeline.tasks.deploy import list_deployments

pytestmark = pytest.mark.e2e


def test_demo_rejects_a_weak_challenger_and_redeploys_on_drift_without_failed_requests(
    mlops_home, tmp_path
):
    # the second run must start afresh: same names, new versions, its own captures
    for _ in range(2):
        result = run_flow(run_demo, workdir=tmp_path / "demo", bake_seconds=5)

    assert [v["version"] for v in result["versions"]] == ["3", "2", "1"]
    aliases = {v["version"]: v["aliases"] for v in result["versions"]}
    assert aliases == {"3": ["champion"], "2": [], "1": ["previous-champion"]}

    before, after = result["monitor_before_drift"], result["monitor_after_drift"]
    assert before["drift"] is False and before["stats"]["rows_labelled"] == 1500
    assert after["drift"] is True
    assert sorted(after["drifted"]) == ["alcohol", "color_intensity", "prediction"]
    assert (tmp_path / "demo").exists() and after["report"].endswith("report.html")

    rejected = result["rejected_challenger"]
    assert rejected["decision"] == "rejected" and rejected["challenger"]["version"] == "2"
    assert rejected["scores"]["challenger"] < 0.8 < rejected["scores"]["champion"]
    assert "does not pass" in rejected["reason"]

    decision = result["redeploy"]
    assert result["redeploy_trigger"].startswith("direct call")  # no Prefect server here
    assert decision["decision"] == "promoted", decision["reason"]
    assert decision["champion"]["version"] == "1" and decision["challenger"]["version"] == "3"
    assert decision["holdout"]["source"] == "labelled_captures"
    assert decision["scores"]["challenger"] > decision["scores"]["champion"]
    assert decision["bake"]["verdict"] in {"healthy", "insufficient_traffic"}
    traffic = result["traffic_during_redeploy"]
    assert traffic["failed"] == 0 and traffic["requests"] > 50

    # the ledger keeps this run's two decisions (the first run's were in the same ledger)
    assert [r["decision"] for r in decisions(DEMO_DEPLOYMENT)][-2:] == ["rejected", "promoted"]
    assert DEMO_DEPLOYMENT not in {d["name"] for d in list_deployments.fn()}
    # undeployed, so nothing guards the versions any more
    assert all(not v["deployments"] for v in result["versions"])
