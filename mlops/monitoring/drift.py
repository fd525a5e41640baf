"""Per-feature drift between reference and current data, vectorised with numpy/scipy.

Method (see `compare_frames`; the per-kind tests are in `monitoring.compare`):
- kinds: every column is first cast, on both sides, to the kind the reference profile recorded
  (`monitoring.profile.cast_to_kind`; without a profile the kind is inferred from the reference
  values), so a CSV that read integers as floats still compares level 1 with level 1. Values
  that cannot be cast are invalid: left out of the tests, counted, and when more than the
  `invalid` threshold of a column's values are invalid the column is "incompatible".
- numeric: both samples are sorted once; PSI on `bins` reference-quantile bins (deciles by
  default; tied edges merged), the two-sample KS statistic D computed exactly on the sorted
  arrays with scipy's asymptotic p-value (`kstwo.sf(D, round(n*m/(n+m)))`, as
  `ks_2samp(method="asymp")`), and the effect in reference standard deviations: the mean shift
  and the normalised Wasserstein distance W1 / reference std (as Evidently reports it). Integer
  columns with at most `max_int_levels` distinct reference values are treated as categorical.
- categorical/boolean: buckets are the `max_categories` most frequent reference values, plus
  `__other__` (rarer reference values) and `__unseen__` (values absent from the reference);
  chi-squared test of homogeneity on the 2 x buckets table, PSI and total variation distance
  on the bucket shares.
- missing values: whenever either side has missing cells, the null rates are compared with a
  two-proportion z-test (pooled), effect size Cohen's h = |2 asin sqrt(p1) - 2 asin sqrt(p0)|
  (Cohen 1988, ch. 6): a jump in blanks is drift even when the filled cells look the same.
- PSI floors shares at `PSI_EPSILON` so empty bins and unseen values give a finite score.
- p-values of every test (distribution and null rate) are corrected together: Holm by default
  (family-wise error: a drift alarm triggers a redeploy, so any false alarm is costly), or
  Benjamini-Hochberg ("bh").
- A test flags drift only when its corrected p-value is below `alpha` AND its effect size
  passes its threshold (`Thresholds`), so huge samples do not flag trivial differences. Fewer
  than `min_samples` non-null values on either side gives "insufficient_data", never an alarm.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring.compare import (
    category_counts,
    compare_categorical,
    compare_numeric,
    comparison_kind,
    null_rate_test,
    numeric_values,
)
from mlops_pipeline.monitoring.drift_settings import DriftConfig, Thresholds
from mlops_pipeline.monitoring.drift_stats import adjust_p_values
from mlops_pipeline.monitoring.profile import ColumnKind, cast_to_kind, infer_kind, profile_kinds
from mlops_pipeline.monitoring.results import DriftSummary, DriftVerdict, FeatureDrift
from pydantic import BaseModel


def _base_result(name: str, role: str, kind: ColumnKind, n_ref: int, n_cur: int) -> dict:
    return {
        "name": name,
        "role": role,
        "kind": kind.kind,
        "integer": kind.integer,
        "status": "ok",
        "drifted": False,
        "drifted_by": [],
        "method": None,
        "score": None,
        "p_value": None,
        "p_value_raw": None,
        "statistic": None,
        "distance": None,
        "psi": None,
        "wasserstein_sd": None,
        "severity": 0.0,
        "n_reference": n_ref,
        "n_current": n_cur,
    }


def _compare_column(
    name: str, role: str, ref: pd.Series, cur: pd.Series, kind: ColumnKind, config: DriftConfig
) -> FeatureDrift:
    """One column's tests before the correction across columns (p_value and drift unset)."""
    limits = config.for_feature(name)
    ref_cast, cur_cast = cast_to_kind(ref, kind), cast_to_kind(cur, kind)
    method_kind = comparison_kind(kind, ref_cast, config.max_int_levels)
    if method_kind == "numeric":
        ref_values, cur_values = numeric_values(ref_cast), numeric_values(cur_cast)
        n_ref, n_cur = ref_values.size, cur_values.size
    else:
        n_ref = int((~ref_cast.missing & ~ref_cast.invalid).sum())
        n_cur = int((~cur_cast.missing & ~cur_cast.invalid).sum())
    result = _base_result(name, role, kind, n_ref, n_cur)
    present = int((~cur_cast.missing).sum())
    n_invalid = int(cur_cast.invalid.sum())
    result["n_invalid"] = n_invalid
    result["invalid_share"] = n_invalid / present if present else 0.0
    null_rate = null_rate_test(ref_cast, cur_cast, config.min_samples)
    result["null_rate_reference"] = null_rate["reference"]
    result["null_rate_current"] = null_rate["current"]
    if n_invalid and result["invalid_share"] > limits.invalid:
        examples = ", ".join(repr(v) for v in cur_cast.invalid_examples(cur))
        result["status"] = "incompatible"
        result["reason"] = (
            f"{result['invalid_share']:.1%} of current values (e.g. {examples}) cannot be read "
            f"as {kind.kind}, the kind the reference recorded"
        )
        return FeatureDrift.model_validate(result)
    result["null_rate"] = null_rate
    if method_kind == "datetime":
        result["status"] = "skipped"
        result["reason"] = "timestamps move by design; only their null rate is tested"
    elif min(n_ref, n_cur) < config.min_samples:
        result["status"] = "insufficient_data"
        result["reason"] = (
            f"{min(n_ref, n_cur)} non-null values; at least {config.min_samples} are needed"
        )
    elif method_kind == "numeric":
        result |= compare_numeric(ref_values, cur_values, config.bins)
    else:
        counted = kind.kind == "categorical"  # keys of raw values equal those of cast values
        result |= compare_categorical(
            category_counts(ref if counted else ref_cast.values),
            category_counts(cur if counted else cur_cast.values),
            config.max_categories,
        )
    result["score"] = result["psi"]
    return FeatureDrift.model_validate(result)


