"""Flows: judge a challenger on live traffic before it takes every request.

* `canary`: start the challenger beside the champion, shift traffic in steps, judge each step on
  the proxy's per-version error rate and p95, then promote it (the deployment's version, the
  in-use tags and the `champion` alias move; zero downtime) or roll all traffic back.
* `shadow`: mirror a share of live requests to the challenger for a while, then compare its
  answers with the champion's, joined on the live request id from the captures.
* `shadow_report`: that comparison on demand, for a running or finished shadow.

Every outcome goes to the ledger (`mlops redeploys NAME`) and an MLflow run of the
`mlops-rollout` experiment; a canary's promotion or rollback also to the deployment's history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Annotated, Any

from mlops_pipeline.deployment import Deployment, ModelRef
from mlops_pipeline.errors import InvalidInputError, MLOpsError, NotFoundError
from mlops_pipeline.flows.deploy import build_image_tag
from mlops_pipeline.rollout.canary import CanaryResult
from mlops_pipeline.rollout.results import RolloutDecision, ShadowComparison
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tasks.deploy import (
    check_no_challenger,
    get_deployment,
    resolve_model_uri,
    target_needs_image,
)
from mlops_pipeline.tasks.orchestration import get_logger
from mlops_pipeline.tasks.redeploy import promote
from mlops_pipeline.tasks.rollout import (
    canary_steps,
    check_metric_fits,
    clear_routes,
    log_rollout_run,
    parse_metric,
    parse_steps,
    parse_sticky,
    promote_challenger,
    proxy_routes,
    record_decision,
    record_rollout_rollback,
    rollout_policy,
    shadow_comparison,
    shadow_traffic,
    start_challenger,
    stop_challenger,
    write_report,
)
from prefect import flow
from pydantic import Field


def _challenger(
    current: Deployment, model_uri: str, base_image: str | None
) -> tuple[ModelRef, str | None]:
    """The challenger's resolved version and its image (built for image targets)."""
    model = resolve_model_uri(model_uri)
    needs_image = target_needs_image(current.target_uri)
    image = build_image_tag(model.uri, base_image) if needs_image else None
    return model, image


def nothing_paired(comparison: ShadowComparison, length_option: str) -> str:
    """Why a shadow paired no row, from what each side captured in its window; names the
    option that sets the window's length in the command that ran (`length_option`)."""
    mirrored = comparison.challenger_requests
    if not mirrored:
        why = "the challenger captured no mirrored request"
        todo = f"send live traffic during the shadow, or lengthen {length_option}"
    elif not comparison.challenger_rows:
        why = f"the challenger answered all {mirrored} mirrored requests with errors"
        todo = "check that it loads and accepts the champion's requests (its log)"
    elif not comparison.champion_requests:
        why = f"the champion's captures hold none of the {mirrored} mirrored requests"
        todo = "check the deployment's capture sample rate (below 1 it skips requests)"
    elif not comparison.champion_rows:
        why = f"the champion answered the {mirrored} mirrored requests only with errors"
        todo = "check the champion's log"
    else:
        why = "the two versions' captured answers share no prediction column or row"
        todo = "check that both versions answer with the same output columns"
    return f"nothing to compare: {why} in the window ({todo})"


def _readable_captures(current: Deployment) -> None:
    """Refuse a shadow whose live and shadow answers this process cannot read to join.

    Raises:
        InvalidInputError: no capture, or a capture only the pods can reach (a volume claim).
    """
    if current.capture_uri:
        return
    claim = current.deploy_config.options.get("capture_pvc")
    where = (
        f"captures to the volume claim {claim!r}, which only its pods can read"
        if claim
        else "does not capture its traffic"
    )
    raise InvalidInputError(
        f"Deployment '{current.name}' {where}, so live and shadow answers cannot be joined.",
        hint=f"Redeploy it capturing where this machine reads too: mlops deploy MODEL_URI "
        f"--name {current.name} --capture-dir DIR (local:, docker:) or s3://BUCKET/capture "
        "(kubernetes:, instead of capture_pvc).",
        field="capture_uri",
        deployment=current.name,
    )


