"""The decision's JSON keeps the shape the CLI's --json promises."""

from __future__ import annotations

import pytest
from mlops_pipeline.redeploy.results import (
    BakeReport,
    GateResult,
    HoldoutInfo,
    RedeployDecision,
    ServiceFigures,
    TriggerInfo,
    VersionScore,
)
from pydantic import ValidationError

GATE = GateResult(
    metric="accuracy",
    greater_is_better=True,
    champion_score=0.9,
    challenger_score=0.95,
    improvement=0.05,
    min_improvement=0.01,
    passed=True,
    reason="challenger accuracy 0.95 vs champion 0.9; passes",
    holdout_rows=30,
)
HOLDOUT = HoldoutInfo(source="reference_split", rows=30, label_column="label", fraction=0.2)
FIGS = ServiceFigures(requests=200, errors=20, error_rate=0.1, p95_latency_ms=12.0)


def bake(verdict: str) -> BakeReport:
    return BakeReport(
        verdict=verdict,
        reasons=[f"bake {verdict}"],
        baseline=FIGS,
        observed=FIGS,
        max_error_rate_increase=0.01,
        max_p95_ratio=1.5,
        min_requests=100,
    )


def decide(gate: GateResult = GATE, verdict: str | None = None) -> dict:
    decision = RedeployDecision.from_gate(
        gate,
        champion=VersionScore(name="iris", version="1"),
        challenger=VersionScore(name="iris", version="2"),
        holdout=HOLDOUT,
        trigger=TriggerInfo(reason="drift", episode_id="ep-1"),
        bake=bake(verdict) if verdict else None,
    )
    return decision.model_dump(mode="json")


@pytest.mark.parametrize(
    ("gate", "verdict", "decision"),
    [
        (GATE, "healthy", "promoted"),
        (GATE, "insufficient_traffic", "promoted"),
        (GATE, "regressed", "rolled_back"),
        (GATE.model_copy(update={"passed": False, "reason": "not better"}), None, "rejected"),
    ],
)
def test_decisions_from_gate_and_bake(gate, verdict, decision):
    out = decide(gate, verdict)
    assert out["decision"] == decision
    assert out["champion"]["version"] == "1" and out["challenger"]["version"] == "2"
    assert out["scores"] == {"champion": 0.9, "challenger": 0.95}
    assert out["challenger"]["score"] == 0.95 and out["trigger"]["episode_id"] == "ep-1"
    assert out["reason"]


def test_skipped_keeps_the_json_shape():
    out = RedeployDecision(
        decision="skipped",
        reason="no challenger and no trainer: set MLOPS_TRAINER or pass --challenger",
        champion=VersionScore(name="iris", version="1"),
    ).model_dump(mode="json")
    assert {"decision", "reason", "champion", "challenger", "scores"} <= out.keys()
    assert out["challenger"]["version"] is None and out["scores"] == {}


def test_decisions_need_their_evidence():
    with pytest.raises(ValidationError, match="challenger's version"):
        RedeployDecision(decision="promoted", reason="x", champion=VersionScore(version="1"))
    with pytest.raises(ValidationError, match="bake report"):
        RedeployDecision(
            decision="rolled_back",
            reason="x",
            champion=VersionScore(version="1"),
            challenger=VersionScore(version="2"),
        )
