"""Typed results of the redeploy loop; the flow and the CLI dump them to JSON only at the edge.

`RedeployDecision.model_dump(mode="json")` always has the keys the `--json` contract promises:
`decision`, `reason`, `champion.version`, `challenger.version` (null when there is no challenger,
e.g. `skipped`) and `scores` (`{"champion": ..., "challenger": ...}`, in the gate's metric).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

Decision = Literal["promoted", "rejected", "rolled_back", "skipped"]
HoldoutSource = Literal["labelled_captures", "reference_split"]
BakeVerdict = Literal["healthy", "regressed", "insufficient_traffic"]


class VersionScore(BaseModel):
    """One model version and its score on the gate's holdout (None when it was not scored)."""

    name: str | None = None
    version: str | None = None
    score: float | None = None


class HoldoutInfo(BaseModel):
    """Where the gate's holdout came from and how many rows it has."""

    source: HoldoutSource
    rows: int = Field(ge=0)
    label_column: str
    fraction: float | None = Field(
        default=None, description="Share of the source held out; None when all of it was used."
    )
    seed: int | None = None
    labelled_rows_available: int = Field(
        default=0, ge=0, description="Usable labelled captured rows found (before the split)."
    )


class GateResult(BaseModel):
    """Champion and challenger scored on one holdout, and whether the challenger passed.

    `improvement` is measured in the metric's direction (positive = challenger better), as an
    absolute difference in the metric's units.
    """

    metric: str
    greater_is_better: bool
    champion_score: float
    challenger_score: float | None
    improvement: float | None
    min_improvement: float
    passed: bool
    reason: str
    holdout_rows: int


class ServiceFigures(BaseModel):
    """Scoring-service figures over one interval (or since the process started).

    `errors` counts /invocations answered with a non-2xx status; `error_rate` is errors/requests
    (None without requests); `p95_latency_ms` is interpolated from the latency histogram's
    buckets (None without observations).
    """

    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    error_rate: float | None
    p95_latency_ms: float | None
    errors_by_status: dict[str, int] = Field(default_factory=dict)
    seconds: float | None = Field(default=None, description="Length of the interval, if known.")


class BakeReport(BaseModel):
    """The bake period's verdict on a new version against the champion's figures."""

    verdict: BakeVerdict
    reasons: list[str]
    baseline: ServiceFigures
    observed: ServiceFigures
    max_error_rate_increase: float
    max_p95_ratio: float
    min_requests: int
    p95_ratio: float | None = None
    error_rate_increase: float | None = None


class TriggerInfo(BaseModel):
    """Why the redeploy ran: a drift episode, a monitor run, a schedule or a person."""

    reason: str
    episode_id: str | None = None
    event_id: str | None = None
    monitor_run_id: str | None = None


class RedeployDecision(BaseModel):
    """The outcome of one redeploy: what was decided, why, and the evidence."""

    decision: Decision
    reason: str
    champion: VersionScore
    challenger: VersionScore = Field(default_factory=VersionScore)
    scores: dict[str, float] = Field(default_factory=dict)
    metric: str | None = None
    min_improvement: float | None = None
    holdout: HoldoutInfo | None = None
    bake: BakeReport | None = None
    trigger: TriggerInfo | None = None

    @model_validator(mode="after")
    def _evidence_matches_decision(self) -> RedeployDecision:
        if self.decision != "skipped" and self.challenger.version is None:
            raise ValueError(f"a {self.decision!r} decision needs the challenger's version")
        if self.decision == "rolled_back" and self.bake is None:
            raise ValueError("a 'rolled_back' decision needs the bake report")
        return self

    @classmethod
    def from_gate(
        cls,
        gate: GateResult,
        *,
        champion: VersionScore,
        challenger: VersionScore,
        holdout: HoldoutInfo,
        trigger: TriggerInfo | None = None,
        bake: BakeReport | None = None,
    ) -> RedeployDecision:
        """The decision after the gate (and, when the gate passed, after the bake).

        Gate failed -> `rejected`; gate passed and bake `regressed` -> `rolled_back`; otherwise
        `promoted` (a bake with `insufficient_traffic` is no evidence of a regression; its
        report is kept). Scores from `gate` fill `scores` and both versions' `score`.
        """
        champion = champion.model_copy(update={"score": gate.champion_score})
        challenger = challenger.model_copy(update={"score": gate.challenger_score})
        scores = {"champion": gate.champion_score}
        if gate.challenger_score is not None:
            scores["challenger"] = gate.challenger_score
        if not gate.passed:
            decision: Decision = "rejected"
            reason = gate.reason
        elif bake is not None and bake.verdict == "regressed":
            decision, reason = "rolled_back", "; ".join(bake.reasons)
        else:
            decision, reason = "promoted", gate.reason
            if bake is not None:
                reason = f"{reason}; bake {bake.verdict}: {'; '.join(bake.reasons)}"
        return cls(
            decision=decision,
            reason=reason,
            champion=champion,
            challenger=challenger,
            scores=scores,
            metric=gate.metric,
            min_improvement=gate.min_improvement,
            holdout=holdout,
            bake=bake,
            trigger=trigger,
        )
