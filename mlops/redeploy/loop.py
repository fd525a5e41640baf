"""The redeploy loop's steps between the gate and the registry, free of Prefect.

The redeploy flow (`flows/redeploy.py`) reads like the issue's recipe: policy, claim the drift
episode, find or train the challenger, gate it against the champion on one holdout, switch,
bake, then promote or roll back. This module holds those steps' domain halves: the policy from
settings, the gate's data (reference rows and labelled captures), which challenger a name or
URI means, models loaded for scoring, the bake watch on `/metrics`, and the alias moves.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pandas as pd
from mlops_pipeline.deployment import DeployConfig, Deployment, ModelRef, load_predictor
from mlops_pipeline.errors import BackendError, InvalidInputError, MLOpsError
from mlops_pipeline.monitoring import captures
from mlops_pipeline.monitoring.reference import MonitorTarget, feature_columns, load_reference
from mlops_pipeline.redeploy.bake import judge_bake, metrics_fetcher, watch
from mlops_pipeline.redeploy.gate import choose_holdout
from mlops_pipeline.redeploy.labelled import Holdout
from mlops_pipeline.redeploy.metrics import get_metric
from mlops_pipeline.redeploy.results import BakeReport, ServiceFigures, TriggerInfo
from mlops_pipeline.redeploy.scrape import MetricsSnapshot, figures, parse_metrics
from mlops_pipeline.registry.versions import (
    ALIAS_PATTERN,
    get_model_version,
    remove_model_alias,
    resolve_model_uri,
    set_model_alias,
)
from mlops_pipeline.settings import LiveGate, get_settings
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
CHALLENGER = "challenger"

LIVE_GATES: tuple[str, ...] = get_args(LiveGate)


class RedeployPolicy(BaseModel):
    """How a redeploy judges a challenger: the gate's metric and holdout, and the bake period.

    Defaults come from the MLOPS_REDEPLOY_* and MLOPS_BAKE_* settings; a flow parameter or CLI
    option overrides the metric, the minimum improvement, the bake's length and the live gate.
    """

    metric: str
    min_improvement: float = Field(ge=0)
    label_column: str = Field(min_length=1)
    min_labelled_rows: int = Field(ge=1)
    holdout_fraction: float = Field(gt=0, lt=1)
    seed: int
    bake_seconds: float = Field(ge=0, description="0 skips the bake period.")
    bake_interval: float = Field(gt=0)
    bake_warmup_seconds: float = Field(ge=0)
    max_error_rate_increase: float = Field(ge=0)
    max_p95_ratio: float = Field(ge=1)
    latency_checks: int = Field(default=2, ge=0)
    min_requests: int = Field(ge=1)
    trainer: str | None = None
    live_gate: LiveGate = "none"


def redeploy_policy(
    metric: str | None = None,
    min_improvement: float | None = None,
    bake_seconds: float | None = None,
    live_gate: str | None = None,
) -> RedeployPolicy:
    """The settings' policy with the given overrides (None keeps the setting).

    Raises:
        InvalidInputError: an unknown metric or live gate, a negative or non-finite minimum
            improvement or bake length (the message names the value and the setting or option).
    """
    settings = get_settings()
    metric = metric or settings.redeploy_metric
    get_metric(metric)  # unknown metric -> InvalidInputError listing the known ones
    for option, value in (("min_improvement", min_improvement), ("bake_seconds", bake_seconds)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InvalidInputError(
                f"--{option.replace('_', '-')} must be a finite number >= 0, not {value!r}.",
                field=option,
                value=value,
            )
    if live_gate is not None and live_gate not in LIVE_GATES:
        raise InvalidInputError(
            f"--live-gate must be one of {', '.join(LIVE_GATES)}, not {live_gate!r}.",
            field="live_gate",
            value=live_gate,
        )
    return RedeployPolicy(
        metric=metric,
        min_improvement=(
            settings.redeploy_min_improvement if min_improvement is None else min_improvement
        ),
        label_column=settings.redeploy_label_column,
        min_labelled_rows=settings.redeploy_min_labelled_rows,
        holdout_fraction=settings.redeploy_holdout_fraction,
        seed=settings.redeploy_seed,
        bake_seconds=settings.bake_seconds if bake_seconds is None else bake_seconds,
        bake_interval=settings.bake_interval,
        bake_warmup_seconds=settings.bake_warmup_seconds,
        max_error_rate_increase=settings.bake_max_error_rate_increase,
        max_p95_ratio=settings.bake_max_p95_ratio,
        latency_checks=settings.bake_latency_checks,
        min_requests=settings.bake_min_requests,
        trainer=settings.trainer,
        live_gate=settings.redeploy_live_gate if live_gate is None else live_gate,
    )


@dataclass
class GateData:
    """What the gate and retraining read: the champion's reference rows, the labelled captured
    rows of the champion, the model's input columns and the gate's holdout."""

    reference: pd.DataFrame
    labelled: pd.DataFrame | None
    features: list[str]
    holdout: Holdout


def gate_data(deployment: Deployment, policy: RedeployPolicy, *, for_training: bool) -> GateData:
    """Load the champion's reference data and labelled captures and choose the holdout.

    Args:
        deployment: the deployment being redeployed (its served version is the champion).
        policy: label column, minimum labelled rows, holdout fraction and seed.
        for_training: a challenger will be trained on the rest, so only `holdout_fraction` of
            the labelled rows is held out; otherwise all labelled captured rows are.

    Raises:
        InvalidInputError: too few labelled rows and no label in the reference data (the
            message says what to provide); NotFoundError: the version has no reference data.
    """
    reference = load_reference(deployment.model_name, deployment.model_version).frame
    target = MonitorTarget(
        deployment.name,
        deployment.capture_uri or "",
        deployment.model_name,
        deployment.model_version,
    )
    features = feature_columns(target, reference)
    labelled = None
    if deployment.capture_uri:
        files = captures.list_capture_files(
            deployment.capture_uri, deployment.model_name, deployment.model_version
        )
        if files:
            kinds = {name: "any" for name in features}
            batch = captures.read_captures(
                deployment.capture_uri, deployment.model_name, files, kinds
            )
            labelled = batch.frame if not batch.frame.empty else None
    holdout = choose_holdout(
        labelled,
        reference,
        policy.label_column,
        policy.min_labelled_rows,
        policy.holdout_fraction,
        policy.seed,
        features=features,
        use_all_labelled=not for_training,
    )
    log.info(
        "gate holdout: %d rows from %s (%d labelled captured rows available)",
        holdout.info.rows,
        holdout.info.source,
        holdout.info.labelled_rows_available,
    )
    return GateData(reference, labelled, features, holdout)


def registered_challenger(champion: ModelRef, challenger: str) -> ModelRef | None:
    """The registered version `challenger` names, or None when it is a source to register.

    `challenger` is an alias of the champion's model ("challenger"), a `models:/` URI of the
    same model, or anything `mlops register` takes (runs:/..., a model dir, a pickle), which
    the caller registers as the next version.

    Raises:
        InvalidInputError: a `models:/` URI of another registered model (aliases, the gate and
            promotion work within one model).
        NotFoundError: no such alias or version.
    """
    text = challenger.strip()
    if ALIAS_PATTERN.match(text) and not Path(text).exists():
        return get_model_version(champion.name, alias=text).ref
    if not text.startswith("models:/"):
        return None
    ref = resolve_model_uri(text)
    if ref.name != champion.name:
        raise InvalidInputError(
            f"--challenger {text} is a version of '{ref.name}', but the deployment serves "
            f"'{champion.name}'.",
            hint=f"Register the challenger under '{champion.name}' (mlops register SOURCE "
            f"--name {champion.name}) or pass its source directly.",
            field="challenger",
            value=text,
        )
    return ref


def waiting_challenger(champion: ModelRef) -> str | None:
    """`models:/NAME@challenger` when the champion's model has a `challenger` alias on another
    version (one registered for the next drift, e.g. by CI), else None."""
    from mlops_pipeline.errors import NotFoundError

    try:
        ref = get_model_version(champion.name, alias=CHALLENGER).ref
    except NotFoundError:
        return None
    return None if ref.version == champion.version else f"models:/{champion.name}@{CHALLENGER}"


def challenger_tags(parent_version: str, trigger: TriggerInfo) -> dict[str, str]:
    """Registry tags of a challenger: its parent version, why it was made, and the drift
    episode, event and monitor run behind it (those known)."""
    tags = {"mlops.parent_version": parent_version, "mlops.trigger_reason": trigger.reason[:5000]}
    for key, tag in (
        ("episode_id", "mlops.drift_episode"),
        ("event_id", "mlops.drift_event"),
        ("monitor_run_id", "mlops.monitor_run"),
    ):
        value = getattr(trigger, key)
        if value:
            tags[tag] = value
    return tags


class _GateModel:
    """A registered version for scoring: predict through pyfunc (the version's signature and
    dtype casts), predict_proba and classes_ from the native estimator when it has them."""

    def __init__(self, pyfunc: Any) -> None:
        self._pyfunc = pyfunc
        raw: Any = pyfunc
        try:
            raw = pyfunc.get_raw_model()
            raw = getattr(raw, "model", raw)  # a pickle registered by us wraps the estimator
        except Exception:  # flavours without a raw model score with predict only
            raw = None
        if raw is not None and callable(getattr(raw, "predict_proba", None)):
            self.predict_proba = raw.predict_proba
            self.classes_ = getattr(raw, "classes_", None)
            if self.classes_ is None:
                del self.predict_proba, self.classes_

    def predict(self, X: pd.DataFrame) -> Any:
        return self._pyfunc.predict(X)


def load_for_gate(model: ModelRef, config: DeployConfig | None = None) -> Any:
    """Load a registered version for the gate's `score` (see `_GateModel`); for an ensemble
    deployment (`config`), the ensemble with `model` as its primary, scored combined.

    Raises:
        BackendError: MLflow cannot load the version (the message names it).
    """
    try:
        return _GateModel(load_predictor(model, config))
    except MLOpsError:
        raise
    except Exception as exc:
        raise BackendError(
            f"Could not load {model.uri} for the gate: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc


def _scrape(endpoint_url: str, model: ModelRef) -> MetricsSnapshot:
    """`model`'s samples in one scrape of the service's /metrics, stamped with the monotonic
    clock. Raises BackendError / BackendUnavailableError on a failed scrape."""
    text = metrics_fetcher(endpoint_url)()
    return parse_metrics(
        text, model_name=model.name, model_version=model.version, taken_at=time.monotonic()
    )


def champion_snapshot(endpoint_url: str, model: ModelRef) -> MetricsSnapshot | None:
    """One scrape of the champion's /metrics, the start of its recent window for
    `champion_figures`; None (logged) when the scrape fails: the baseline then covers the time
    since the champion's process started."""
    try:
        return _scrape(endpoint_url, model)
    except BackendError as exc:
        log.warning("no recent window for the bake's baseline: %s", exc.message)
        return None


