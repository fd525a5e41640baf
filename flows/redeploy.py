"""Flow: drift -> a challenger, a gate against the champion, a zero-downtime switch, a bake
period, then promotion or rollback; one redeploy per drift episode."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from mlops_pipeline.deployment import Deployment, ModelRef
from mlops_pipeline.flows.deploy import rollback_deployment, update_deployment
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.redeploy.loop import GateData, RedeployPolicy
from mlops_pipeline.redeploy.results import (
    BakeReport,
    GateResult,
    RedeployDecision,
    ServiceFigures,
    TriggerInfo,
    VersionScore,
)
from mlops_pipeline.redeploy.scrape import MetricsSnapshot
from mlops_pipeline.settings import LiveGate, get_settings
from mlops_pipeline.spec.store import redeploy_options
from mlops_pipeline.tasks.deploy import check_no_challenger, get_deployment
from mlops_pipeline.tasks.orchestration import get_logger, run_flow
from mlops_pipeline.tasks.redeploy import (
    bake,
    challenger_tags,
    champion_figures,
    champion_snapshot,
    claim_episode,
    evaluate_gate,
    finish_redeploy,
    gate_data,
    load_for_gate,
    load_trainer,
    log_decision_run,
    promote,
    redeploy_policy,
    registered_challenger,
    retrain_challenger,
    save_challenger,
    training_data,
    waiting_challenger,
)
from mlops_pipeline.tasks.registry import tag_model_version
from prefect import flow
from prefect.runtime import flow_run
from pydantic import Field

#: the steps of a canary live gate; the bake period is spread over them
LIVE_GATE_STEPS = "10,50,100"

NO_CHALLENGER = (
    "No challenger: pass one (--challenger MODEL_URI or an alias), set "
    "MLOPS_TRAINER=module:function so the flow retrains one, or register one with the alias "
    "'challenger'."
)


@flow(name="redeploy", log_prints=False)
def redeploy(
    name: Annotated[str, Field(min_length=1)],
    challenger: str | None = None,
    reason: str = "manual",
    metric: str | None = None,
    min_improvement: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None,
    bake_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None,
    episode_id: str | None = None,
    event_id: str | None = None,
    monitor_run_id: str | None = None,
    live_gate: LiveGate | None = None,
) -> dict[str, Any]:
    """Gate a challenger against deployment NAME's champion and, if it is better, switch to it
    with zero downtime, watch a bake period and promote it (or roll back on a regression).

    The challenger is `challenger` (a models:/ URI or alias of the served model, or a source to
    register: runs:/..., a model dir, a pickle), else one retrained by MLOPS_TRAINER, else the
    version the model's `challenger` alias points at (if it is not the champion). A drift
    episode's `episode_id` makes the run idempotent: one redeploy per episode. Returns the
    `RedeployDecision` as JSON: decision promoted | rejected | rolled_back | skipped.

    `live_gate` (default: the applied spec's `redeploy.live_gate`, else MLOPS_REDEPLOY_LIVE_
    GATE, else `none`) adds a live test after the offline gate: `none` switches and bakes;
    `shadow` first mirrors live traffic to the challenger for `bake_seconds` and rejects it
    when its error rate is above the champion's by more than MLOPS_ROLLOUT_MAX_ERROR_RATE_
    INCREASE, else switches and bakes; `canary` replaces switch-and-bake by a canary (steps
    10, 50, 100 % over `bake_seconds`) that promotes or rolls back.
    """
    trigger = TriggerInfo(
        reason=reason,
        episode_id=episode_id or None,
        event_id=event_id or None,
        monitor_run_id=monitor_run_id or None,
    )
    return run_redeploy(
        name, challenger, trigger, metric, min_improvement, bake_seconds, live_gate
    ).model_dump(mode="json")


def run_redeploy(
    name: str,
    challenger: str | None,
    trigger: TriggerInfo,
    metric: str | None,
    min_improvement: float | None,
    bake_seconds: float | None,
    live_gate: LiveGate | None = None,
) -> RedeployDecision:
    """The redeploy flow's recipe, returning the typed decision (recorded in the ledger and in
    an MLflow run of the `mlops-redeploy` experiment)."""
    # options given win over the deployment's applied spec (`redeploy:`), which wins over settings
    policy = redeploy_policy(
        **redeploy_options(name, metric, min_improvement, bake_seconds, live_gate)
    )
    current = get_deployment(name)
    # before the gate's work (and a retrain): its switch or live gate would be refused anyway
    check_no_challenger(name, "redeploy")
    champion = ModelRef(current.model_name, current.model_version)
    claim = claim_episode(name, trigger.episode_id, flow_run.get_id())
    if not claim.granted:
        held = claim.held_by or {}
        return RedeployDecision(
            decision="skipped",
            reason=f"Drift episode {trigger.episode_id} is already handled by redeploy "
            f"{held.get('run') or '(direct run)'} ({held.get('decision')}, started "
            f"{held.get('started_at')}).",
            champion=VersionScore(name=champion.name, version=champion.version),
            trigger=trigger,
        )
    try:
        decision = decide(current, champion, challenger, policy, trigger)
    except BaseException as exc:
        finish_redeploy(claim.id, None, f"{type(exc).__name__}: {exc}", trigger.episode_id)
        raise
    finish_redeploy(claim.id, decision)
    log_decision_run(name, decision)
    get_logger(__name__).info("redeploy of %s: %s (%s)", name, decision.decision, decision.reason)
    return decision


def decide(
    current: Deployment,
    champion: ModelRef,
    challenger: str | None,
    policy: RedeployPolicy,
    trigger: TriggerInfo,
) -> RedeployDecision:
    """Find or train the challenger, gate it, and switch, bake and promote or roll back (or
    judge it live first, as `policy.live_gate` says: see `redeploy`)."""
    champion_score = VersionScore(name=champion.name, version=champion.version)
    if challenger is None and policy.trainer is None:
        challenger = waiting_challenger(champion)
    if challenger is None and policy.trainer is None:
        return RedeployDecision(
            decision="skipped", reason=NO_CHALLENGER, champion=champion_score, trigger=trigger
        )
    # a registered challenger is looked up first: a wrong alias or URI fails before any work
    known = registered_challenger(champion, challenger) if challenger is not None else None
    # the start of the champion's recent window: the bake's baseline is measured under the
    # load of the redeploy's own time, not since the champion started
    window_start = (
        champion_snapshot(current.endpoint_url, champion) if bakes(current, policy) else None
    )
    data = gate_data(current, policy, for_training=challenger is None)
    candidate = find_challenger(current, champion, challenger, known, policy, trigger, data)
    challenger_score = VersionScore(name=candidate.name, version=candidate.version)
    if candidate.version == champion.version:
        return RedeployDecision(
            decision="skipped",
            reason=f"The challenger {candidate.uri} is the version {current.name} serves.",
            champion=champion_score,
            challenger=challenger_score,
            trigger=trigger,
        )
    gate = evaluate_gate(
        load_for_gate(champion, current.deploy_config),  # an ensemble scores combined
        load_for_gate(candidate, current.deploy_config),
        data.holdout.X,
        data.holdout.y,
        policy.metric,
        policy.min_improvement,
    )
    report = None
    if gate.passed and policy.live_gate == "shadow":
        gate = shadow_gate(current, candidate, policy, gate)
    if gate.passed and policy.live_gate == "canary":
        report = canary_gate(current, candidate, policy)
    elif gate.passed:
        report = switch_and_bake(current, champion, candidate, policy, trigger, window_start)
    decision = RedeployDecision.from_gate(
        gate,
        champion=champion_score,
        challenger=challenger_score,
        holdout=data.holdout.info,
        trigger=trigger,
        bake=report,
    )
    if decision.decision == "promoted":
        promote(champion.name, candidate.version, champion.version)
    tag_model_version(
        candidate.name,
        candidate.version,
        {"mlops.redeploy.decision": decision.decision, "mlops.redeploy.reason": decision.reason},
    )
    return decision


def find_challenger(
    current: Deployment,
    champion: ModelRef,
    challenger: str | None,
    known: ModelRef | None,
    policy: RedeployPolicy,
    trigger: TriggerInfo,
    data: GateData,
) -> ModelRef:
    """The given challenger (`known` when it is registered already, else registered now), or
    one retrained and registered, tagged with its parent version and what triggered it."""
    tags = challenger_tags(champion.version, trigger)
    if known is not None:
        tag_model_version(known.name, known.version, tags)
        return known
    if challenger is not None:
        source, reference = challenger, None
        description = f"Challenger for {current.name} ({trigger.reason})"
    else:
        trainer = load_trainer(policy.trainer or "")
        training = training_data(
            data.reference, data.labelled, data.features, policy.label_column, holdout=data.holdout
        )
        model = retrain_challenger(trainer, training)
        stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
        workdir = get_settings().resolved_home / "redeploy" / f"{current.name}-{stamp}"
        model_path, reference_path = save_challenger(model, training, workdir)
        source, reference = str(model_path), str(reference_path)
        description = f"Retrained by {policy.trainer} for {current.name} ({trigger.reason})"
    registered = run_flow(
        register_model,
        source=source,
        name=champion.name,
        tags=tags,
        description=description,
        reference_data=reference,
    )
    return ModelRef(registered["name"], registered["version"])


def bakes(current: Deployment, policy: RedeployPolicy) -> bool:
    """Whether a switch is baked: a bake period is set and the deployment has an endpoint."""
    return policy.bake_seconds > 0 and current.endpoint_url is not None


def switch_and_bake(
    current: Deployment,
    champion: ModelRef,
    candidate: ModelRef,
    policy: RedeployPolicy,
    trigger: TriggerInfo,
    window_start: MetricsSnapshot | None = None,
):
    """Switch to the challenger with zero downtime and watch it; roll back on a regression.
    The baseline is the champion's figures since `window_start` (when that window has enough
    requests). Returns the bake report (None when the bake is off or the deployment has no
    endpoint)."""
    baseline = (
        champion_figures(current.endpoint_url, champion, window_start, policy.min_requests)
        if bakes(current, policy)
        else None
    )
    run_flow(
        update_deployment,
        name=current.name,
        model_uri=candidate.uri,
        reason=f"redeploy: challenger passed the gate ({trigger.reason})",
    )
    if baseline is None:
        return None
    switched = get_deployment(current.name)
    report = bake(switched.endpoint_url or current.endpoint_url, candidate, baseline, policy)
    if report.verdict == "regressed":
        get_logger(__name__).warning(
            "bake of %s regressed: %s; rolling back", candidate.uri, "; ".join(report.reasons)
        )
        run_flow(
            rollback_deployment,
            name=current.name,
            reason=f"bake regressed: {'; '.join(report.reasons)}"[:500],
        )
    return report


def shadow_gate(
    current: Deployment, candidate: ModelRef, policy: RedeployPolicy, gate: GateResult
) -> GateResult:
    """Mirror live traffic to the challenger for the bake period; a challenger that fails
    more often than the champion on the same requests does not pass (the gate's result then
    says why), else the gate's result stands."""
    from mlops_pipeline.flows.rollout import shadow
    from mlops_pipeline.rollout.settings import rollout_policy

    result = run_flow(
        shadow,
        name=current.name,
        model_uri=candidate.uri,
        duration=max(policy.bake_seconds, 1.0),
        length_option="--bake-seconds",
    )
    figures = result["shadow"]
    allowed = rollout_policy().max_error_rate_increase
    rise = (figures["challenger_error_rate"] or 0.0) - (figures["champion_error_rate"] or 0.0)
    if figures["challenger_requests"] and rise > allowed:
        return gate.model_copy(
            update={
                "passed": False,
                "reason": f"{gate.reason}; but in shadow its error rate was "
                f"{figures['challenger_error_rate']:.4f} against the champion's "
                f"{figures['champion_error_rate'] or 0:.4f} (allowed rise {allowed})",
            }
        )
    return gate


