"""The shadow comparison: the champion's live answers and the shadow's answers to the same
requests, joined on the live request id from the captures.

The scoring service captures a mirrored copy under the live request's id (the proxy sends it as
`X-Shadow-Of`), in the challenger version's own partition. So for one capture URI:
`model=M/version=<champion>` holds the live rows and `model=M/version=<challenger>` the shadow
rows, and (`_request_id`, `_row`) pairs them. Feedback labels are sent for the live answer
(whichever version's feedback partition stores them, `read_feedback`) and label both sides of a
pair.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring import captures
from mlops_pipeline.redeploy.metrics import METRICS, Metric, metric_key
from mlops_pipeline.rollout.admin import ProxyAdmin, RouteFigures
from mlops_pipeline.rollout.results import ShadowComparison
from mlops_pipeline.serving.contract import (
    LATENCY_MS,
    REQUEST_ID,
    ROW,
    STATUS,
    TS,
    is_prediction_column,
)

log = logging.getLogger(__name__)

CLASS_METRIC, NUMBER_METRIC = "accuracy", "rmse"
_KIND_TASK = {"classes": "classification", "numbers": "regression"}
#: the champion's newest capture files that `check_metric_fits` reads its answers from
RECENT_FILES = 5


def shadow_metric(name: str) -> Metric:
    """The metric called `name` for a shadow's labelled rows (case and `-`/`_` insensitive).

    The model's task is read from its captured answers (integer answers with few values are
    classes, real numbers a regression: `compare_captures`), so a metric of the other task is
    refused by `check_metric_fits` and `metric_mismatch`, not here; one that needs
    probabilities always is (captures hold only the answers).

    Raises:
        InvalidInputError: an unknown metric, or one that needs probabilities.
    """
    chosen = METRICS.get(metric_key(name))
    if chosen is None or chosen.uses_proba:
        usable = sorted(m.name for m in METRICS.values() if not m.uses_proba)
        why = "is not a metric" if chosen is None else "needs probabilities, which captures lack"
        raise InvalidInputError(
            f"--metric {name!r} {why}; a shadow can compare {', '.join(usable)}.",
            hint="Pass one of those, or leave --metric out (accuracy for classes, rmse for "
            "numbers).",
            field="metric",
            value=name,
        )
    return chosen


def parse_metric(name: str | None) -> str | None:
    """`shadow_metric`'s canonical name, checked before the challenger starts; None keeps the
    default (accuracy for classes, rmse for numbers, chosen from the answers)."""
    return None if name is None else shadow_metric(name).name


def metric_mismatch(chosen: Metric, kind: str, answers: str = "the answers") -> str | None:
    """Why `chosen` cannot score `answers` of `kind` (`classes` or `numbers`), None when it
    can: classes take a classification metric, numbers a regression one."""
    task = _KIND_TASK.get(kind)
    if task is None or chosen.task == task:
        return None
    usable = sorted(m.name for m in METRICS.values() if m.task == task and not m.uses_proba)
    return (
        f"--metric {chosen.name} is a {chosen.task} metric, but {answers} are {kind}; "
        f"pass one of {', '.join(usable)}."
    )


def check_metric_fits(capture_uri: str, model_name: str, version: str, metric: str | None) -> None:
    """Refuse, before a shadow starts, a `metric` of the other task than the champion's
    answers: those in its newest capture files (the last `RECENT_FILES`) tell classes from
    numbers as `compare_captures` does. No captured answers yet: nothing to refuse on.

    Raises:
        InvalidInputError: the metric does not fit the answers (exit 2).
    """
    if metric is None:
        return
    files = captures.list_capture_files(capture_uri, model_name, version)[-RECENT_FILES:]
    if not files:
        return
    answers = _scored(captures.read_capture_files(capture_uri, files, {}).frame)
    column = next((c for c in answers.columns if is_prediction_column(c)), None)
    if column is None or answers.empty:
        return
    whose = f"version {version}'s recent answers"
    problem = metric_mismatch(shadow_metric(metric), _kind(answers[column]), whose)
    if problem:
        raise InvalidInputError(
            problem,
            field="metric",
            value=metric,
        )


def read_version(
    capture_uri: str,
    model_name: str,
    version: str,
    since: dt.datetime | None,
    until: dt.datetime | None = None,
) -> pd.DataFrame:
    """Every captured row of one version written since `since` and captured until `until`
    (UTC; None: no bound), one row per scored row and one per failed request (`_row` null)."""
    files = captures.list_capture_files(capture_uri, model_name, version, since=since)
    if not files:
        return pd.DataFrame(columns=[REQUEST_ID, ROW, STATUS, LATENCY_MS])
    frame = captures.read_capture_files(capture_uri, files, {}).frame
    if until is not None and TS in frame.columns:
        frame = frame[pd.to_datetime(frame[TS], utc=True) <= pd.Timestamp(until)]
    return frame


def request_figures(frame: pd.DataFrame) -> tuple[int, float | None, float | None, float | None]:
    """(requests, error rate, p50 ms, p95 ms) of captured requests: one entry per request id;
    errors are non-200 answers: in a shadow both versions get the same requests, so any
    difference is the challenger's doing (a model that raises answers 422)."""
    if frame.empty:
        return 0, None, None, None
    requests = frame.drop_duplicates(REQUEST_ID)
    errors = int((requests[STATUS] != 200).sum())
    latency = requests[LATENCY_MS].dropna().to_numpy(dtype=float)
    p50 = float(np.percentile(latency, 50)) if latency.size else None
    p95 = float(np.percentile(latency, 95)) if latency.size else None
    return len(requests), errors / len(requests), p50, p95