def _abandon(name: str, model: ModelRef) -> None:
    """After an error: all traffic back on the champion, the challenger stopped. Errors here
    are logged, so the original error is the one raised."""
    for action in (lambda: clear_routes(name), lambda: stop_challenger(name, model)):
        try:
            action()
        except MLOpsError as exc:
            get_logger(__name__).warning("cleaning up the challenger of %s: %s", name, exc)


def _finish(decision: RolloutDecision, report_html: bool) -> dict[str, Any]:
    """Write the report (optional), the ledger row and the MLflow run; return the JSON."""
    path = None
    if report_html:
        stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
        folder = get_settings().resolved_home / "reports" / decision.deployment
        path = write_report(decision, folder / f"{decision.kind}-{stamp}.html")
        decision.report_path = str(path)
    decision.ledger_id = record_decision(decision)
    decision.mlflow_run_id = log_rollout_run(decision, path)
    get_logger(__name__).info(
        "%s of %s: %s (%s)", decision.kind, decision.deployment, decision.decision, decision.reason
    )
    return decision.model_dump(mode="json")


#: why a canary or a shadow cannot start beside a running one
ONE_CHALLENGER = "would start a second challenger beside it (one at a time)"


@flow(name="canary", log_prints=False)
def canary(
    name: Annotated[str, Field(min_length=1)],
    model_uri: str,
    steps: str = "10,50,100",
    interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0,
    sticky_header: str | None = None,
    max_error_rate_increase: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None,
    max_p95_ratio: Annotated[float, Field(ge=1, allow_inf_nan=False)] | None = None,
    base_image: str | None = None,
) -> dict[str, Any]:
    """Shift deployment NAME's traffic to MODEL_URI in `steps` (percents, e.g. "10,50,100"),
    `interval` seconds each, and promote it after the last healthy step or roll back at the
    first regression. Returns the `RolloutDecision` as JSON (decision promoted | rolled_back).
    The steps and the sticky header are checked before the challenger starts.
    """
    policy = rollout_policy(max_error_rate_increase, max_p95_ratio)
    percents = parse_steps(steps)
    sticky_header = parse_sticky(sticky_header)
    current = get_deployment(name)
    check_no_challenger(name, "a canary", ONE_CHALLENGER)  # before an image build of minutes
    model, image = _challenger(current, model_uri, base_image)
    champion = current.model_version
    started_at = dt.datetime.now(dt.UTC)
    upstream = start_challenger(name, model, image)
    try:
        result: CanaryResult = canary_steps(
            name, upstream, model.version, percents, interval, policy, sticky_header
        )
        if result.outcome == "promote":
            promote_challenger(name, model, image, f"canary: {result.reason}")
        else:
            stop_challenger(name, model)
    except BaseException:
        _abandon(name, model)
        raise
    decision = RolloutDecision(
        kind="canary",
        deployment=name,
        model_name=model.name,
        champion_version=champion,
        challenger_version=model.version,
        decision="promoted" if result.outcome == "promote" else "rolled_back",
        reason=result.reason,
        started_at=started_at,
        steps=result.steps,
        sticky_header=sticky_header,
    )
    if result.outcome == "promote":
        promote(model.name, model.version, champion)
    else:
        record_rollout_rollback(name, model, f"canary rolled back {result.reason}")
    return _finish(decision, report_html=False)


