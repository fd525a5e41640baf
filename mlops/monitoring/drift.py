"""Per-feature drift between reference and current data, vectorised with numpy/scipy.

Method (see `compare_frames`):
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
from mlops_pipeline.monitoring.drift_settings import DriftConfig, Thresholds
from mlops_pipeline.monitoring.drift_stats import (
    adjust_p_values,
    ks_statistic,
    psi,
    wasserstein_distance,
)
from mlops_pipeline.monitoring.profile import (
    CastColumn,
    ColumnKind,
    cast_to_kind,
    category_key,
    infer_kind,
    profile_kinds,
)
from mlops_pipeline.monitoring.results import DriftSummary, DriftVerdict, FeatureDrift
from pydantic import BaseModel
from scipy import stats

OTHER = "__other__"
UNSEEN = "__unseen__"
PLOT_BINS = 40
PLOT_CATEGORIES = 20


def comparison_kind(kind: ColumnKind, reference: CastColumn, max_int_levels: int) -> str:
    """How a column is tested: numeric, categorical (incl. boolean and few-level integers) or
    datetime (not tested: timestamps move by design)."""
    if kind.kind in ("boolean", "categorical"):
        return "categorical"
    if (
        kind.kind == "numeric"
        and kind.integer
        and reference.values.nunique(dropna=True) <= max_int_levels
    ):
        return "categorical"
    return kind.kind


def _numeric_values(cast: CastColumn) -> np.ndarray:
    values = cast.values.to_numpy(dtype="float64", na_value=np.nan)
    return np.sort(values[np.isfinite(values)])


def _numeric(ref: np.ndarray, cur: np.ndarray, bins: int) -> dict[str, Any]:
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        cumulative = np.searchsorted(values, edges, "right")
        return np.diff(np.concatenate(([0], cumulative, [values.size]))) / values.size

    statistic = ks_statistic(ref, cur)
    effective_n = round(ref.size * cur.size / (ref.size + cur.size))
    low, high = np.quantile(ref, [0.005, 0.995])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    plot_edges = np.linspace(low, high, PLOT_BINS + 1)

    def plot_shares(values: np.ndarray) -> list[float]:
        counts = np.diff(np.searchsorted(values, plot_edges, "left"))
        return (counts / values.size).tolist()

    std = float(ref.std(ddof=1)) if ref.size > 1 else 0.0
    mean_ref, mean_cur = float(ref.mean()), float(cur.mean())
    return {
        "method": "ks+psi",
        "statistic": statistic,
        "p_value_raw": float(stats.kstwo.sf(statistic, effective_n)),
        "distance": statistic,
        "psi": psi(shares(ref), shares(cur)),
        "unseen_share": 0.0,
        "mean_reference": mean_ref,
        "mean_current": mean_cur,
        "std_reference": std,
        # effect in reference standard deviations; undefined for a constant reference
        "mean_shift_sd": (mean_cur - mean_ref) / std if std > 0 else None,
        "wasserstein_sd": wasserstein_distance(ref, cur) / std if std > 0 else None,
        "plot": {
            "type": "histogram",
            "edges": plot_edges.tolist(),
            "reference": plot_shares(ref),
            "current": plot_shares(cur),
        },
    }


def _category_counts(series: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value, count in series.value_counts(dropna=True).items():
        key = category_key(value)
        counts[key] = counts.get(key, 0) + int(count)
    return counts


def _categorical(
    ref_counts: dict[str, int], cur_counts: dict[str, int], max_categories: int
) -> dict[str, Any]:
    kept = sorted(ref_counts, key=lambda k: (-ref_counts[k], k))[:max_categories]
    kept_set = set(kept)
    buckets = [*kept, OTHER, UNSEEN]

    def bucketed(counts: dict[str, int]) -> np.ndarray:
        totals = dict.fromkeys(buckets, 0)
        for key, count in counts.items():
            if key in kept_set:
                totals[key] += count
            elif key in ref_counts:
                totals[OTHER] += count
            else:
                totals[UNSEEN] += count
        return np.array([totals[b] for b in buckets], dtype="float64")

    ref, cur = bucketed(ref_counts), bucketed(cur_counts)
    used = (ref + cur) > 0
    table = np.vstack([ref[used], cur[used]])
    if table.shape[1] > 1:
        chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    else:
        chi2, p_value = 0.0, 1.0
    ref_share, cur_share = ref / ref.sum(), cur / cur.sum()
    order = np.argsort(-(ref_share + cur_share), kind="stable")[:PLOT_CATEGORIES]
    return {
        "method": "chi2+psi",
        "statistic": float(chi2),
        "p_value_raw": float(p_value),
        "distance": float(0.5 * np.abs(cur_share - ref_share).sum()),
        "psi": psi(ref_share, cur_share),
        "unseen_share": float(cur_share[-1]),
        "unseen_values": sorted(k for k in cur_counts if k not in ref_counts)[:10],
        "plot": {
            "type": "bar",
            "categories": [buckets[i] for i in order if used[i]],
            "reference": [float(ref_share[i]) for i in order if used[i]],
            "current": [float(cur_share[i]) for i in order if used[i]],
        },
    }


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


def _null_rate_test(ref: CastColumn, cur: CastColumn, min_samples: int) -> dict | None:
    """Two-proportion z-test (pooled) on the missing-cell rates and Cohen's h; None when either
    side has fewer than `min_samples` rows or neither has a missing cell (nothing to test)."""
    n_ref, n_cur = ref.missing.size, cur.missing.size
    a, b = int(ref.missing.sum()), int(cur.missing.sum())
    rate_ref = a / n_ref if n_ref else 0.0
    rate_cur = b / n_cur if n_cur else 0.0
    result = {"reference": rate_ref, "current": rate_cur, "p_value_raw": None, "effect": None}
    pooled = (a + b) / (n_ref + n_cur) if n_ref + n_cur else 0.0
    if min(n_ref, n_cur) < min_samples or pooled in (0.0, 1.0):
        return result
    z = (rate_cur - rate_ref) / math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    result["p_value_raw"] = float(2 * stats.norm.sf(abs(z)))
    result["effect"] = abs(2 * math.asin(math.sqrt(rate_cur)) - 2 * math.asin(math.sqrt(rate_ref)))
    return result


def _compare_column(
    name: str, role: str, ref: pd.Series, cur: pd.Series, kind: ColumnKind, config: DriftConfig
) -> FeatureDrift:
    """One column's tests before the correction across columns (p_value and drift unset)."""
    limits = config.for_feature(name)
    ref_cast, cur_cast = cast_to_kind(ref, kind), cast_to_kind(cur, kind)
    method_kind = comparison_kind(kind, ref_cast, config.max_int_levels)
    if method_kind == "numeric":
        ref_values, cur_values = _numeric_values(ref_cast), _numeric_values(cur_cast)
        n_ref, n_cur = ref_values.size, cur_values.size
    else:
        n_ref = int((~ref_cast.missing & ~ref_cast.invalid).sum())
        n_cur = int((~cur_cast.missing & ~cur_cast.invalid).sum())
    result = _base_result(name, role, kind, n_ref, n_cur)
    present = int((~cur_cast.missing).sum())
    n_invalid = int(cur_cast.invalid.sum())
    result["n_invalid"] = n_invalid
    result["invalid_share"] = n_invalid / present if present else 0.0
    null_rate = _null_rate_test(ref_cast, cur_cast, config.min_samples)
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
        result |= _numeric(ref_values, cur_values, config.bins)
    else:
        counted = kind.kind == "categorical"  # keys of raw values equal those of cast values
        result |= _categorical(
            _category_counts(ref if counted else ref_cast.values),
            _category_counts(cur if counted else cur_cast.values),
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
    return DriftVerdict(
        status="drift" if drifted else "incompatible" if incompatible else "ok",
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
            n_reference=len(reference),
            n_current=len(current),
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
