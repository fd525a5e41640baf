"""Per-feature drift between reference and current data, vectorised with numpy/scipy.

Method (see `compare_frames`):
- numeric: both samples are sorted once; PSI on `bins` reference-quantile bins (deciles by
  default; tied edges merged) and the two-sample KS statistic D computed exactly on the sorted
  arrays, with scipy's asymptotic p-value (`kstwo.sf(D, round(n*m/(n+m)))`, as
  `ks_2samp(method="asymp")`). Integer columns with at most `max_int_levels` distinct reference
  values are treated as categorical.
- categorical/boolean: buckets are the `max_categories` most frequent reference values, plus
  `__other__` (rarer reference values) and `__unseen__` (values absent from the reference);
  chi-squared test of homogeneity on the 2 x buckets table, PSI and total variation distance
  on the bucket shares.
- PSI floors shares at `PSI_EPSILON` so empty bins and unseen values give a finite score.
- p-values are corrected across all tested columns: Holm by default (family-wise error: a
  drift alarm triggers a redeploy, so any false alarm is costly), or Benjamini-Hochberg ("bh").
- A column drifts only when its corrected p-value is below `alpha` AND an effect size passes its
  threshold (PSI, or the distance: KS D / total variation, or the unseen-value share), so huge
  samples do not flag trivial differences. Fewer than `min_samples` non-null values on either
  side gives "insufficient_data", never an alarm.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlops_pipeline.errors import InvalidInputError, NotFoundError
from mlops_pipeline.tasks.profile import category_key, column_kind
from prefect import task
from prefect.cache_policies import NO_CACHE
from pyarrow import ArrowException
from scipy import stats

PSI_EPSILON = 1e-4
OTHER = "__other__"
UNSEEN = "__unseen__"
PLOT_BINS = 40
PLOT_CATEGORIES = 20


@dataclass(frozen=True)
class Thresholds:
    """Effect sizes a significant difference must reach to count as drift."""

    psi: float = 0.1
    distance: float = 0.05
    unseen: float = 0.01


@dataclass(frozen=True)
class DriftConfig:
    """Drift settings; `features` overrides the thresholds per column name."""

    alpha: float = 0.01
    correction: Literal["bh", "holm"] = "holm"
    min_samples: int = 500
    bins: int = 10
    max_categories: int = 50
    max_int_levels: int = 20
    thresholds: Thresholds = field(default_factory=Thresholds)
    features: dict[str, Thresholds] = field(default_factory=dict)

    def for_feature(self, name: str) -> Thresholds:
        return self.features.get(name, self.thresholds)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftConfig:
        """Build from JSON: {"alpha": .., "thresholds": {..}, "features": {name: {..}}}."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise InvalidInputError(
                f"Unknown drift settings {sorted(unknown)}.", hint=f"Use only {sorted(known)}."
            )
        try:
            base = Thresholds(**data.get("thresholds", {}))
            features = {
                name: replace(base, **values) for name, values in data.get("features", {}).items()
            }
            scalars = {k: v for k, v in data.items() if k not in ("thresholds", "features")}
            config = cls(thresholds=base, features=features, **scalars)
        except TypeError as exc:
            raise InvalidInputError(
                f"Invalid drift threshold setting: {exc}.",
                hint="Threshold keys are psi, distance and unseen.",
            ) from exc
        if config.correction not in ("bh", "holm"):
            raise InvalidInputError(
                f"correction '{config.correction}' is not supported.", hint="Use 'bh' or 'holm'."
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift_kind(series: pd.Series, max_int_levels: int) -> str:
    """How a column is tested: numeric, categorical (incl. boolean and few-level ints), datetime."""
    kind = column_kind(series)
    if kind == "boolean":
        return "categorical"
    if (
        kind == "numeric"
        and pd.api.types.is_integer_dtype(series.dtype)
        and series.nunique(dropna=True) <= max_int_levels
    ):
        return "categorical"
    return kind


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    ref = np.maximum(ref_share, PSI_EPSILON)
    cur = np.maximum(cur_share, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _numeric_values(series: pd.Series) -> np.ndarray:
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    return np.sort(values[np.isfinite(values)])


def _ecdf_steps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and the ECDF at each (ties end at their last copy)."""
    last = np.flatnonzero(values[1:] != values[:-1])
    last = np.append(last, values.size - 1)
    return values[last], (last + 1) / values.size


def ks_statistic(ref: np.ndarray, cur: np.ndarray) -> float:
    """Exact two-sample KS D for sorted arrays, searching only the smaller sample's steps.

    Between two steps of the smaller sample its ECDF is flat while the other one rises, so the
    largest gap is at a step (x) or just before one (x-): two binary searches per step.
    """
    small, large = (ref, cur) if ref.size <= cur.size else (cur, ref)
    steps, small_cdf = _ecdf_steps(small)
    small_before = np.concatenate(([0.0], small_cdf[:-1]))
    large_at = np.searchsorted(large, steps, "right") / large.size
    large_before = np.searchsorted(large, steps, "left") / large.size
    return float(max(np.abs(small_cdf - large_at).max(), np.abs(small_before - large_before).max()))


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

    return {
        "method": "ks+psi",
        "statistic": statistic,
        "p_value_raw": float(stats.kstwo.sf(statistic, effective_n)),
        "distance": statistic,
        "psi": _psi(shares(ref), shares(cur)),
        "unseen_share": 0.0,
        "mean_reference": float(ref.mean()),
        "mean_current": float(cur.mean()),
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
        "psi": _psi(ref_share, cur_share),
        "unseen_share": float(cur_share[-1]),
        "unseen_values": sorted(k for k in cur_counts if k not in ref_counts)[:10],
        "plot": {
            "type": "bar",
            "categories": [buckets[i] for i in order if used[i]],
            "reference": [float(ref_share[i]) for i in order if used[i]],
            "current": [float(cur_share[i]) for i in order if used[i]],
        },
    }


def _adjust(p_values: np.ndarray, method: str) -> np.ndarray:
    if p_values.size == 0:
        return p_values
    if method == "bh":
        return stats.false_discovery_control(p_values, method="bh")
    order = np.argsort(p_values)
    scaled = p_values[order] * (p_values.size - np.arange(p_values.size))
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def _base_result(name: str, role: str, kind: str, n_ref: int, n_cur: int) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "kind": kind,
        "status": "ok",
        "drifted": False,
        "method": None,
        "score": None,
        "p_value": None,
        "p_value_raw": None,
        "statistic": None,
        "distance": None,
        "psi": None,
        "severity": 0.0,
        "n_reference": n_ref,
        "n_current": n_cur,
    }


def _compare_column(
    name: str, role: str, ref: pd.Series, cur: pd.Series, config: DriftConfig
) -> dict[str, Any]:
    kind = drift_kind(ref, config.max_int_levels)
    numeric_current = pd.api.types.is_numeric_dtype(cur.dtype) and not pd.api.types.is_bool_dtype(
        cur.dtype
    )
    if kind == "numeric" and not numeric_current and cur.notna().any():
        result = _base_result(name, role, kind, int(ref.notna().sum()), int(cur.notna().sum()))
        result["status"] = "incompatible"
        result["reason"] = f"reference is numeric but current has dtype {cur.dtype}"
        return result
    if kind == "numeric":
        ref_values, cur_values = _numeric_values(ref), _numeric_values(cur)
        n_ref, n_cur = ref_values.size, cur_values.size
    else:
        n_ref, n_cur = int(ref.notna().sum()), int(cur.notna().sum())
    result = _base_result(name, role, kind, n_ref, n_cur)
    result["null_rate_reference"] = float(ref.isna().mean()) if len(ref) else 0.0
    result["null_rate_current"] = float(cur.isna().mean()) if len(cur) else 0.0
    if kind == "datetime":
        result["status"] = "skipped"
        result["reason"] = "timestamps move by design; not tested for drift"
        return result
    if min(n_ref, n_cur) < config.min_samples:
        result["status"] = "insufficient_data"
        result["reason"] = (
            f"{min(n_ref, n_cur)} non-null values; at least {config.min_samples} are needed"
        )
        return result
    if kind == "numeric":
        result |= _numeric(ref_values, cur_values, config.bins)
    else:
        result |= _categorical(_category_counts(ref), _category_counts(cur), config.max_categories)
    result["score"] = result["psi"]
    return result


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str] | None = None,
    prediction_columns: list[str] | None = None,
    config: DriftConfig | None = None,
) -> dict[str, Any]:
    """Test every common column (or `columns`) for drift and return the verdict as a dict.

    Returns {"drift": bool, "drifted": [names, most severe first], "features": [per-column
    results incl. name, role, kind, status, drifted, method, score (PSI), p_value (corrected),
    p_value_raw, statistic, distance, severity], "summary": counts, "config": settings}.
    """
    config = config or DriftConfig()
    predictions = set(prediction_columns or [])
    if columns is None:
        columns = [c for c in reference.columns if c in current.columns]
    if not columns:
        raise InvalidInputError(
            "Reference and current data have no columns in common.",
            hint=f"Reference has {list(reference.columns)[:10]}, "
            f"current has {list(current.columns)[:10]}.",
        )
    # numpy sorts and searches release the GIL, so columns overlap on several cores
    with ThreadPoolExecutor(max_workers=min(len(columns), os.cpu_count() or 1)) as pool:
        results = list(
            pool.map(
                lambda name: _compare_column(
                    str(name),
                    "prediction" if name in predictions else "feature",
                    reference[name],
                    current[name],
                    config,
                ),
                columns,
            )
        )
    tested = [r for r in results if r["p_value_raw"] is not None]
    adjusted = _adjust(np.array([r["p_value_raw"] for r in tested]), config.correction)
    for result, p_value in zip(tested, adjusted, strict=True):
        limits = config.for_feature(result["name"])
        result["p_value"] = float(p_value)
        result["thresholds"] = asdict(limits)
        result["severity"] = max(
            result["psi"] / limits.psi,
            result["distance"] / limits.distance,
            result["unseen_share"] / limits.unseen,
        )
        result["drifted"] = bool(p_value < config.alpha and result["severity"] >= 1.0)
        result["status"] = "drift" if result["drifted"] else "ok"
    drifted = sorted((r for r in results if r["drifted"]), key=lambda r: -r["severity"])
    statuses = [r["status"] for r in results]
    return {
        "drift": bool(drifted),
        "drifted": [r["name"] for r in drifted],
        "features": results,
        "summary": {
            "columns": len(results),
            "tested": len(tested),
            "drifted": len(drifted),
            "insufficient_data": statuses.count("insufficient_data"),
            "n_reference": len(reference),
            "n_current": len(current),
        },
        "config": config.to_dict(),
    }


def json_safe(value: Any) -> Any:
    """Replace NaN/inf floats (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@task(cache_policy=NO_CACHE)
def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str] | None = None,
    prediction_columns: list[str] | None = None,
    config: DriftConfig | None = None,
) -> dict[str, Any]:
    """Compare current data with the reference per column and return the drift verdict."""
    return json_safe(
        compare_frames(
            reference,
            current,
            columns=columns,
            prediction_columns=prediction_columns,
            config=config,
        )
    )


def read_table_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, raising mlops errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(
            f"File '{path}' does not exist.", hint="Check the path.", path=str(path)
        )
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, ArrowException) as exc:
        raise InvalidInputError(
            f"File '{path}' could not be read as {suffix.lstrip('.')}: {exc.__class__.__name__}.",
            hint="Pass a valid CSV or Parquet file.",
            path=str(path),
        ) from exc
    raise InvalidInputError(
        f"File '{path}' is neither CSV nor Parquet.",
        hint="Use a .csv or .parquet file.",
        path=str(path),
    )