@flow(name="shadow", log_prints=False)
def shadow(
    name: Annotated[str, Field(min_length=1)],
    model_uri: str,
    percent: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 100.0,
    duration: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 300.0,
    metric: str | None = None,
    base_image: str | None = None,
    length_option: str = "--duration",
) -> dict[str, Any]:
    """Mirror `percent` % of deployment NAME's live requests to MODEL_URI for `duration`
    seconds (its answers are discarded), then compare it with the champion: agreement or
    prediction differences, error rates, p50/p95 latency and `metric` on labelled rows. Writes
    the ledger row, an MLflow run and an HTML report; returns the `RolloutDecision` as JSON
    (decision `shadowed`). `length_option` is the caller's option that set `duration`, named
    when nothing could be paired (`redeploy --live-gate shadow`: --bake-seconds)."""
    metric = parse_metric(metric)  # before anything starts, not after the mirroring
    policy = rollout_policy()
    current = get_deployment(name)
    check_no_challenger(name, "a shadow", ONE_CHALLENGER)
    _readable_captures(current)
    # before the image build and the mirroring: a wrong-task metric would fail only at the end
    check_metric_fits(current.capture_uri, current.model_name, current.model_version, metric)
    model, image = _challenger(current, model_uri, base_image)
    started_at = dt.datetime.now(dt.UTC)
    since = started_at - dt.timedelta(seconds=1)
    upstream = start_challenger(name, model, image)
    try:
        figures = shadow_traffic(name, upstream, model.version, percent, duration)
        stop_challenger(name, model)  # SIGTERM: it flushes its captured rows
    except BaseException:
        _abandon(name, model)
        raise
    time.sleep(policy.capture_settle_seconds)  # the champion's writer flushes on its interval
    until = dt.datetime.now(dt.UTC)
    comparison = shadow_comparison(
        current.capture_uri, model.name, current.model_version, model.version, since, metric, until
    )
    reason = f"{percent:g}% mirrored for {duration:g} s; {comparison.paired_rows} rows paired"
    if not comparison.paired_rows:
        why = nothing_paired(comparison, length_option)
        reason += f"; {why}"
        get_logger(__name__).warning("shadow of %s: %s", name, why)
    decision = RolloutDecision(
        kind="shadow",
        deployment=name,
        model_name=model.name,
        champion_version=current.model_version,
        challenger_version=model.version,
        decision="shadowed",
        reason=reason,
        shadow=comparison,
        proxy=figures,
        window_start=since,
        window_end=until,
        started_at=started_at,
    )
    return _finish(decision, report_html=True)


@flow(name="shadow-report", log_prints=False)
def shadow_report(
    name: Annotated[str, Field(min_length=1)],
    model_uri: str | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """The shadow comparison of deployment NAME now: for MODEL_URI, else the version its proxy
    mirrors to, else the last shadow recorded. A running shadow, or MODEL_URI's version never
    shadowed, is read from every capture of that version; the last recorded shadow of that
    version from its own window only (the version may have served live traffic since)."""
    metric = parse_metric(metric)
    current = get_deployment(name)
    _readable_captures(current)
    version = resolve_model_uri(model_uri).version if model_uri else None
    running = False
    if version is None:
        with contextlib.suppress(MLOpsError):
            route = proxy_routes(name).get("shadow")
            version, running = (route or {}).get("version"), route is not None
    since = until = None
    if not running:
        last = _last_shadow(name, required=version is None)
        if last is not None and version in (None, last.challenger_version):
            version, since, until = last.challenger_version, last.window_start, last.window_end
    comparison = shadow_comparison(
        current.capture_uri,
        current.model_name,
        current.model_version,
        version,
        since,
        metric,
        until,
    )
    decision = RolloutDecision(
        kind="shadow",
        deployment=name,
        model_name=current.model_name,
        champion_version=current.model_version,
        challenger_version=version,
        decision="shadowed",
        reason=f"report on demand ({'running' if running else 'finished'}); "
        f"{comparison.paired_rows} rows paired",
        shadow=comparison,
        window_start=since,
        window_end=until,
    )
    return _finish(decision, report_html=True)


def _last_shadow(name: str, *, required: bool) -> RolloutDecision | None:
    """NAME's last recorded shadow (None when there is none and it is not `required`).

    Raises:
        NotFoundError: none recorded and `required`.
    """
    from mlops_pipeline.redeploy.records import decisions

    for row in reversed(decisions(name)):
        details = row.get("details") or {}
        if details.get("kind") == "shadow":
            return RolloutDecision.model_validate(details)
    if not required:
        return None
    raise NotFoundError(
        f"Deployment '{name}' has no running or recorded shadow.",
        hint=f"Start one with `mlops shadow {name} --model MODEL_URI`, or pass --model.",
        deployment=name,
    )