def _judge(result: FeatureDrift, limits: Thresholds, alpha: float) -> None:
    """Set severity, drifted, drifted_by, status and method from corrected p-values."""
    severities = {}
    if result.p_value is not None:
        effects = [
            (result.psi or 0.0) / limits.psi,
            (result.distance or 0.0) / limits.distance,
            (result.unseen_share or 0.0) / limits.unseen,
        ]
        if result.wasserstein_sd is not None:
            effects.append(result.wasserstein_sd / limits.wasserstein)
        severities["distribution"] = (max(effects), result.p_value)
    null_rate = result.null_rate
    if null_rate is not None and null_rate.p_value is not None:
        severities["null_rate"] = ((null_rate.effect or 0.0) / limits.null_rate, null_rate.p_value)
    flagged = [t for t, (sev, p) in severities.items() if p < alpha and sev >= 1.0]
    result.severity = max((sev for sev, _ in severities.values()), default=0.0)
    result.drifted = bool(flagged)
    result.drifted_by = flagged
    if flagged:
        result.status = "drift"
        if flagged == ["null_rate"]:
            result.method = "null_rate"


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str] | None = None,
    prediction_columns: list[str] | None = None,
    config: DriftConfig | None = None,
    kinds: Mapping[str, ColumnKind] | None = None,
) -> DriftVerdict:
    """Test every common column (or `columns`) for drift and return the verdict.

    Args:
        reference: the reference rows (registration's reference data), one column per feature.
        current: the rows to compare (a monitoring window, or a file).
        columns: the columns to test, each present in both frames; default: all common ones.
        prediction_columns: those of `columns` that hold model outputs (role "prediction").
        config: drift settings; default `DriftConfig()`.
        kinds: column -> ColumnKind from the reference profile, deciding how each column is
            read; a column without one gets the kind inferred from its reference values.

    Returns:
        A `DriftVerdict`: status "drift" | "incompatible" | "ok", the drifted column names
        (most severe first), one `FeatureDrift` per column, counts and the settings used.

    Raises:
        InvalidInputError: the frames have no column in common.
    """
    config = config or DriftConfig()
    kinds = kinds or {}
    predictions = set(prediction_columns or [])
    if columns is None:
        columns = [c for c in reference.columns if c in current.columns]
    if not columns:
        raise InvalidInputError(
            "Reference and current data have no columns in common.",
            hint=f"Reference has {list(reference.columns)[:10]}, "
            f"current has {list(current.columns)[:10]}.",
        )

    def compare(name: str) -> FeatureDrift:
        kind = kinds.get(str(name)) or infer_kind(reference[name])
        role = "prediction" if name in predictions else "feature"
        return _compare_column(str(name), role, reference[name], current[name], kind, config)

    # numpy sorts and searches release the GIL, so columns overlap on several cores
    with ThreadPoolExecutor(max_workers=min(len(columns), os.cpu_count() or 1)) as pool:
        results = list(pool.map(compare, columns))
    return assemble_verdict(results, config, len(reference), len(current))


