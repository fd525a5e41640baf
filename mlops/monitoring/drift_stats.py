"""Two-sample statistics on sorted arrays and share vectors, used by `monitoring.drift`.

`ks_statistic` and `wasserstein_distance` take sorted samples so a column is sorted once for
every statistic; `adjust_p_values` is Holm's step-down or Benjamini-Hochberg's step-up procedure.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

PSI_EPSILON = 1e-4


def psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    """Population stability index sum((cur - ref) * ln(cur / ref)), shares floored at
    `PSI_EPSILON` so empty bins and unseen values give a finite score."""
    ref = np.maximum(ref_share, PSI_EPSILON)
    cur = np.maximum(cur_share, PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def wasserstein_distance(ref: np.ndarray, cur: np.ndarray) -> float:
    """W1 between two sorted samples: the area between their ECDFs (as
    `scipy.stats.wasserstein_distance`). A stable argsort of the two sorted runs merges them in
    linear time and says which sample each point came from, so both ECDFs are running counts."""
    both = np.concatenate((ref, cur))
    order = np.argsort(both, kind="stable")
    from_ref = order < ref.size
    ref_cdf = np.cumsum(from_ref)[:-1] / ref.size
    cur_cdf = np.cumsum(~from_ref)[:-1] / cur.size
    return float(np.sum(np.abs(ref_cdf - cur_cdf) * np.diff(both[order])))


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


def adjust_p_values(p_values: np.ndarray, method: str) -> np.ndarray:
    """Corrected p-values: "holm" (family-wise error) or "bh" (false discovery rate)."""
    if p_values.size == 0:
        return p_values
    if method == "bh":
        return stats.false_discovery_control(p_values, method="bh")
    order = np.argsort(p_values)
    scaled = p_values[order] * (p_values.size - np.arange(p_values.size))
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted
