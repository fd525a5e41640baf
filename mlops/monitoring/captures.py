"""Read captured scoring data incrementally: watermark, schema checks, quarantine, feedback join.

The capture layout is the contract's (`mlops_pipeline.serving.contract`: the scoring service
writes it, files appear atomically by rename): <capture_uri>/model=<name>/version=<v>/
date=<YYYY-MM-DD>/part-<utc stamp>-<uuid>.parquet, feedback under <capture_uri>/feedback/....

The watermark of a deployment is the set of processed file paths plus a floor date: partitions
older than the floor count as processed, so the set stays bounded while files that arrive late
(clock skew, spool uploads after a restart) inside the grace period are still picked up. It is
kept in the ledger database (`mlops_pipeline.state`, one row lock per deployment) so monitors on
several machines agree, and advanced only after the window's results are saved, so a crash
makes the next run redo the window instead of losing it. Unreadable files and files whose
schema does not fit the model are moved to <capture_uri>/_quarantine/<same relative path> and
reported, never raised.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from mlops_pipeline import state
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring.results import QuarantinedFile, WindowStats
from mlops_pipeline.monitoring.tables import BOM
from mlops_pipeline.serving.contract import (
    LABEL,
    METADATA_COLUMNS,
    QUARANTINE_DIR,
    REQUEST_ID,
    ROW,
    STATUS,
    TS,
    capture_glob,
    file_written_at,
    partition_date,
)
from mlops_pipeline.settings import get_settings

logger = logging.getLogger(__name__)

GRACE_DAYS = 2
CLAIM_LEASE_HOURS = 6.0  # a claim older than this belongs to a monitor that died
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass
class Watermark:
    """Which capture files a deployment's monitor has already processed."""

    floor_date: str | None = None  # YYYY-MM-DD
    processed: set[str] = field(default_factory=set)  # paths relative to the capture URI

    def seen(self, relpath: str) -> bool:
        date = partition_date(relpath)
        if self.floor_date and date and date < self.floor_date:
            return True
        return relpath in self.processed

    def advanced(self, relpaths: list[str]) -> Watermark:
        """A new watermark that also covers `relpaths`, pruned to the grace period."""
        processed = self.processed | set(relpaths)
        dates = [d for d in map(partition_date, processed) if d]
        floor = self.floor_date
        if dates:
            newest = dt.date.fromisoformat(max(dates))
            candidate = (newest - dt.timedelta(days=GRACE_DAYS)).isoformat()
            floor = max(floor or candidate, candidate)
        kept = {p for p in processed if not (floor and (partition_date(p) or floor) < floor)}
        return Watermark(floor_date=floor, processed=kept)


@dataclass
class CaptureBatch:
    """The rows read from a window of capture files and what happened to each file."""

    frame: pd.DataFrame
    files: list[str]
    quarantined: list[QuarantinedFile]
    duplicates: int = 0


