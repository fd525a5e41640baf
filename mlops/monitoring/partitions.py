"""Monitoring at volume: one summary per capture partition (file), merged into the verdict.

A window of captures is never held in one frame here: each partition is read, deduplicated and
reduced to a `PartitionSummary` (counts, histograms on reference points and bins), and the
summaries are added up (`merge_summaries`) and turned into the same `DriftVerdict` that
`monitoring.drift.compare_frames` gives on the concatenated rows (`verdict_from_summary`).

What each statistic needs, and why the summaries give it exactly:
- PSI and the report's histogram: counts on the reference-quantile edges and on the plot
  edges. Counts add up, so both are exact.
- KS D: between two consecutive distinct reference values the reference ECDF is flat and the
  current one rises, so the largest gap is at a reference value or just before one. Counts of
  current values below and at-or-below every distinct reference value (`below`, `upto`) give
  D exactly, hence also its p-value.
- Wasserstein W1 = integral of |F_ref - F_cur|: on each gap between reference values F_ref is
  constant; the count and sum of the current values in the gap give the integral exactly unless
  F_cur crosses F_ref inside that gap. There the gap's values are taken at their mean, which
  errs by at most (gap width) x (gap's share of current values): documented-approximate, a
  tiny fraction of the 0.05 sd threshold when the reference has more than a few hundred values.
- categorical columns: per-key counts (exact); null rates and invalid cells: counts (exact).
- the mean of the current values: sum / count (float addition order differs: ~1e-15).
- duplicates: rows repeated across files (same `_request_id` and `_row`) count once, the first
  file in window order keeping them. Each summary carries 64-bit hashes of its row keys; the
  driver finds keys an earlier partition already had (one sort of all keys) and summarises just
  those rows of the later file again, to take them back out of the merged summary (a hash
  collision, about n^2 / 2^65, would drop one row).

The GX validation suite is not run on this path (its `mostly` rules need every row at once):
the validation result holds the per-file schema checks (quarantine, as in
`captures.read_capture_files`) and the cast-to-reference-kind failures, counted exactly
(`validation_from_summary`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from mlops_pipeline.monitoring import captures
from mlops_pipeline.monitoring.compare import (
    PLOT_BINS,
    category_counts,
    compare_categorical,
    comparison_kind,
    null_rate_from_counts,
    numeric_values,
)
from mlops_pipeline.monitoring.drift import _base_result, assemble_verdict
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.monitoring.drift_stats import psi
from mlops_pipeline.monitoring.profile import ColumnKind, cast_to_kind, profile_kinds
from mlops_pipeline.monitoring.results import (
    DriftVerdict,
    ExpectationFailure,
    FeatureDrift,
    QuarantinedFile,
    ValidationResult,
    WindowStats,
)
from mlops_pipeline.monitoring.tables import BOM
from mlops_pipeline.serving.contract import LABEL, REQUEST_ID, ROW, STATUS
from scipy import stats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is summarised, decided once from the reference on the driver.

    `method` is numeric | categorical | datetime (`compare.comparison_kind`); for numeric
    columns `points` are the distinct sorted reference values, `edges` the PSI bin edges and
    `plot_edges` the report histogram's edges (all float64 arrays).
    """

    name: str
    role: str
    kind: ColumnKind
    method: str
    points: np.ndarray = field(default_factory=lambda: np.empty(0))
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))
    plot_edges: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass
class ColumnSummary:
    """One column's mergeable summary over some scored rows (see the module docstring)."""

    rows: int = 0
    missing: int = 0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    values: int = 0  # finite numeric values, or present valid categorical cells
    total: float = 0.0
    below: np.ndarray | None = None  # current values < each reference point
    upto: np.ndarray | None = None  # current values <= each reference point
    gap_sums: np.ndarray | None = None  # sum of current values in each of the len+1 gaps
    edge_counts: np.ndarray | None = None  # values <= each PSI edge
    plot_counts: np.ndarray | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, other: ColumnSummary, sign: int = 1) -> None:
        """Add `other` in (sign 1), or take rows it summarised back out (sign -1)."""
        self.rows += sign * other.rows
        self.missing += sign * other.missing
        self.invalid += sign * other.invalid
        if sign > 0:
            examples = self.invalid_examples + other.invalid_examples
            self.invalid_examples = list(dict.fromkeys(examples))[:5]
        self.values += sign * other.values
        self.total += sign * other.total
        for name in ("below", "upto", "gap_sums", "edge_counts", "plot_counts"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is None:
                continue
            wide = theirs.astype("float64" if theirs.dtype.kind == "f" else "int64")
            setattr(self, name, sign * wide if mine is None else mine + sign * wide)
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + sign * count


@dataclass
class PartitionSummary:
    """What one capture file (or several, merged) contributes to a window."""

    files: list[str] = field(default_factory=list)
    quarantined: list[QuarantinedFile] = field(default_factory=list)
    rows: int = 0
    rows_scored: int = 0
    rows_labelled: int = 0
    duplicates: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="uint64"))
    columns: dict[str, ColumnSummary] = field(default_factory=dict)
    present: list[str] = field(default_factory=list)  # column names of the files, in order
    keys_by_file: list[np.ndarray] = field(default_factory=list)  # merged: each file's keys

    def stats(self) -> WindowStats:
        return WindowStats(
            rows=self.rows,
            rows_scored=self.rows_scored,
            rows_rejected=self.rows - self.rows_scored,
            rows_labelled=self.rows_labelled,
            duplicates_dropped=self.duplicates,
            files_read=len(self.files),
            files_quarantined=len(self.quarantined),
        )


def plan_columns(
    reference: pd.DataFrame,
    columns: list[str],
    prediction_columns: list[str],
    config: DriftConfig,
    profile: dict[str, Any] | None,
) -> list[ColumnPlan]:
    """One `ColumnPlan` per column to test, from the reference rows and profile (as
    `drift.detect_drift` decides kinds and bins)."""
    kinds = profile_kinds(profile, reference)
    plans = []
    for name in columns:
        kind = kinds[name]
        ref_cast = cast_to_kind(reference[name], kind)
        method = comparison_kind(kind, ref_cast, config.max_int_levels)
        role = "prediction" if name in prediction_columns else "feature"
        if method != "numeric":
            plans.append(ColumnPlan(name, role, kind, method))
            continue
        ref = numeric_values(ref_cast)
        if ref.size == 0:
            plans.append(ColumnPlan(name, role, kind, method))
            continue
        edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, config.bins + 1)[1:-1]))
        low, high = np.quantile(ref, [0.005, 0.995])
        if high <= low:
            low, high = low - 0.5, high + 0.5
        plot_edges = np.linspace(low, high, PLOT_BINS + 1)
        plans.append(ColumnPlan(name, role, kind, method, np.unique(ref), edges, plot_edges))
    return plans


def _read_columns(handle: Any, wanted: set[str]) -> tuple[pa.Table, pa.Schema]:
    """The `wanted` columns of a capture file, and the file's whole schema (for the schema
    checks); names with a byte-order mark stripped, as `captures._read_table` does."""
    parquet = pq.ParquetFile(handle)
    schema = parquet.schema_arrow
    schema = pa.schema([field.with_name(field.name.lstrip(BOM)) for field in schema])
    read = [name for name in parquet.schema_arrow.names if name.lstrip(BOM) in wanted]
    table = parquet.read(columns=read)
    return table.rename_columns([name.lstrip(BOM) for name in read]), schema


def _key_hashes(frame: pd.DataFrame) -> np.ndarray:
    keys = pd.DataFrame(
        {
            REQUEST_ID: frame[REQUEST_ID].astype("string"),
            ROW: pd.to_numeric(frame[ROW], errors="coerce").astype("float64"),
        }
    )
    return pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype="uint64")


def _summarise_column(plan: ColumnPlan, series: pd.Series) -> ColumnSummary:
    cast = cast_to_kind(series, plan.kind)
    summary = ColumnSummary(
        rows=len(series), missing=int(cast.missing.sum()), invalid=int(cast.invalid.sum())
    )
    if summary.invalid:
        summary.invalid_examples = cast.invalid_examples(series, limit=5)
    if plan.method == "numeric":
        values = numeric_values(cast)
        summary.values = int(values.size)
        summary.total = float(values.sum())
        if plan.points.size:
            # int32: a partition holds far fewer than 2**31 rows; merged sums are int64
            summary.below = np.searchsorted(values, plan.points, "left").astype("int32")
            summary.upto = np.searchsorted(values, plan.points, "right").astype("int32")
            prefix = np.concatenate(([0.0], np.cumsum(values)))
            starts = np.concatenate(([0], summary.upto))
            ends = np.concatenate((summary.below, [values.size]))
            summary.gap_sums = prefix[ends] - prefix[starts]
            summary.edge_counts = np.searchsorted(values, plan.edges, "right")
            summary.plot_counts = np.diff(np.searchsorted(values, plan.plot_edges, "left"))
    elif plan.method == "categorical":
        summary.values = int((~cast.missing & ~cast.invalid).sum())
        summary.counts = category_counts(series if plan.kind.kind == "categorical" else cast.values)
    return summary


