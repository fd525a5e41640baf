"""Live rollouts: `mlops canary` (traffic in steps, promote or roll back) and `mlops shadow`
(mirrored traffic and its comparison with the champion).

A decision (`promoted`, `rolled_back`, `shadowed`) exits 0: the decision is the result, unless
`mlops canary --fail-on-rollback` makes a rollback exit 1 (after the result is printed); errors
exit with the CLI's codes (2 invalid input, 3 not found, 4 conflict, 7 deployment failed...).
Bad --steps or --sticky-header values are refused before the challenger starts. Progress lines
(each step, the challenger starting and ready) go to stderr once each, through Prefect's console
handler, so `--json` output on stdout stays clean. Ctrl+C or SIGTERM (a CI job's timeout,
`kill`) ends a running canary or shadow early: all traffic goes back to the champion, the
challenger stops, and the command exits 130 (Ctrl+C) or 143 (SIGTERM); nothing is promoted or
recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import (
    JsonOption,
    command,
    console,
    emit,
    finite,
    print_error,
    run_flow,
    show_progress,
    sigterm_as_interrupt,
    stopped_by,
)

app = typer.Typer()

_COLOURS = {"promoted": "green", "rolled_back": "red", "shadowed": "cyan"}
#: the loggers whose INFO lines are a rollout's progress: each step, the challenger starting
#: and ready, its image being built (image targets)
PROGRESS_LOGGERS = (
    "mlops_pipeline.rollout",
    "mlops_pipeline.targets.operations",
    "mlops_pipeline.images",
)
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="The challenger: models:/NAME/VERSION or models:/NAME@ALIAS of the served model.",
        show_default=False,
    ),
]
FailOnRollbackOption = Annotated[
    bool,
    typer.Option(
        "--fail-on-rollback",
        help="Exit 1 when the challenger was rolled back (after printing the result), so a CI "
        "job fails; without it every decision exits 0.",
    ),
]


def exit_if_rolled_back(result: dict[str, Any], fail_on_rollback: bool, what: str) -> None:
    """With --fail-on-rollback, a rolled-back result (already printed) ends the command with
    one stderr line and exit 1."""
    if fail_on_rollback and result.get("decision") == "rolled_back":
        print_error(f"{what} rolled back (--fail-on-rollback): {result.get('reason')}")
        raise typer.Exit(1)


@contextlib.contextmanager
def _interruptible(name: str) -> Iterator[None]:
    """Ctrl+C or SIGTERM ends the rollout with the flow's clean-up (all traffic back on the
    champion, the challenger stopped), one line, and exit 130 or 143. Without this, SIGTERM
    would kill the process mid-step and leave the split and the challenger running."""
    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt as stop:
        how, code = stopped_by(stop)
        print_error(
            f"{how}: all of {name}'s traffic is back on the champion and the challenger is "
            "stopped (warnings above name any step that failed); nothing was promoted."
        )
        raise typer.Exit(code) from None


def render_rollout(d: dict[str, Any]) -> None:
    """The decision, the versions, each canary step's figures or the shadow comparison."""
    colour = _COLOURS.get(d["decision"], "white")
    console.print(
        f"[bold {colour}]{d['decision']}[/]: {d['kind']} of {d['model_name']} "
        f"v{d['challenger_version']} on {d['deployment']} (champion v{d['champion_version']})"
    )
    for step in d.get("steps") or []:
        c = step["comparison"]
        console.print(
            f"  {step['percent']:g}% for {step['seconds']:.0f} s: {c['verdict']}; challenger "
            f"{_side(c['challenger'])}; champion {_side(c['champion'])}",
            highlight=False,
        )
    s = d.get("shadow")
    if s:
        line = f"  {s['paired_rows']} paired rows ({s['kind']})"
        if s.get("agreement") is not None:
            line += f", agreement {s['agreement']:.4f}"
        if s.get("mean_abs_difference") is not None:
            line += f", mean |diff| {s['mean_abs_difference']:.4g}"
        console.print(line, highlight=False)
        console.print(
            f"  error rate: shadow {_rate(s['challenger_error_rate'])}, champion "
            f"{_rate(s['champion_error_rate'])}; p50/p95: shadow {_ms(s['challenger_p50_ms'])}/"
            f"{_ms(s['challenger_p95_ms'])}, champion {_ms(s['champion_p50_ms'])}/"
            f"{_ms(s['champion_p95_ms'])}",
            highlight=False,
        )
        if s.get("metric"):
            console.print(
                f"  {s['metric']} on {s['labelled_rows']} labelled rows: shadow "
                f"{s['challenger_metric']:.4f}, champion {s['champion_metric']:.4f}",
                highlight=False,
            )
        elif s.get("metric_problem"):
            console.print(
                f"  metric not computed on {s['labelled_rows']} labelled rows: "
                f"{s['metric_problem']}",
                highlight=False,
            )
    if d.get("report_path"):
        console.print(f"report: {d['report_path']}", highlight=False)
    console.print(f"reason: {d['reason']}", highlight=False)