def monitor_dir(deployment: str) -> Path:
    """Reports and caches of one deployment's monitor, under MLOPS_HOME (its state is in the
    ledger database)."""
    return get_settings().resolved_home / "monitor" / deployment


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """'24h', '7d', '30m', '2w' before `now` (default: now, UTC), or an ISO date/time (UTC
    unless it has an offset). Raises InvalidInputError naming the text otherwise."""
    now = now or dt.datetime.now(dt.UTC)
    value = text.strip()
    match = _DURATION.match(value.lower())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(
            f"--since '{text}' is neither a duration nor an ISO date/time.",
            hint="Use e.g. 24h, 7d, 2026-01-31 or 2026-01-31T12:00:00Z.",
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def load_watermark(deployment: str) -> Watermark:
    """`deployment`'s watermark from the ledger database (empty before the first commit).

    Raises BackendError when the database cannot be read."""
    floor, processed = state.read_watermark(deployment)
    return Watermark(floor_date=floor, processed=processed)


def save_watermark(deployment: str, watermark: Watermark) -> Watermark:
    """Replace `deployment`'s watermark in the ledger database (one transaction).

    Raises BackendError when the database cannot be written."""
    state.update_watermark(
        deployment, lambda _floor, _done: (watermark.floor_date, watermark.processed)
    )
    return watermark


def commit_watermark(
    deployment: str, relpaths: list[str], claim_id: str | None = None
) -> Watermark:
    """Mark capture files (paths relative to the capture URI) as processed, and release the
    claim `claim_id` on them (see `claim_new_captures`); call only after the window's results
    are saved. Two monitors committing at once keep both's files (the change is made under the
    deployment's row lock, see `mlops_pipeline.state`).

    Raises BackendError when the database cannot be written."""

    def advance(floor: str | None, processed: set[str]) -> tuple[str | None, set[str]]:
        advanced = Watermark(floor, processed).advanced(relpaths)
        return advanced.floor_date, advanced.processed

    floor, processed = state.update_watermark(deployment, advance, claim_id)
    return Watermark(floor_date=floor, processed=processed)


def _filesystem(capture_uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(capture_uri)
    return fs, root.rstrip("/")


def list_capture_files(
    capture_uri: str,
    model_name: str,
    model_version: str,
    watermark: Watermark | None = None,
    since: dt.datetime | None = None,
    feedback: bool = False,
) -> list[str]:
    """Capture files (paths relative to `capture_uri`, any fsspec URL) of one model version in
    time of writing order: those written since `since` (UTC) when given (a re-runnable window),
    else those `watermark` has not seen, else all. Feedback files with `feedback`."""
    fs, root = _filesystem(capture_uri)
    found = fs.glob(f"{root}/{capture_glob(model_name, model_version, feedback=feedback)}")
    relpaths = sorted(
        (p[len(root) + 1 :] for p in found),
        key=lambda p: (file_written_at(p) or dt.datetime.min.replace(tzinfo=dt.UTC), p),
    )
    if since is not None:
        day = since.date().isoformat()
        return [
            p
            for p in relpaths
            if (partition_date(p) or day) >= day and (file_written_at(p) or since) >= since
        ]
    if watermark is not None:
        return [p for p in relpaths if not watermark.seen(p)]
    return relpaths


def _schema_problem(schema: pa.Schema, features: dict[str, str], n_scored: int) -> str | None:
    names = set(schema.names)
    missing_meta = [c for c in METADATA_COLUMNS if c not in names]
    if missing_meta:
        return f"missing metadata columns {missing_meta}"
    missing = [c for c in features if c not in names]
    if missing and n_scored:
        return f"missing feature columns {missing}"
    wrong = []
    for name, kind in features.items():
        if name not in names:
            continue
        typ = schema.field(name).type
        if pa.types.is_null(typ):
            continue
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if kind == "numeric":
            ok = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
        elif kind == "boolean":
            ok = pa.types.is_boolean(typ)
        elif kind == "datetime":
            ok = pa.types.is_timestamp(typ) or pa.types.is_date(typ)
        else:
            ok = pa.types.is_string(typ) or pa.types.is_large_string(typ) or kind == "any"
        if not ok:
            wrong.append(f"{name}: {typ} (expected {kind})")
    return f"wrong column types {wrong}" if wrong else None


def quarantine_file(capture_uri: str, relpath: str) -> str:
    """Move a bad capture file to <capture_uri>/_quarantine/<relpath>; returns the new path."""
    fs, root = _filesystem(capture_uri)
    target = f"{root}/{QUARANTINE_DIR}/{relpath}"
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.mv(f"{root}/{relpath}", target)
    return target


def _read_table(handle: object) -> pa.Table:
    """A capture or feedback file, byte-order marks stripped from its column names (a CSV
    body with a mark, captured before the service ignored it, named its first column so)."""
    table = pq.read_table(handle)
    return table.rename_columns([name.lstrip(BOM) for name in table.column_names])


def read_capture_files(
    capture_uri: str, relpaths: list[str], features: dict[str, str]
) -> CaptureBatch:
    """Read and concatenate capture files, quarantining those that are unreadable or whose
    schema does not fit `features` (name -> kind: numeric, categorical, boolean, datetime);
    rows repeated across files (same `_request_id` and `_row`) count once."""
    fs, root = _filesystem(capture_uri)
    tables: list[pa.Table] = []
    good: list[str] = []
    quarantined: list[QuarantinedFile] = []
    for relpath in relpaths:
        try:
            with fs.open(f"{root}/{relpath}", "rb") as handle:
                table = _read_table(handle)
        except (pa.ArrowException, OSError, ValueError) as exc:
            problem = f"unreadable Parquet: {exc.__class__.__name__}: {exc}"[:300]
        else:
            status = table.column(STATUS) if STATUS in table.column_names else None
            n_scored = (
                int(
                    pc.sum(pc.and_(pc.greater_equal(status, 200), pc.less(status, 300))).as_py()
                    or 0
                )
                if status is not None
                else table.num_rows
            )
            problem = _schema_problem(table.schema, features, n_scored)
        if problem is None:
            tables.append(table)
            good.append(relpath)
            continue
        logger.warning("quarantining capture file %s: %s", relpath, problem)
        moved_to = quarantine_file(capture_uri, relpath)
        quarantined.append(QuarantinedFile(file=relpath, reason=problem, moved_to=moved_to))
    if not tables:
        return CaptureBatch(pd.DataFrame(), good, quarantined)
    combined = pa.concat_tables(tables, promote_options="permissive")
    frame = combined.to_pandas()
    before = len(frame)
    frame = frame.drop_duplicates(subset=[REQUEST_ID, ROW], keep="first", ignore_index=True)
    return CaptureBatch(frame, good, quarantined, duplicates=before - len(frame))


def read_feedback(capture_uri: str, model_name: str) -> pd.DataFrame:
    """All feedback labels of a model, from every version's feedback partition; unreadable
    feedback files are skipped.

    A label is stored under the version that received the POST /feedback, which need not be
    the one that answered the request: a canary splits feedback calls at random like any other,
    and a label sent after a promotion or rollback reaches the new version. Request ids are
    unique (uuid4), so joining on them (`join_labels`) finds each label whichever version holds
    it.
    """
    fs, root = _filesystem(capture_uri)
    frames = []
    for relpath in list_capture_files(capture_uri, model_name, "*", feedback=True):
        try:
            with fs.open(f"{root}/{relpath}", "rb") as handle:
                frame = _read_table(handle).to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            logger.warning("skipping unreadable feedback file %s: %s", relpath, exc)
            continue
        if {REQUEST_ID, ROW, LABEL} <= set(frame.columns):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[REQUEST_ID, ROW, LABEL, TS])
    return pd.concat(frames, ignore_index=True)


def join_labels(captured: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Add a `label` column: a row-level label wins over a request-level one (null `_row`);
    the latest feedback for the same key wins."""
    if captured.empty or feedback.empty:
        return captured.assign(label=pd.Series([None] * len(captured), dtype=object))
    feedback = feedback.sort_values(TS, kind="stable") if TS in feedback else feedback
    per_row = feedback[feedback[ROW].notna()].drop_duplicates([REQUEST_ID, ROW], keep="last")
    per_request = feedback[feedback[ROW].isna()].drop_duplicates(REQUEST_ID, keep="last")
    keys = captured[[REQUEST_ID, ROW]].astype({ROW: "Float64"})
    row_labels = keys.merge(
        per_row[[REQUEST_ID, ROW, LABEL]].astype({ROW: "Float64"}),
        on=[REQUEST_ID, ROW],
        how="left",
    )[LABEL]
    request_labels = keys.merge(per_request[[REQUEST_ID, LABEL]], on=REQUEST_ID, how="left")[LABEL]
    return captured.assign(label=row_labels.where(row_labels.notna(), request_labels).to_numpy())


def list_new_captures(
    deployment: str,
    capture_uri: str,
    model_name: str,
    model_version: str,
    since: str | None = None,
) -> list[str]:
    """The capture files of a deployment's window: written since `since` ('24h', '7d', an ISO
    time; see `parse_since`), or not yet seen by its watermark. Raises InvalidInputError for a
    bad `since`, BackendError when the watermark cannot be read."""
    start = parse_since(since) if since else None
    watermark = None if start else load_watermark(deployment)
    return list_capture_files(capture_uri, model_name, model_version, watermark, start)


def claim_new_captures(
    deployment: str,
    capture_uri: str,
    model_name: str,
    model_version: str,
    claim_id: str,
    lease_hours: float = CLAIM_LEASE_HOURS,
) -> list[str]:
    """The capture files no monitor of `deployment` has processed or is processing, claimed as
    `claim_id` in one transaction (`state.claim_files`): a second monitor running at once gets
    the other files, never these. Commit the claim with `commit_watermark(..., claim_id)` or
    drop it with `release_claim`; a claim older than `lease_hours` lapses (a monitor that died).

    Raises BackendError when the ledger database cannot be written."""
    candidates = list_capture_files(capture_uri, model_name, model_version)

    def pick(floor: str | None, taken: set[str]) -> list[str]:
        watermark = Watermark(floor, taken)
        return [p for p in candidates if not watermark.seen(p)]

    return state.claim_files(deployment, pick, claim_id, dt.timedelta(hours=lease_hours))


def release_claim(deployment: str, claim_id: str) -> None:
    """Give the files claimed as `claim_id` back (the window failed before its commit).

    Raises BackendError when the ledger database cannot be written."""
    state.release_claim(deployment, claim_id)


def read_captures(
    capture_uri: str,
    model_name: str,
    relpaths: list[str],
    features: dict[str, str],
) -> CaptureBatch:
    """Read a window of capture files (quarantining bad ones, see `read_capture_files`) and join
    the model's feedback labels (`read_feedback`, `join_labels`)."""
    batch = read_capture_files(capture_uri, relpaths, features)
    if not batch.frame.empty:
        batch.frame = join_labels(batch.frame, read_feedback(capture_uri, model_name))
    return batch


def summarise_window(batch: CaptureBatch, features: list[str]) -> tuple[pd.DataFrame, WindowStats]:
    """The window's scored rows and its row and file counts. Requests the service answered
    with a non-2xx status are left out of the drift and validation sample (their null
    features and predictions would fake a change) and counted apart as `rows_rejected`."""
    current = batch.frame
    if current.empty:
        current = pd.DataFrame({c: pd.Series(dtype=object) for c in [*features, STATUS]})
    status = current[STATUS].astype("float64")
    scored = current[(status >= 200) & (status < 300)]
    stats = WindowStats(
        rows=len(current),
        rows_scored=len(scored),
        rows_rejected=len(current) - len(scored),
        rows_labelled=int(current[LABEL].notna().sum()) if LABEL in current else 0,
        duplicates_dropped=batch.duplicates,
        files_read=len(batch.files),
        files_quarantined=len(batch.quarantined),
    )
    return scored, stats