def _prediction_column(champion: pd.DataFrame, challenger: pd.DataFrame) -> str | None:
    """The first prediction column both sides captured (`prediction` for one output)."""
    for column in champion.columns:
        if is_prediction_column(column) and column in challenger.columns:
            return column
    return None


def compare_captures(
    champion: pd.DataFrame,
    challenger: pd.DataFrame,
    feedback: pd.DataFrame | None = None,
    metric: str | None = None,
) -> ShadowComparison:
    """Join champion and shadow rows on (`_request_id`, `_row`) and compare their answers.

    Args:
        champion: the champion's captured rows (live requests).
        challenger: the shadow's captured rows (copies, under the live ids).
        feedback: the champion's feedback labels (`read_feedback`), or None.
        metric: metric for the labelled subset (see redeploy.metrics; one that needs
            probabilities is refused); default accuracy for classes, rmse for numbers.

    Returns:
        ShadowComparison. Predictions that are all numeric (not integers with at most 20
        distinct values, which are taken as classes) are `numbers`; anything else `classes`.
        Both sides' figures (rows, requests, error rate, latency) are taken over the mirrored
        requests only: the ids both captured. The challenger's own traffic (as a canary or a
        champion before, or since a promotion) has ids of its own and never enters, nor does
        the champion's traffic that was not mirrored.

    Raises:
        InvalidInputError: an unknown metric or one that needs probabilities.
    """
    mirrored: set[str] = set()
    if not champion.empty and not challenger.empty:
        mirrored = set(challenger[REQUEST_ID]) & set(champion[REQUEST_ID])
    live = champion[champion[REQUEST_ID].isin(mirrored)] if not champion.empty else champion
    shadow = challenger[challenger[REQUEST_ID].isin(mirrored)] if mirrored else challenger[:0]
    c_req, c_err, c_p50, c_p95 = request_figures(live)
    s_req, s_err, s_p50, s_p95 = request_figures(shadow)
    ok_c = _scored(live)
    ok_s = _scored(shadow)
    column = _prediction_column(ok_c, ok_s) if not ok_c.empty and not ok_s.empty else None
    base = {
        "champion_rows": len(ok_c),
        "challenger_rows": len(ok_s),
        "champion_requests": c_req,
        "challenger_requests": s_req,
        "champion_error_rate": c_err,
        "challenger_error_rate": s_err,
        "champion_p50_ms": c_p50,
        "champion_p95_ms": c_p95,
        "challenger_p50_ms": s_p50,
        "challenger_p95_ms": s_p95,
    }
    if column is None:
        return ShadowComparison(paired_rows=0, kind="none", **base)
    pairs = ok_c[[REQUEST_ID, ROW, column]].merge(
        ok_s[[REQUEST_ID, ROW, column]], on=[REQUEST_ID, ROW], suffixes=("_c", "_s")
    )
    a, b = pairs[f"{column}_c"], pairs[f"{column}_s"]
    kind = "numbers" if _numeric(a) and _numeric(b) else "classes"
    result = ShadowComparison(paired_rows=len(pairs), kind=kind, **base)
    if pairs.empty:
        return result
    if kind == "classes":
        result.agreement = float((as_classes(a) == as_classes(b)).mean())
    else:
        diff = (b.astype(float) - a.astype(float)).abs()
        result.mean_abs_difference = float(diff.mean())
        result.max_abs_difference = float(diff.max())
    if feedback is not None and not feedback.empty:
        labelled = captures.join_labels(pairs, feedback)
        labelled = labelled[labelled["label"].notna()]
        if not labelled.empty:
            name = metric or (NUMBER_METRIC if kind == "numbers" else CLASS_METRIC)
            chosen = shadow_metric(name)
            result.labelled_rows = len(labelled)
            result.metric_problem = metric_mismatch(chosen, kind)
            if result.metric_problem:
                log.warning("shadow metric not computed: %s", result.metric_problem)
                return result
            y = labelled["label"]
            pc, ps = labelled[f"{column}_c"], labelled[f"{column}_s"]
            if kind == "numbers":
                y, pc, ps = y.astype(float), pc.astype(float), ps.astype(float)
            else:  # labels may arrive as text, or as floats through the feedback join
                y, pc, ps = as_classes(y), as_classes(pc), as_classes(ps)
            result.metric = chosen.name
            result.champion_metric = float(chosen.compute(y.to_numpy(), pc.to_numpy(), None))
            result.challenger_metric = float(chosen.compute(y.to_numpy(), ps.to_numpy(), None))
    return result