def summarise_partition(
    capture_uri: str,
    relpath: str,
    features: dict[str, str],
    plans: list[ColumnPlan],
    feedback: pd.DataFrame | None = None,
    only: np.ndarray | None = None,
) -> PartitionSummary:
    """Read one capture file and summarise it: quarantined when unreadable or its schema does
    not fit `features` (name -> kind, see `captures.read_capture_files`); rows repeated inside
    it dropped; feedback labels counted; the scored (2xx) rows summarised per `plans`. With
    `only` (uint64 key hashes) just the rows with those keys are summarised: the rows an
    earlier file already had, to take back out of the merged summary (`merge_summaries`).
    """
    fs, root = fsspec.core.url_to_fs(capture_uri)
    root = root.rstrip("/")
    wanted = {REQUEST_ID, ROW, STATUS, *features, *(plan.name for plan in plans)}
    try:
        with fs.open(f"{root}/{relpath}", "rb") as handle:
            table, schema = _read_columns(handle, wanted)
    except (pa.ArrowException, OSError, ValueError) as exc:
        problem = f"unreadable Parquet: {exc.__class__.__name__}: {exc}"[:300]
    else:
        status = table.column(STATUS) if STATUS in table.column_names else None
        n_scored = (
            int(pc.sum(pc.and_(pc.greater_equal(status, 200), pc.less(status, 300))).as_py() or 0)
            if status is not None
            else table.num_rows
        )
        problem = captures._schema_problem(schema, features, n_scored)
    if problem is not None:
        logger.warning("quarantining capture file %s: %s", relpath, problem)
        moved_to = captures.quarantine_file(capture_uri, relpath)
        return PartitionSummary(
            quarantined=[QuarantinedFile(file=relpath, reason=problem, moved_to=moved_to)]
        )
    frame = table.to_pandas()
    read = len(frame)
    frame = frame.drop_duplicates(subset=[REQUEST_ID, ROW], keep="first", ignore_index=True)
    keys = _key_hashes(frame)
    if only is not None:
        kept = np.isin(keys, only)
        frame, keys = frame[kept].reset_index(drop=True), keys[kept]
    labelled = 0
    if feedback is not None and not feedback.empty and len(frame):
        labelled = int(captures.join_labels(frame, feedback)[LABEL].notna().sum())
    status_values = frame[STATUS].astype("float64")
    scored = frame[(status_values >= 200) & (status_values < 300)]
    columns = {
        plan.name: _summarise_column(
            plan,
            scored[plan.name]
            if plan.name in scored
            else pd.Series([None] * len(scored), dtype=object),
        )
        for plan in plans
    }
    return PartitionSummary(
        files=[relpath],
        rows=len(frame),
        rows_scored=len(scored),
        rows_labelled=labelled,
        duplicates=read - len(frame),
        keys=keys,
        columns=columns,
        present=list(frame.columns),
    )


