"""Per-kind comparisons of one column's reference and current values, used by `monitoring.drift`.

`comparison_kind` picks how a column is tested; each test returns its raw (uncorrected) result
as FeatureDrift fields: numeric columns by KS and PSI on reference-quantile bins, with effects in
reference standard deviations; categorical ones by chi-squared and PSI on the most frequent
reference values plus `__other__` and `__unseen__` buckets; missing cells by a two-proportion
z-test with Cohen's h. The method and its sources are described in `monitoring.drift`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from mlops_pipeline.monitoring.drift_stats import ks_statistic, psi, wasserstein_distance
from mlops_pipeline.monitoring.profile import CastColumn, ColumnKind, category_key
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


def numeric_values(cast: CastColumn) -> np.ndarray:
    values = cast.values.to_numpy(dtype="float64", na_value=np.nan)
    return np.sort(values[np.isfinite(values)])


def compare_numeric(ref: np.ndarray, cur: np.ndarray, bins: int) -> dict[str, Any]:
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


def category_counts(series: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value, count in series.value_counts(dropna=True).items():
        key = category_key(value)
        counts[key] = counts.get(key, 0) + int(count)
    return counts


def compare_categorical(
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


def null_rate_test(ref: CastColumn, cur: CastColumn, min_samples: int) -> dict:
    """Two-proportion z-test (pooled) on the missing-cell rates, with Cohen's h as effect size.

    Returns `{"reference", "current"}` rates (0..1) and `p_value_raw` / `effect`, both None when
    either side has fewer than `min_samples` rows or neither has a missing cell (nothing to test).
    Sources: the pooled two-proportion z-test; Cohen (1988), h = |2 asin sqrt p1 - 2 asin sqrt p2|.
    """
    return null_rate_from_counts(
        ref.missing.size, int(ref.missing.sum()), cur.missing.size, int(cur.missing.sum()),
        min_samples,
    )  # fmt: skip


def null_rate_from_counts(n_ref: int, a: int, n_cur: int, b: int, min_samples: int) -> dict:
    """`null_rate_test` from counts: `a` of `n_ref` reference and `b` of `n_cur` current cells
    missing (what per-partition summaries keep)."""
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
