"""Typed results of monitoring: per-column drift, the drift verdict, validation, the monitor window.

Domain functions and steps return these pydantic models; they become JSON only at the flow and
CLI boundary (`model_dump(mode="json")`), in the shape `mlops drift --json` and
`mlops monitor --json` have always printed. Every model also reads like the JSON it becomes
(`verdict["drifted"]`, `feature.get("reason")`), so code written against that JSON keeps
working; new code uses attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from mlops_pipeline.monitoring.drift_settings import DriftConfig
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

M = TypeVar("M", bound="Result")

FeatureStatus = Literal["ok", "drift", "incompatible", "skipped", "insufficient_data"]


class Result(BaseModel):
    """Base of the results: pydantic fields, plus read access by key like the JSON they become."""

    model_config = ConfigDict(extra="forbid")

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The field `key`, or `default` when the model has no such field or it is None."""
        value = getattr(self, key, None) if key in type(self).model_fields else None
        return default if value is None else value

    def __eq__(self, other: object) -> bool:
        # equal to a mapping holding the fields that were given, as the JSON form compares
        if isinstance(other, Mapping):
            return self.model_dump(exclude_unset=True) == dict(other)
        return super().__eq__(other)

    @classmethod
    def coerce(cls: type[M], value: M | Mapping[str, Any]) -> M:
        """`value` itself, or the model validated from its JSON form (e.g. a saved drift.json).

        Raises:
            pydantic.ValidationError: the mapping does not fit the model.
        """
        return value if isinstance(value, cls) else cls.model_validate(value)


def _finite(value: float | None) -> float | None:
    """NaN and infinities are not JSON: a statistic that is not finite is reported as None."""
    return None if value is None or not math.isfinite(value) else value


class HistogramPlot(Result):
    """Numeric column: shares of rows per bin between `edges` (reference 0.5-99.5 % range)."""

    type: Literal["histogram"] = "histogram"
    edges: list[float]
    reference: list[float]
    current: list[float]


class BarPlot(Result):
    """Categorical column: shares of rows per bucket, the most frequent buckets first."""

    type: Literal["bar"] = "bar"
    categories: list[str]
    reference: list[float]
    current: list[float]


Plot = Annotated[HistogramPlot | BarPlot, Field(discriminator="type")]


class NullRateTest(Result):
    """Missing-cell rates (shares 0..1) and their two-proportion z-test; Cohen's h as effect."""

    reference: float
    current: float
    p_value_raw: float | None = None
    effect: float | None = None
    p_value: float | None = None


class FeatureDrift(Result):
    """Drift of one column between reference and current data (see `monitoring.drift`).

    Shares are 0..1, `psi`/`score` is the population stability index, `distance` KS D (numeric)
    or total variation distance (categorical), `wasserstein_sd` and `mean_shift_sd` are in
    reference standard deviations, p-values are corrected across all tests (`p_value_raw` before).
    Fields that do not apply to a column (e.g. `plot` when it was not tested, `unseen_values`
    for a numeric column) stay unset and are left out of its JSON, as they always were.
    """

    name: str
    role: Literal["feature", "prediction"] = "feature"
    kind: str
    integer: bool = False
    status: FeatureStatus = "ok"
    drifted: bool = False
    drifted_by: list[Literal["distribution", "null_rate"]] = Field(default_factory=list)
    method: str | None = None
    score: float | None = None
    p_value: float | None = None
    p_value_raw: float | None = None
    statistic: float | None = None
    distance: float | None = None
    psi: float | None = None
    wasserstein_sd: float | None = None
    severity: float = 0.0
    n_reference: int = 0
    n_current: int = 0
    n_invalid: int = 0
    invalid_share: float = 0.0
    null_rate_reference: float | None = None
    null_rate_current: float | None = None
    reason: str | None = None
    null_rate: NullRateTest | None = None
    unseen_share: float | None = None
    unseen_values: list[str] | None = None
    mean_reference: float | None = None
    mean_current: float | None = None
    std_reference: float | None = None
    mean_shift_sd: float | None = None
    plot: Plot | None = None
    thresholds: dict[str, float] | None = None

    @field_validator(
        "score",
        "p_value",
        "p_value_raw",
        "statistic",
        "distance",
        "psi",
        "wasserstein_sd",
        "mean_reference",
        "mean_current",
        "std_reference",
        "mean_shift_sd",
    )
    @classmethod
    def _finite_or_none(cls, value: float | None) -> float | None:
        return _finite(value)

    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {key: value for key, value in data.items() if key in self.model_fields_set}


class DriftSummary(Result):
    """Counts over the columns of one comparison."""

    columns: int = 0
    tested: int = 0
    null_rate_tested: int = 0
    drifted: int = 0
    incompatible: int = 0
    insufficient_data: int = 0
    n_reference: int = 0
    n_current: int = 0


class DriftVerdict(Result):
    """The verdict of one comparison: `drifted` lists column names, most severe first.

    `status` is "insufficient_data" when no column had enough values on both sides to be
    tested: nothing was compared, which is not "ok" (no drift found) either.
    """

    status: Literal["drift", "incompatible", "insufficient_data", "ok"] = "ok"
    drift: bool
    drifted: list[str] = Field(default_factory=list)
    incompatible: list[str] = Field(default_factory=list)
    features: list[FeatureDrift] = Field(default_factory=list)
    summary: DriftSummary = Field(default_factory=DriftSummary)
    config: DriftConfig = Field(default_factory=DriftConfig)

    def feature(self, name: str) -> FeatureDrift:
        """The result of column `name` (KeyError if it was not compared)."""
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


