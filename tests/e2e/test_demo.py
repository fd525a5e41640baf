"""The whole loop as `make demo` runs it, on the embedded defaults (local target, sqlite)."""

from __future__ import annotations

import pytest
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.demo import DEMO_DEPLOYMENT, run_demo
from mlops_pipeline.redeploy.records import decisions
from mlops_pipeline.tasks.deploy import list_deployments

pytestmark = pytest.mark.e2e


def test_demo_rejects_a_weak_challenger_and_redeploys_on_drift_through_a_canary(
    mlops_home, tmp_path, monkeypatch
):
    # the demo's canary at 10 % judges a few dozen requests of an idle challenger against a
    # busy champion; with the whole suite on 2 cores it once read 2.2x (14.1 ms against 5.7).
    # This tests the loop, not the latency rule (tests/mlops/rollout has that): allow 3x.
    monkeypatch.setenv("MLOPS_BAKE_MAX_P95_RATIO", "3")
    # the second run must start afresh: same names, new versions, its own captures
    for _ in range(2):
        result = run_flow(run_demo, workdir=tmp_path / "demo")

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
    assert decision["bake"]["verdict"] == "healthy"
    # the live gate: a canary of 10, 50, 100 % under the steady traffic, each step judged
    canary = result["canary"]
    assert (canary["decision"], canary["challenger_version"]) == ("promoted", "3")
    assert [s["percent"] for s in canary["steps"]] == [10.0, 50.0, 100.0]
    for step in canary["steps"]:
        comparison = step["comparison"]
        assert comparison["verdict"] == "healthy"
        assert comparison["challenger"]["requests"] >= 50
        assert comparison["challenger"]["errors"] == comparison["challenger"]["client_errors"] == 0
    traffic = result["traffic_during_redeploy"]
    assert traffic["failed"] == 0 and traffic["requests"] > 50

    # the ledger keeps this run's two redeploy decisions and the canary's (the first run's
    # were in the same ledger)
    rows = decisions(DEMO_DEPLOYMENT)
    redeploys = [r["decision"] for r in rows if (r["details"] or {}).get("kind") != "canary"]
    assert redeploys[-2:] == ["rejected", "promoted"]
    assert [r["decision"] for r in rows if (r["details"] or {}).get("kind") == "canary"][-1] == (
        "promoted"
    )
    assert DEMO_DEPLOYMENT not in {d["name"] for d in list_deployments.fn()}
    # undeployed, so nothing guards the versions any more
    assert all(not v["deployments"] for v in result["versions"])