def champion_figures(
    endpoint_url: str,
    model: ModelRef,
    since: MetricsSnapshot | None = None,
    min_requests: int = 1,
) -> ServiceFigures:
    """The bake period's baseline: the champion's error rate and p95 latency from /metrics.

    Over the recent window from `since` (a `champion_snapshot` taken when the redeploy began)
    when it holds `min_requests` requests with latencies: the champion measured under the same
    load as the bake that follows, not under the quieter (or busier) conditions since its
    process started, which the bake would otherwise read as the new version's doing. Else
    since the champion's process started. Raises BackendError / BackendUnavailableError on a
    failed scrape."""
    now = _scrape(endpoint_url, model)
    if since is not None:
        recent = figures(now, since)
        if recent.requests >= min_requests and recent.p95_latency_ms is not None:
            return recent
    return figures(now)


def bake(
    endpoint_url: str, model: ModelRef, baseline: ServiceFigures, policy: RedeployPolicy
) -> BakeReport:
    """Watch the new version's /metrics for `policy.bake_seconds` and judge it against the
    champion's `baseline`; stops early on a regression. Latencies of the first
    `bake_warmup_seconds` (at most half the bake) stay out of p95; errors always count, and at
    once, while a p95 must stay over the limits for `latency_checks` consecutive scrapes (its
    report's observed p95 is the lowest of those). A new version that stops answering /metrics
    during the bake is a regression."""

    def judge(observed: ServiceFigures) -> BakeReport:
        return judge_bake(
            baseline,
            observed,
            policy.max_error_rate_increase,
            policy.max_p95_ratio,
            policy.min_requests,
        )

    try:
        seen = watch(
            metrics_fetcher(endpoint_url),
            policy.bake_seconds,
            min(policy.bake_interval, policy.bake_seconds),
            stop=lambda f: judge(f).verdict == "regressed",
            model_name=model.name,
            model_version=model.version,
            # at most half the bake, so a short bake still judges latency
            warmup=min(policy.bake_warmup_seconds, policy.bake_seconds / 2),
            sustain=policy.latency_checks,
        )
    except BackendError as exc:
        empty = ServiceFigures(requests=0, errors=0, error_rate=None, p95_latency_ms=None)
        report = judge(empty)
        return report.model_copy(
            update={"verdict": "regressed", "reasons": [f"/metrics failed: {exc.message}"]}
        )
    observed = (
        seen[-1]
        if seen
        else ServiceFigures(requests=0, errors=0, error_rate=None, p95_latency_ms=None, seconds=0.0)
    )
    return judge(observed)