def assemble_verdict(
    results: list[FeatureDrift], config: DriftConfig, n_reference: int, n_current: int
) -> DriftVerdict:
    """The verdict from each column's uncorrected result (as `_compare_column` gives it):
    p-values corrected together, each column judged, the overall status and counts. Shared by
    `compare_frames` and the partition-summary path (`monitoring.partitions`)."""
    # one family for the correction: every distribution test and every null-rate test
    family = [(r, "distribution") for r in results if r.p_value_raw is not None]
    family += [
        (r, "null_rate")
        for r in results
        if r.null_rate is not None and r.null_rate.p_value_raw is not None
    ]
    raw = np.array(
        [r.p_value_raw if t == "distribution" else r.null_rate.p_value_raw for r, t in family]
    )
    for (result, test), p_value in zip(
        family, adjust_p_values(raw, config.correction), strict=True
    ):
        if test == "distribution":
            result.p_value = float(p_value)
        else:
            result.null_rate.p_value = float(p_value)
    for result in results:
        limits = config.for_feature(result.name)
        result.thresholds = limits.model_dump()
        _judge(result, limits, config.alpha)
    drifted = sorted((r for r in results if r.drifted), key=lambda r: -r.severity)
    incompatible = [r.name for r in results if r.status == "incompatible"]
    statuses = [r.status for r in results]
    untested = bool(results) and all(s == "insufficient_data" for s in statuses)
    return DriftVerdict(
        status="drift"
        if drifted
        else "incompatible"
        if incompatible
        else "insufficient_data"
        if untested
        else "ok",
        drift=bool(drifted),
        drifted=[r.name for r in drifted],
        incompatible=incompatible,
        features=results,
        summary=DriftSummary(
            columns=len(results),
            tested=sum(r.p_value is not None for r in results),
            null_rate_tested=sum(t == "null_rate" for _, t in family),
            drifted=len(drifted),
            incompatible=len(incompatible),
            insufficient_data=statuses.count("insufficient_data"),
            n_reference=n_reference,
            n_current=n_current,
        ),
        config=config,
    )


def json_safe(value: Any) -> Any:
    """VALUE as plain JSON data: NaN/inf floats (not valid JSON) become None, recursively, and
    a pydantic result becomes its JSON form (`model_dump(mode="json")`)."""
    if isinstance(value, BaseModel):
        return json_safe(value.model_dump(mode="json"))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str] | None = None,
    prediction_columns: list[str] | None = None,
    config: DriftConfig | None = None,
    profile: dict[str, Any] | None = None,
) -> DriftVerdict:
    """Compare current data with the reference per column (`compare_frames`); the reference
    `profile` (registration's, see `monitoring.profile`) decides each column's kind where it
    records one. Raises InvalidInputError when the frames share no column."""
    return compare_frames(
        reference,
        current,
        columns=columns,
        prediction_columns=prediction_columns,
        config=config,
        kinds=profile_kinds(profile, reference),
    )