def _side(figures: dict[str, Any]) -> str:
    """`error rate 0.0000 (0/412), p95 4.2 ms`: failures are 5xx, no answer and 4xx."""
    # rows recorded before the proxy counted 4xx answers have no client_errors
    failures = figures["errors"] + figures.get("client_errors", 0)
    requests = figures["requests"]
    rate = failures / requests if requests else None
    return f"error rate {_rate(rate)} ({failures}/{requests}), p95 {_ms(figures['p95_ms'])}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@command(app, "canary")
def canary_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    model: ModelOption = None,
    steps: Annotated[
        str, typer.Option(help="Percents of traffic to the challenger, ending at 100.")
    ] = "10,50,100",
    interval: Annotated[
        float,
        typer.Option(
            parser=finite(min=0.001), help="Seconds each step is watched before it is judged."
        ),
    ] = 60.0,
    sticky_header: Annotated[
        str | None,
        typer.Option(
            help="Request header (e.g. X-Client-ID) whose value keeps a client on one version; "
            "checked before the challenger starts.",
            show_default=False,
        ),
    ] = None,
    max_error_rate_increase: Annotated[
        float | None,
        typer.Option(
            parser=finite(min=0.0, max=1.0),
            help="Allowed challenger error rate above the champion's, absolute "
            "(env MLOPS_ROLLOUT_MAX_ERROR_RATE_INCREASE, default 0.01).",
            show_default=False,
        ),
    ] = None,
    max_p95_ratio: Annotated[
        float | None,
        typer.Option(
            parser=finite(min=1.0),
            help="Allowed challenger p95 / champion p95 (env MLOPS_ROLLOUT_MAX_P95_RATIO, "
            "default 1.5; rises under 5 ms never count).",
            show_default=False,
        ),
    ] = None,
    fail_on_rollback: FailOnRollbackOption = False,
    as_json: JsonOption = False,
) -> None:
    """Shift a deployment's traffic to a challenger in steps; promote it after the last healthy
    step, or send all traffic back to the champion at the first regression.

    Exit codes: 0 either decision (read it from --json); 1 rolled back with --fail-on-rollback;
    2 bad input (e.g. --steps, --sticky-header: before the challenger starts); 3 no such
    deployment or model version; 4 a challenger already runs, or the version is already served;
    5 a backend failed; 7 the challenger did not start; 130 interrupted (Ctrl+C), 143 terminated
    (SIGTERM), traffic back on the champion. Thresholds: MLOPS_ROLLOUT_* (README, "Canary and
    shadow")."""
    from mlops_pipeline.errors import InvalidInputError
    from mlops_pipeline.flows.rollout import canary

    if not model:
        raise InvalidInputError(
            "--model is missing: name the challenger.",
            hint=f"e.g. mlops canary {name} --model models:/MODEL/VERSION.",
            field="model",
        )
    with show_progress(*PROGRESS_LOGGERS), _interruptible(name):
        result = run_flow(
            canary,
            name=name,
            model_uri=model,
            steps=steps,
            interval=interval,
            sticky_header=sticky_header,
            max_error_rate_increase=max_error_rate_increase,
            max_p95_ratio=max_p95_ratio,
        )
    emit(result, as_json, render_rollout)
    exit_if_rolled_back(result, fail_on_rollback, f"The canary of {name}")


@command(app, "shadow")
def shadow_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    model: ModelOption = None,
    percent: Annotated[
        float,
        typer.Option(
            parser=finite(min=0.001, max=100.0), help="Percent of live requests mirrored."
        ),
    ] = 100.0,
    duration: Annotated[
        float,
        typer.Option(parser=finite(min=0.001), help="Seconds to mirror before the comparison."),
    ] = 300.0,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Compare without mirroring: the running shadow, else the last recorded one "
            "(its window only), or --model's version.",
        ),
    ] = False,
    metric: Annotated[
        str | None,
        typer.Option(
            help="Metric on labelled rows (accuracy, f1, rmse, mae, ...; default accuracy for "
            "classes, rmse for numbers).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Mirror live requests to a challenger (its answers are never returned), then compare it
    with the champion: agreement or differences, error rates, latency, labelled metric.

    Exit codes: 0 compared; 2 bad input, or the deployment does not capture; 3 no such
    deployment, model version, or shadow to report on; 4 a challenger already runs; 5 a backend
    failed; 7 the challenger did not start; 130 interrupted (Ctrl+C), 143 terminated (SIGTERM),
    traffic back on the champion."""
    from mlops_pipeline.errors import InvalidInputError
    from mlops_pipeline.flows.rollout import shadow, shadow_report

    with show_progress(*PROGRESS_LOGGERS):
        if report:
            result = run_flow(shadow_report, name=name, model_uri=model, metric=metric)
        elif not model:
            raise InvalidInputError(
                "--model is missing: name the challenger to mirror traffic to.",
                hint=f"e.g. mlops shadow {name} --model models:/MODEL/VERSION, or --report.",
                field="model",
            )
        else:
            with _interruptible(name):
                result = run_flow(
                    shadow,
                    name=name,
                    model_uri=model,
                    percent=percent,
                    duration=duration,
                    metric=metric,
                )
    emit(result, as_json, render_rollout)