def repeated_keys(keys: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Partition index -> the key hashes (of `keys`, one array per partition in window order)
    an earlier partition already holds; only partitions with such keys are listed. One stable
    sort of all keys: among equal keys the first partition's copy sorts first and is kept."""
    if not keys:
        return {}
    flat = np.concatenate(keys)
    owner = np.repeat(np.arange(len(keys)), [k.size for k in keys])
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    again = np.zeros(flat.size, dtype=bool)
    again[order[1:]] = ordered[1:] == ordered[:-1]
    return {
        int(index): np.unique(flat[again & (owner == index)]) for index in np.unique(owner[again])
    }


def merge_summaries(
    summaries: Iterable[PartitionSummary], merged: PartitionSummary | None = None, sign: int = 1
) -> PartitionSummary:
    """Add partition summaries (window order) into `merged` (a new one by default), keeping
    only their keys, not their per-column arrays: memory stays one summary's worth. With
    `sign` -1 the summaries (of repeated rows, see `summarise_partition(only=...)`) are taken
    back out and counted as dropped duplicates."""
    merged = merged or PartitionSummary()
    for summary in summaries:
        if sign > 0:
            merged.files += summary.files
            merged.quarantined += summary.quarantined
            merged.present += [c for c in summary.present if c not in merged.present]
            merged.keys_by_file.append(summary.keys)
            merged.duplicates += summary.duplicates
        else:
            merged.duplicates += summary.rows
        merged.rows += sign * summary.rows
        merged.rows_scored += sign * summary.rows_scored
        merged.rows_labelled += sign * summary.rows_labelled
        for name, column in summary.columns.items():
            merged.columns.setdefault(name, ColumnSummary()).add(column, sign)
    return merged


def ks_from_counts(
    ref: np.ndarray, points: np.ndarray, below: np.ndarray, upto: np.ndarray, n: int
) -> float:
    """Exact two-sample KS D from the current counts below / at-or-below each distinct
    reference value `points` (see the module docstring); `ref` sorted, `n` current values."""
    ref_at = np.searchsorted(ref, points, "right") / ref.size
    ref_before = np.searchsorted(ref, points, "left") / ref.size
    return float(max(np.abs(ref_at - upto / n).max(), np.abs(ref_before - below / n).max()))


def wasserstein_from_counts(
    ref: np.ndarray,
    points: np.ndarray,
    below: np.ndarray,
    upto: np.ndarray,
    gap_sums: np.ndarray,
    n: int,
) -> float:
    """W1 from the gap counts and sums (module docstring: exact unless the current ECDF crosses
    the reference one inside a gap, then off by at most the gap's width x its current share)."""
    ref_at = np.searchsorted(ref, points, "right") / ref.size
    gap_counts = np.concatenate((below, [n])) - np.concatenate(([0], upto))
    # the two unbounded gaps: F_ref is 0 left of the first point and 1 right of the last
    total = (gap_counts[0] * points[0] - gap_sums[0]) / n
    total += (gap_sums[-1] - gap_counts[-1] * points[-1]) / n
    if points.size > 1:
        low, high = points[:-1], points[1:]
        width = high - low
        level = ref_at[:-1]
        start = upto[:-1] / n
        count, sums = gap_counts[1:-1], gap_sums[1:-1]
        end = start + count / n
        integral_cur = start * width + (count * high - sums) / n
        inside = np.abs(level * width - integral_cur)
        crossing = (level > start) & (level < end)
        mean = np.divide(sums, count, out=(low + high) / 2, where=count > 0)
        at_mean = (level - start) * (mean - low) + (end - level) * (high - mean)
        total += float(np.where(crossing, at_mean, inside).sum())
    return float(total)


def _compare_numeric(ref: np.ndarray, plan: ColumnPlan, column: ColumnSummary) -> dict[str, Any]:
    n = column.values
    assert column.below is not None and column.upto is not None  # numeric with a reference
    assert column.gap_sums is not None and column.edge_counts is not None
    assert column.plot_counts is not None
    statistic = ks_from_counts(ref, plan.points, column.below, column.upto, n)
    effective_n = round(ref.size * n / (ref.size + n))
    ref_cumulative = np.searchsorted(ref, plan.edges, "right")
    ref_shares = np.diff(np.concatenate(([0], ref_cumulative, [ref.size]))) / ref.size
    cur_shares = np.diff(np.concatenate(([0], column.edge_counts, [n]))) / n
    ref_plot = np.diff(np.searchsorted(ref, plan.plot_edges, "left")) / ref.size
    std = float(ref.std(ddof=1)) if ref.size > 1 else 0.0
    mean_ref, mean_cur = float(ref.mean()), column.total / n
    w1 = wasserstein_from_counts(ref, plan.points, column.below, column.upto, column.gap_sums, n)
    return {
        "method": "ks+psi",
        "statistic": statistic,
        "p_value_raw": float(stats.kstwo.sf(statistic, effective_n)),
        "distance": statistic,
        "psi": psi(ref_shares, cur_shares),
        "unseen_share": 0.0,
        "mean_reference": mean_ref,
        "mean_current": mean_cur,
        "std_reference": std,
        "mean_shift_sd": (mean_cur - mean_ref) / std if std > 0 else None,
        "wasserstein_sd": w1 / std if std > 0 else None,
        "plot": {
            "type": "histogram",
            "edges": plan.plot_edges.tolist(),
            "reference": ref_plot.tolist(),
            "current": (column.plot_counts / n).tolist(),
        },
    }


def _column_verdict(
    plan: ColumnPlan, reference: pd.Series, column: ColumnSummary, config: DriftConfig
) -> FeatureDrift:
    """`drift._compare_column` from the reference rows and the current column's summary."""
    limits = config.for_feature(plan.name)
    ref_cast = cast_to_kind(reference, plan.kind)
    ref_values = numeric_values(ref_cast) if plan.method == "numeric" else None
    if ref_values is not None:
        n_ref = ref_values.size
    else:
        n_ref = int((~ref_cast.missing & ~ref_cast.invalid).sum())
    result = _base_result(plan.name, plan.role, plan.kind, n_ref, column.values)
    present = column.rows - column.missing
    result["n_invalid"] = column.invalid
    result["invalid_share"] = column.invalid / present if present else 0.0
    null_rate = null_rate_from_counts(
        ref_cast.missing.size,
        int(ref_cast.missing.sum()),
        column.rows,
        column.missing,
        config.min_samples,
    )
    result["null_rate_reference"] = null_rate["reference"]
    result["null_rate_current"] = null_rate["current"]
    if column.invalid and result["invalid_share"] > limits.invalid:
        examples = ", ".join(repr(v) for v in column.invalid_examples[:3])
        result["status"] = "incompatible"
        result["reason"] = (
            f"{result['invalid_share']:.1%} of current values (e.g. {examples}) cannot be read "
            f"as {plan.kind.kind}, the kind the reference recorded"
        )
        return FeatureDrift.model_validate(result)
    result["null_rate"] = null_rate
    if plan.method == "datetime":
        result["status"] = "skipped"
        result["reason"] = "timestamps move by design; only their null rate is tested"
    elif min(n_ref, column.values) < config.min_samples:
        result["status"] = "insufficient_data"
        result["reason"] = (
            f"{min(n_ref, column.values)} non-null values; at least {config.min_samples} are needed"
        )
    elif ref_values is not None:
        result |= _compare_numeric(ref_values, plan, column)
    else:
        counted = plan.kind.kind == "categorical"
        result |= compare_categorical(
            category_counts(reference if counted else ref_cast.values),
            column.counts,
            config.max_categories,
        )
    result["score"] = result["psi"]
    return FeatureDrift.model_validate(result)


def verdict_from_summary(
    reference: pd.DataFrame,
    plans: list[ColumnPlan],
    merged: PartitionSummary,
    config: DriftConfig,
) -> DriftVerdict:
    """The window's `DriftVerdict` from its merged summary: per column as
    `drift.compare_frames` tests it, then corrected and judged together (`assemble_verdict`)."""
    results = [
        _column_verdict(
            plan, reference[plan.name], merged.columns.get(plan.name, ColumnSummary()), config
        )
        for plan in plans
    ]
    return assemble_verdict(results, config, len(reference), merged.rows_scored)


def validation_from_summary(
    merged: PartitionSummary, plans: list[ColumnPlan], features: list[str]
) -> ValidationResult:
    """The checks this path makes, as a `ValidationResult`: quarantined files, and one
    "cast_to_reference_kind" failure per feature holding values that cannot be read as its
    reference kind (as `validation.cast_features` reports them); no GX suite."""
    if merged.rows_scored == 0:
        files = merged.quarantined
        return ValidationResult(
            success=not files, failure_rate=1.0 if files else 0.0, quarantined=files
        )
    failures = []
    for plan in plans:
        column = merged.columns.get(plan.name)
        if plan.name not in features or column is None or not column.invalid:
            continue
        failures.append(
            ExpectationFailure(
                expectation="cast_to_reference_kind",
                column=plan.name,
                observed=f"{column.invalid} value(s) are not {plan.kind.kind}",
                unexpected_percent=100.0 * column.invalid / column.rows,
                partial_unexpected=column.invalid_examples[:5],
            )
        )
    return ValidationResult(
        success=not failures and not merged.quarantined,
        evaluated=len(features),
        failed=len(failures),
        failure_rate=len(failures) / len(features) if features else 0.0,
        failures=failures,
        quarantined=merged.quarantined,
    )