class ExpectationFailure(Result):
    """One failed expectation: `unexpected_percent` is 0..100, as GX reports it."""

    expectation: str
    column: str | None = None
    observed: Any = None
    unexpected_percent: float | None = None
    partial_unexpected: list[str] = Field(default_factory=list)
    error: str | None = None


class QuarantinedFile(Result):
    """A capture file moved aside: its path relative to the capture URI and why."""

    file: str
    reason: str
    moved_to: str | None = None


class ValidationResult(Result):
    """Great Expectations validation of one window (or frame); quarantined files count as
    failures. `failure_rate` is failed / evaluated (0..1); `result` is GX's full result as JSON."""

    success: bool
    evaluated: int = 0
    failed: int = 0
    failure_rate: float = 0.0
    failures: list[ExpectationFailure] = Field(default_factory=list)
    data_docs: str | None = None
    quarantined: list[QuarantinedFile] = Field(default_factory=list)
    result: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _success_unless_something_failed(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "success" not in data:
            return {**data, "success": not data.get("failed") and not data.get("quarantined")}
        return data


class WindowStats(Result):
    """Row and file counts of one monitoring window."""

    rows: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rows_labelled: int = 0
    duplicates_dropped: int = 0
    files_read: int = 0
    files_quarantined: int = 0


class DriftSignal(Result):
    """Whether the window emitted `mlops.drift.detected`, and if not, why."""

    emitted: bool
    reason: str | None = None
    event_id: str | None = None
    episode_id: str | None = None

    @model_serializer(mode="wrap")
    def _without_empty_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.reason is None:
            data.pop("reason", None)
        if self.event_id is None and not self.emitted:
            data.pop("event_id", None)
        if self.episode_id is None:
            data.pop("episode_id", None)
        return data


MONITORED_FEATURE_KEYS = (
    "name",
    "role",
    "kind",
    "status",
    "drifted",
    "drifted_by",
    "method",
    "score",
    "p_value",
    "wasserstein_sd",
    "null_rate_reference",
    "null_rate_current",
    "n_invalid",
    "reason",
)


class MonitoredFeature(Result):
    """The part of a column's drift that `mlops monitor --json` prints."""

    name: str
    role: str
    kind: str
    status: FeatureStatus
    drifted: bool
    drifted_by: list[str]
    method: str | None
    score: float | None
    p_value: float | None
    wasserstein_sd: float | None
    null_rate_reference: float | None
    null_rate_current: float | None
    n_invalid: int | None
    reason: str | None

    @classmethod
    def of(cls, feature: FeatureDrift) -> MonitoredFeature:
        return cls(**{key: getattr(feature, key) for key in MONITORED_FEATURE_KEYS})


class ValidationSummary(Result):
    """The part of a window's validation that `mlops monitor --json` prints."""

    success: bool
    failure_rate: float
    failures: list[ExpectationFailure]
    quarantined: list[QuarantinedFile]
    data_docs: str | None


_NO_DATA_KEYS = ("deployment", "model_uri", "window", "files", "status", "drift")


class MonitorResult(Result):
    """One monitored window of a deployment (what `mlops monitor --json` prints).

    With `status` "no_new_data" only the header (deployment, model_uri, window, files, status,
    drift) is meaningful, and only it goes into the JSON.
    """

    deployment: str
    model_uri: str
    window: str
    files: int
    status: Literal["ok", "drift", "incompatible", "insufficient_data", "no_new_data"]
    drift: bool
    drifted: list[str] = Field(default_factory=list)
    incompatible: list[str] = Field(default_factory=list)
    features: list[MonitoredFeature] = Field(default_factory=list)
    validation: ValidationSummary | None = None
    stats: WindowStats | None = None
    report: str | None = None
    mlflow_run_id: str | None = None
    event: DriftSignal | None = None

    @classmethod
    def no_new_data(cls, deployment: str, model_uri: str, window: str) -> MonitorResult:
        return cls(
            deployment=deployment,
            model_uri=model_uri,
            window=window,
            files=0,
            status="no_new_data",
            drift=False,
        )

    @classmethod
    def of_window(
        cls,
        header: Mapping[str, Any],
        verdict: DriftVerdict,
        validation: ValidationResult,
        stats: WindowStats,
        report_path: str,
        run_id: str,
        signal: DriftSignal,
    ) -> MonitorResult:
        """The result of a window that was read, validated and drift-tested.

        `header` holds deployment, model_uri, window (text) and files (count).
        """
        return cls(
            **header,
            status=verdict.status,
            drift=verdict.drift,
            drifted=verdict.drifted,
            incompatible=verdict.incompatible,
            features=[MonitoredFeature.of(f) for f in verdict.features],
            validation=ValidationSummary(
                **{key: getattr(validation, key) for key in ValidationSummary.model_fields}
            ),
            stats=stats,
            report=report_path,
            mlflow_run_id=run_id,
            event=signal,
        )

    @model_serializer(mode="wrap")
    def _header_only_without_data(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.status == "no_new_data":
            return {key: data[key] for key in _NO_DATA_KEYS}
        return data
