"""The loop's commands: `mlops redeploy` (gate, switch, bake, promote or roll back),
`mlops redeploys` (the decisions recorded) and `mlops pipeline` (every step in one run).

Every redeploy decision, `promoted`, `rejected`, `rolled_back` or `skipped`, exits 0: the
decision is the result, unless `mlops redeploy --fail-on-rollback` makes a rollback (a bake that
regressed, or a canary live gate that rolled back) exit 1 after the result is printed. Errors
exit with the CLI's codes (2 invalid input, 3 not found, ...). A live gate's progress (canary
steps, the challenger starting) goes to stderr, one line each.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

import typer
from mlops_pipeline.cli._output import (
    JsonOption,
    command,
    console,
    emit,
    finite,
    format_time,
    one_of,
    print_table,
    run_flow,
    show_progress,
)
from mlops_pipeline.cli.rollout import PROGRESS_LOGGERS, FailOnRollbackOption, exit_if_rolled_back
from mlops_pipeline.settings import LiveGate

app = typer.Typer()

_COLOURS = {"promoted": "green", "rejected": "yellow", "rolled_back": "red", "skipped": "dim"}

MetricOption = Annotated[
    str | None,
    typer.Option(
        help="Gate metric from sklearn.metrics: accuracy, balanced_accuracy, f1, precision, "
        "recall, roc_auc, log_loss, rmse, mse, mae, mape, medae, r2, explained_variance "
        "(env MLOPS_REDEPLOY_METRIC, default accuracy).",
        show_default=False,
    ),
]
MinImprovementOption = Annotated[
    float | None,
    typer.Option(
        parser=finite(min=0.0),
        help="How much better the challenger must score, in the metric's units "
        "(env MLOPS_REDEPLOY_MIN_IMPROVEMENT, default 0: any improvement; a tie never passes).",
        show_default=False,
    ),
]
BakeOption = Annotated[
    float | None,
    typer.Option(
        parser=finite(min=0.0),
        help="Seconds to watch the new version's error rate and p95 latency before promoting "
        "it (env MLOPS_BAKE_SECONDS, default 120; 0 skips the bake).",
        show_default=False,
    ),
]


def render_decision(d: dict[str, Any]) -> None:
    """The decision, the versions and scores, the bake's figures and the reason."""
    colour = _COLOURS.get(d["decision"], "white")
    champion, challenger = d["champion"], d["challenger"]
    line = f"[bold {colour}]{d['decision']}[/]"
    if challenger.get("version"):
        line += (
            f": {champion.get('name')} v{challenger['version']} vs champion v{champion['version']}"
        )
    console.print(line)
    if d.get("scores"):
        scores = ", ".join(f"{role} {value:.4f}" for role, value in d["scores"].items())
        holdout = d.get("holdout") or {}
        console.print(
            f"{d.get('metric')} on {holdout.get('rows')} holdout rows "
            f"({holdout.get('source')}): {scores}"
        )
    bake = d.get("bake")
    if bake:
        observed, baseline = bake["observed"], bake["baseline"]
        console.print(
            f"bake {bake['verdict']}: {observed['requests']} requests, {observed['errors']} "
            f"errors, p95 {observed['p95_latency_ms'] or 0:.1f} ms "
            f"(champion: {baseline['errors']}/{baseline['requests']} errors, "
            f"p95 {baseline['p95_latency_ms'] or 0:.1f} ms)"
        )
    console.print(f"reason: {d['reason']}", highlight=False)


@command(app, "redeploy")
def redeploy_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    challenger: Annotated[
        str | None,
        typer.Option(
            help="The challenger: models:/NAME/VERSION, an alias of the served model "
            "(e.g. challenger), or a source to register (runs:/..., model dir, pickle). "
            "Default: retrain with MLOPS_TRAINER.",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the ledger and MLflow).")] = "manual",
    metric: MetricOption = None,
    min_improvement: MinImprovementOption = None,
    bake_seconds: BakeOption = None,
    episode_id: Annotated[
        str | None,
        typer.Option(
            help="Drift episode id: at most one redeploy per episode.", show_default=False
        ),
    ] = None,
    live_gate: Annotated[
        str | None,
        typer.Option(
            parser=one_of(*get_args(LiveGate)),
            help="After the offline gate, judge the challenger on live traffic first: none "
            "(switch and bake), shadow (mirrored copies) or canary (stepped split) (the "
            "applied spec's redeploy.live_gate, else env MLOPS_REDEPLOY_LIVE_GATE, default "
            "none).",
            show_default=False,
        ),
    ] = None,
    fail_on_rollback: FailOnRollbackOption = False,
    as_json: JsonOption = False,
) -> None:
    """Gate a challenger against a deployment's champion; if better, switch with zero downtime,
    bake, then promote it or roll back.

    Exit codes: 0 every decision (read it from --json); 1 rolled back (the bake regressed or
    the canary live gate rolled back) with --fail-on-rollback; 2 bad input; 3 no such
    deployment or model; other errors as every command's."""
    from mlops_pipeline.flows.redeploy import redeploy

    with show_progress(*PROGRESS_LOGGERS):
        result = run_flow(
            redeploy,
            name=name,
            challenger=challenger,
            reason=reason,
            metric=metric,
            min_improvement=min_improvement,
            bake_seconds=bake_seconds,
            episode_id=episode_id,
            live_gate=live_gate,
        )
    emit(result, as_json, render_decision)
    exit_if_rolled_back(result, fail_on_rollback, f"The redeploy of {name}")


@command(app, "redeploys")
def redeploys_cmd(
    name: Annotated[
        str | None, typer.Argument(help="Deployment name (default: all).", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The redeploy decisions recorded in the ledger, oldest first."""
    from mlops_pipeline import ledger
    from mlops_pipeline.errors import NotFoundError
    from mlops_pipeline.redeploy.records import decisions

    rows = decisions(name)
    if name and not rows and ledger.find_deployment(name) is None:
        try:  # an undeployed one is still known by its history: it just has none
            ledger.history(name)
        except NotFoundError:
            raise NotFoundError(
                f"No deployment named '{name}' and no redeploys recorded for it.",
                hint="Check the name with `mlops deployments list`, or leave it out to list "
                "every redeploy.",
                field="name",
                value=name,
            ) from None

    def render(items: list[dict[str, Any]]) -> None:
        if not items:
            console.print("No redeploys recorded.")
            return
        print_table(
            ["when", "deployment", "decision", "champion", "challenger", "who", "reason"],
            [
                [
                    format_time(r["started_at"]),
                    r["deployment"],
                    r["decision"],
                    r["champion_version"] or "-",
                    r["challenger_version"] or "-",
                    r["who"],
                    r["reason"] or "",
                ]
                for r in items
            ],
            fold=frozenset({"reason"}),
        )

    emit(rows, as_json, render)


@command(app, "pipeline")
def pipeline_cmd(
    source: Annotated[
        str, typer.Argument(help="Model to register: runs:/..., an MLflow model dir or a pickle.")
    ],
    name: Annotated[str, typer.Option(help="Registered model name.")],
    deployment: Annotated[
        str | None, typer.Option(help="Deployment name (default: --name).", show_default=False)
    ] = None,
    target: Annotated[str, typer.Option(help="Target URI: local:, docker:, ...")] = "local:",
    reference_data: Annotated[
        str | None,
        typer.Option(help="CSV/Parquet the drift monitor compares traffic with (with labels)."),
    ] = None,
    capture_dir: Annotated[
        str | None,
        typer.Option(
            help="Where a new deployment captures (default $MLOPS_HOME/captures/DEPLOYMENT).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Stable port.", show_default=False)
    ] = None,
    metric: MetricOption = None,
    min_improvement: MinImprovementOption = None,
    bake_seconds: BakeOption = None,
    as_json: JsonOption = False,
) -> None:
    """register -> build-image -> deploy -> monitor -> redeploy in one run: a new deployment
    serves SOURCE; an existing one gets it as a gated challenger."""
    from mlops_pipeline.cli.deploy import absolute_path
    from mlops_pipeline.flows.pipeline import mlops_pipeline

    result = run_flow(
        mlops_pipeline,
        source=source,
        name=name,
        deployment=deployment,
        target=target,
        reference_data=reference_data,
        capture_uri=absolute_path(capture_dir, "--capture-dir"),
        port=port,
        metric=metric,
        min_improvement=min_improvement,
        bake_seconds=bake_seconds,
    )

    def render(r: dict[str, Any]) -> None:
        console.print(f"registered {r['registered']['name']} v{r['registered']['version']}")
        if r["deployed"]:
            d = r["deployed"]
            console.print(f"deployed {d['name']} at {d.get('endpoint_url') or '-'}")
        if r["redeploy"]:
            render_decision(r["redeploy"])
        monitored = r["monitor"]
        if monitored:
            drift = monitored.get("drift")
            console.print(f"monitor: {monitored.get('status')}" + (" (drift)" if drift else ""))
        if r["drift_redeploy"]:
            render_decision(r["drift_redeploy"])

    emit(result, as_json, render)