def canary_gate(current: Deployment, candidate: ModelRef, policy: RedeployPolicy) -> BakeReport:
    """Run a canary of the challenger (steps 10, 50, 100 % over the bake period); it promotes
    the challenger or rolls all traffic back itself. Returns its last step as the bake report
    (`regressed` when it rolled back)."""
    from mlops_pipeline.flows.rollout import canary

    steps = LIVE_GATE_STEPS.split(",")
    result = run_flow(
        canary,
        name=current.name,
        model_uri=candidate.uri,
        steps=LIVE_GATE_STEPS,
        interval=max(policy.bake_seconds / len(steps), 1.0),
        max_error_rate_increase=policy.max_error_rate_increase,
        max_p95_ratio=policy.max_p95_ratio,
    )
    last = result["steps"][-1]["comparison"]

    def service(f: dict[str, Any]) -> ServiceFigures:
        failures = f["errors"] + f["client_errors"]
        return ServiceFigures(
            requests=f["requests"],
            errors=failures,
            error_rate=failures / f["requests"] if f["requests"] else None,
            p95_latency_ms=f["p95_ms"],
        )

    return BakeReport(
        verdict="regressed" if result["decision"] == "rolled_back" else last["verdict"],
        reasons=[f"canary {result['decision']}: {result['reason']}"],
        baseline=service(last["champion"]),
        observed=service(last["challenger"]),
        max_error_rate_increase=policy.max_error_rate_increase,
        max_p95_ratio=policy.max_p95_ratio,
        min_requests=policy.min_requests,
        p95_ratio=last["p95_ratio"],
        error_rate_increase=last["error_rate_increase"],
    )
