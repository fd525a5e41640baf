"""Typed results of live rollouts; JSON only at the edges (`model_dump(mode="json")`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from mlops_pipeline.rollout.admin import RouteFigures
from mlops_pipeline.rollout.canary import CanaryStep
from pydantic import BaseModel, Field

RolloutKind = Literal["canary", "shadow"]
RolloutDecisionName = Literal["promoted", "rolled_back", "shadowed"]


class ShadowComparison(BaseModel):
    """Champion and shadow answers to the same live requests, joined on the live request id.

    `paired_rows` rows were answered by both. For class predictions `agreement` is the share
    of paired rows with equal predictions; for numbers `mean_abs_difference` and
    `max_abs_difference` (challenger - champion) are set instead. `labelled_rows` paired rows
    have a feedback label; on them `metric` is computed for both (None without labels, or with
    `metric_problem` when the metric asked for is of the other task).
    """

    champion_rows: int = Field(ge=0, description="Mirrored rows the champion answered (2xx).")
    challenger_rows: int = Field(ge=0, description="Rows the shadow answered (2xx).")
    paired_rows: int = Field(ge=0)
    kind: Literal["classes", "numbers", "none"]
    agreement: float | None = None
    mean_abs_difference: float | None = None
    max_abs_difference: float | None = None
    labelled_rows: int = 0
    metric: str | None = None
    champion_metric: float | None = None
    challenger_metric: float | None = None
    metric_problem: str | None = Field(
        default=None, description="Why the metric was not computed (it does not fit `kind`)."
    )
    champion_requests: int = Field(default=0, description="Captured live requests.")
    challenger_requests: int = Field(default=0, description="Captured shadow requests.")
    champion_error_rate: float | None = None
    challenger_error_rate: float | None = None
    champion_p50_ms: float | None = None
    champion_p95_ms: float | None = None
    challenger_p50_ms: float | None = None
    challenger_p95_ms: float | None = None


class RolloutDecision(BaseModel):
    """One canary or shadow run: what happened to the challenger, why, and the evidence."""

    kind: RolloutKind
    deployment: str
    model_name: str
    champion_version: str
    challenger_version: str
    decision: RolloutDecisionName
    reason: str
    steps: list[CanaryStep] = Field(default_factory=list, description="Canary steps judged.")
    sticky_header: str | None = None
    shadow: ShadowComparison | None = None
    proxy: list[RouteFigures] = Field(
        default_factory=list, description="The proxy's per-route figures at the end (shadow)."
    )
    window_start: datetime | None = Field(
        default=None, description="UTC start of the captures a shadow's comparison read."
    )
    window_end: datetime | None = Field(
        default=None, description="UTC end of them; a later report reads the same window."
    )
    started_at: datetime | None = Field(
        default=None, description="UTC start of the run (its challenger starting); None: now."
    )
    report_path: str | None = None
    mlflow_run_id: str | None = None
    ledger_id: int | None = None