def _class_text(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | float | np.integer | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def as_classes(values: pd.Series) -> pd.Series:
    """Class values as comparable text: an integral number without its fraction, so a label
    stored as 0.0 (feedback labels pass through a float column when joined per request, or are
    sent as JSON numbers) equals the integer prediction 0 and the text "0"."""
    return values.map(_class_text)


def _scored(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame[STATUS] == 200) & frame[ROW].notna()]


def _kind(values: pd.Series) -> str:
    return "numbers" if _numeric(values) else "classes"


def _numeric(values: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    # integer labels (0, 1, 2) are classes; real numbers are a regression's output
    return not (pd.api.types.is_integer_dtype(values) and values.nunique() <= 20)


def shadow_comparison(
    capture_uri: str,
    model_name: str,
    champion_version: str,
    challenger_version: str,
    since: dt.datetime | None = None,
    metric: str | None = None,
    until: dt.datetime | None = None,
) -> ShadowComparison:
    """Read both versions' captures from `since` to `until` (UTC; None: no bound) and the
    model's feedback labels (any version's partition: `read_feedback`); compare them.

    Raises:
        InvalidInputError: see `compare_captures`.
    """
    champion = read_version(capture_uri, model_name, champion_version, since, until)
    challenger = read_version(capture_uri, model_name, challenger_version, since, until)
    feedback = captures.read_feedback(capture_uri, model_name)
    result = compare_captures(champion, challenger, feedback, metric)
    log.info(
        "shadow v%s vs v%s: %d paired rows (%s)",
        challenger_version,
        champion_version,
        result.paired_rows,
        result.kind,
    )
    return result


def run_shadow(
    admin: ProxyAdmin,
    upstream: str,
    version: str,
    percent: float,
    duration: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    progress_seconds: float = 10.0,
) -> list[RouteFigures]:
    """Mirror `percent` % of live /invocations to `upstream` for `duration` seconds, then
    remove the shadow route; returns the proxy's per-route figures over the run.

    The route is removed also when the wait is interrupted (Ctrl-C, a cancelled flow run).

    Raises:
        InvalidInputError: percent outside (0, 100] or a non-positive duration.
        ConflictError: the upstream is not ready; BackendError: the proxy failed.
    """
    if not 0 < percent <= 100:
        raise InvalidInputError(
            f"--percent {percent!r} must be in (0, 100].", field="percent", value=percent
        )
    if not duration > 0:
        raise InvalidInputError(
            f"--duration {duration!r} must be a positive number of seconds.",
            field="duration",
            value=duration,
        )
    admin.set_routes(shadow={"upstream": upstream, "percent": percent, "version": version})
    started = time.monotonic()
    try:
        while (left := duration - (time.monotonic() - started)) > 0:
            sleep(min(progress_seconds, left))
            log.info(
                "shadow v%s (%g%%): %.0f/%.0f s",
                version,
                percent,
                min(duration, time.monotonic() - started),
                duration,
            )
        return admin.stats(time.monotonic() - started)
    finally:
        admin.set_routes(shadow=None)