def promote(name: str, challenger_version: str, champion_version: str) -> None:
    """Move the `champion` alias to the challenger and `previous-champion` to the old champion;
    a `challenger` alias on the promoted version goes (it is no longer a challenger).

    Raises:
        BackendError: MLflow refused an alias change.
    """
    set_model_alias(name, PREVIOUS_CHAMPION, champion_version)
    set_model_alias(name, CHAMPION, challenger_version)
    if CHALLENGER in get_model_version(name, version=challenger_version).aliases:
        remove_model_alias(name, CHALLENGER)


def undo_promotion(name: str, rolled_back_version: str, restored_version: str) -> bool:
    """After a rollback of model NAME's deployment from `rolled_back_version` to
    `restored_version`: when it undoes a promotion (the first holds `champion`, the second
    `previous-champion`), `champion` moves back to the restored version and
    `previous-champion` goes, so `models:/NAME@champion` is again what the deployment serves.
    Any other rollback leaves the aliases alone. Returns whether they moved.

    Raises:
        NotFoundError: a version is not registered; BackendError: MLflow refused an alias change.
    """
    if rolled_back_version == restored_version:
        return False
    left = get_model_version(name, version=rolled_back_version)
    restored = get_model_version(name, version=restored_version)
    if CHAMPION not in left.aliases or PREVIOUS_CHAMPION not in restored.aliases:
        return False
    set_model_alias(name, CHAMPION, restored_version)
    remove_model_alias(name, PREVIOUS_CHAMPION)
    log.info(
        "rollback of %s v%s: champion back to v%s", name, rolled_back_version, restored_version
    )
    return True


def save_challenger(model: Any, training: pd.DataFrame, workdir: Path) -> tuple[Path, Path]:
    """Write a retrained model (joblib pickle) and its training rows (Parquet, the new
    version's reference data) under `workdir`; returns both paths for `mlops register`."""
    import joblib

    workdir.mkdir(parents=True, exist_ok=True)
    model_path = workdir / "challenger.joblib"
    joblib.dump(model, model_path)
    reference_path = workdir / "reference.parquet"
    training.to_parquet(reference_path, index=False)
    return model_path, reference_path
