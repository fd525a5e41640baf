"""Deployment commands: deploy, update, rollback, undeploy, status, build-image, deployments.

The changing commands run the deploy flows; `status` and `deployments list/show/history` read
the ledger and the target through `mlops_pipeline.targets.operations`; `build-image` builds a
scoring-service image for a model version with `mlops_pipeline.images`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import (
    JsonOption,
    command,
    console,
    emit,
    finite,
    format_time,
    print_table,
    run_flow,
    show_progress,
)

app = typer.Typer()
deployments_app = typer.Typer(help="Inspect deployments and their history.", no_args_is_help=True)
app.add_typer(deployments_app, name="deployments")


def absolute_path(value: str | None, option: str, must_exist: bool = False) -> str | None:
    """Services run in other processes (and containers): hand them absolute paths."""
    from pathlib import Path

    from mlops_pipeline.errors import InvalidInputError

    if value is None or "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    if must_exist and not path.is_file():
        raise InvalidInputError(
            f"{option} '{value}' is not a file.", hint="Pass the path of an existing file."
        )
    return str(path)


def render_deployment(d: dict[str, Any]) -> None:
    """One line: name, model URI, target, endpoint and status."""
    console.print(
        f"[bold]{d['name']}[/] serves {d['model_uri']} on {d['target_uri']} "
        f"at {d.get('endpoint_url') or '-'} ({d['status']})"
    )


def render_deployments(rows: list[dict[str, Any]]) -> None:
    """Deployments as a table; targets and endpoints fold, the rest stays whole."""
    print_table(
        ["name", "model", "version", "target", "endpoint", "status", "updated"],
        [
            [
                d["name"],
                d["model_name"],
                str(d["model_version"]),
                d["target_uri"],
                d.get("endpoint_url") or "-",
                str(d["status"]),
                format_time(d["updated_at"]),
            ]
            for d in rows
        ],
        fold=frozenset({"target", "endpoint"}),
    )


def render_batch_health(health: dict[str, Any]) -> None:
    """A batch: deployment's schedule, runs, last output and verdict, one line each."""
    zone = health.get("timezone") or "UTC"
    next_run = format_time(health["next_run"]) if health.get("next_run") else "not scheduled yet"
    console.print(f"schedule: {health['schedule']} ({zone}); next run: {next_run}")
    last = health.get("last_run")
    if last:
        style = "green" if last.get("state") == "Completed" else "red"
        message = f" - {last['message']}" if last.get("message") else ""
        console.print(
            f"last run: [{style}]{last.get('state')}[/] at {format_time(last.get('at'))}{message}",
            soft_wrap=True,
        )
    else:
        console.print("last run: none yet")
    output = health.get("last_output")
    if output:
        folder = output.get("files_in_folder")
        console.print(
            f"last output: {output.get('files_scored')} file(s) scored, "
            f"{output.get('files_failed')} failed, {output.get('rows_scored')} rows "
            f"(version {output.get('model_version')}, _SUCCESS at "
            f"{format_time(output.get('finished_at'))}"
            + (f"; {folder} file(s) in the folder)" if folder is not None else ")"),
            soft_wrap=True,
        )
    verdict = health.get("health") or ("ready" if health.get("ready") else "not ready")
    style = "green" if verdict == "ready" else "yellow" if verdict == "degraded" else "red"
    reasons = f" ({health['error']})" if health.get("error") else ""
    console.print(f"health: [{style}]{verdict}[/]{reasons}", soft_wrap=True)


def describe_split(routes: dict[str, Any]) -> str:
    """The proxy's traffic split in one line, e.g. `version 1 90 %, canary version 2 10 %
    (sticky by X-Client-ID); shadow version 3 gets a copy of 100 %`."""
    canary, shadow = routes.get("canary"), routes.get("shadow")
    primary = 100 - (canary or {}).get("percent", 0)
    shares = [f"version {routes['primary']['version'] or '?'} {primary:g} %"]
    if canary:
        shares.append(f"canary version {canary.get('version') or '?'} {canary['percent']:g} %")
    text = ", ".join(shares)
    if canary and routes.get("sticky_header"):
        text += f" (sticky by {routes['sticky_header']})"
    if shadow:
        text += f"; shadow version {shadow.get('version') or '?'} gets a copy of "
        text += f"{shadow['percent']:g} %"
    return text


def render_history(events: list[dict[str, Any]]) -> None:
    """A deployment's events as a table, with date and time in UTC; reasons fold."""
    print_table(
        ["when", "who", "action", "from", "to", "image", "result", "reason"],
        [
            [
                format_time(e["at"]),
                e["who"],
                str(e["action"]),
                e["from_version"] or "-",
                e["to_version"] or "-",
                e["image"] or "-",
                str(e["result"]),
                e["reason"] or "",
            ]
            for e in events
        ],
        fold=frozenset({"image", "reason"}),
    )


@command(app, "deploy")
def deploy_cmd(
    ctx: typer.Context,
    model_uri: Annotated[
        str | None,
        typer.Argument(
            help="models:/NAME/VERSION or models:/NAME@ALIAS (not with --spec).", show_default=False
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Deployment name (lowercase, digits, '-').", show_default=False),
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            help="Target URI: local:, docker:, kubernetes:/NAMESPACE[?context=CTX], "
            "iotedge:/HUB/DEVICE or 'iotedge:/HUB?target=CONDITION&priority=N' (a fleet), or "
            "batch:LANDING?output=DIR&cron=CRON (scheduled batch scoring of a folder, e.g. "
            "'batch:/landing?output=/scored&cron=0 * * * *')."
        ),
    ] = "local:",
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Stable port (default: a free one).", show_default=False
        ),
    ] = None,
    capture_dir: Annotated[
        str | None, typer.Option(help="Capture inputs+predictions here (dir or fsspec URI).")
    ] = None,
    sample_rate: Annotated[
        float | None,
        typer.Option(
            parser=finite(min=0.0, max=1.0),
            help="Share of requests captured [default: 1.0; an update keeps the deployment's].",
            show_default=False,
        ),
    ] = None,
    api_key_file: Annotated[
        str | None, typer.Option(help="File with the API key(s) clients must send.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Scoring worker processes [default: 1; an update keeps the deployment's].",
            show_default=False,
        ),
    ] = None,
    base_image: Annotated[
        str | None, typer.Option(help="Base image when the target builds one.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            help="Target-specific setting KEY=VALUE, repeatable (see the target's README section).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print what the target would apply (Kubernetes YAML, IoT Edge JSON) and stop: "
            "nothing is built, applied or recorded.",
        ),
    ] = False,
    scoring_code: Annotated[
        str | None,
        typer.Option(
            help="Python module with init() and run(data) around the model (and combine() for "
            "--combiner custom); packaged into images too.",
            show_default=False,
        ),
    ] = None,
    member: Annotated[
        list[str] | None,
        typer.Option(
            help="Another ensemble member, URI[:WEIGHT], repeatable; MODEL_URI is the first "
            "(weight 1).",
            show_default=False,
        ),
    ] = None,
    combiner: Annotated[
        str | None,
        typer.Option(
            help="How ensemble predictions merge: mean (default), weighted_mean, majority_vote "
            "or custom (combine() in --scoring-code); needs --member.",
            show_default=False,
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            help="Create or update the deployment a spec file describes (every setting from the "
            "file; `mlops diff --spec` previews it). Idempotent: an unchanged file says "
            "'no changes'.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Serve a registered model version behind a stable endpoint (updates NAME if it exists).

    An update switches NAME to MODEL_URI with zero downtime and changes the settings given
    (--capture-dir, --sample-rate, --workers, --api-key-file, --option, --scoring-code,
    --member); the others keep their recorded values.

    `--spec deploy.yaml` takes the model, target and settings from a spec file instead.
    """
    if spec is not None:
        from mlops_pipeline.cli.spec import deploy_from_spec

        deploy_from_spec(ctx, spec, as_json)
        return
    if model_uri is None or name is None:
        from mlops_pipeline.errors import InvalidInputError

        raise InvalidInputError(
            "Missing MODEL_URI or --name.",
            hint="Pass MODEL_URI and --name NAME, or --spec FILE.",
            field="model_uri" if model_uri is None else "name",
        )
    settings: dict[str, Any] = {
        "port": port,
        "capture_uri": absolute_path(capture_dir, "--capture-dir"),
        "sample_rate": sample_rate,
        "api_key_file": absolute_path(api_key_file, "--api-key-file", must_exist=True),
        "workers": workers,
        "options": parse_options(option or []),
    }
    if scoring_code is not None:
        settings["scoring_code"] = absolute_path(scoring_code, "--scoring-code", must_exist=True)
    if member:
        settings["ensemble"] = parse_ensemble(model_uri, member, combiner or "mean")
    elif combiner is not None:
        from mlops_pipeline.errors import InvalidInputError

        raise InvalidInputError(
            f"--combiner {combiner} needs an ensemble: no --member was given.",
            hint="Add --member URI[:WEIGHT] for each further model, or drop --combiner.",
            field="combiner",
        )
    settings = {key: value for key, value in settings.items() if value is not None}  # unset
    if dry_run:
        from mlops_pipeline.targets import operations

        rendered = operations.dry_run_deployment(model_uri, name, target, **settings)
        emit(rendered.model_dump(mode="json"), as_json, lambda r: typer.echo(r["manifest"]))
        return
    from mlops_pipeline.flows.deploy import deploy

    result = run_flow(
        deploy, model_uri=model_uri, name=name, target=target, base_image=base_image, **settings
    )
    emit(result, as_json, render_deployment)


def parse_ensemble(model_uri: str, members: list[str], combiner: str) -> Any:
    """MODEL_URI and `--member URI[:WEIGHT]` values as an EnsembleConfig (exit 2 if invalid)."""
    from mlops_pipeline.deployment import EnsembleConfig
    from mlops_pipeline.errors import InvalidInputError
    from pydantic import ValidationError

    entries = [{"model_uri": model_uri}]
    for value in members:
        uri, _, weight = value.rpartition(":")
        if not uri.startswith("models:") or uri == "models":
            entries.append({"model_uri": value})  # the last colon is the URI's own (models:/...)
            continue
        try:
            entries.append({"model_uri": uri, "weight": float(weight)})
        except ValueError as exc:
            raise InvalidInputError(
                f"--member {value}: weight '{weight}' is not a number.",
                hint="Write --member URI[:WEIGHT] with a weight > 0, e.g. models:/iris/2:0.5.",
                field="member",
            ) from exc
    try:
        return EnsembleConfig(members=entries, combiner=combiner)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise InvalidInputError(
            f"--member/--combiner: {'.'.join(map(str, error['loc']))}: {error['msg']}.",
            hint="Pass 1 to 9 --member URI[:WEIGHT] (weight > 0) and --combiner mean, "
            "weighted_mean, majority_vote or custom.",
            field="member",
        ) from exc


def parse_options(values: list[str]) -> dict[str, str]:
    """`--option KEY=VALUE` pairs as a dict; a pair without `=` or a key is exit 2."""
    from mlops_pipeline.errors import InvalidInputError

    options: dict[str, str] = {}
    for value in values:
        key, equals, setting = value.partition("=")
        if not equals or not key.strip():
            raise InvalidInputError(
                f"--option '{value}' is not KEY=VALUE.",
                hint="Pass one setting per --option, e.g. --option replicas=3.",
                field="option",
            )
        options[key.strip()] = setting
    return options


@command(app, "update")
def update_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    model: Annotated[str, typer.Option(help="New version: models:/NAME/VERSION or @ALIAS.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Switch a deployment to another model version with zero downtime."""
    from mlops_pipeline.flows.deploy import update_deployment

    emit(
        run_flow(update_deployment, name=name, model_uri=model, reason=reason),
        as_json,
        render_deployment,
    )


@command(app, "rollback")
def rollback_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Return a deployment to the version it served before, with zero downtime."""
    from mlops_pipeline.flows.deploy import rollback_deployment

    emit(run_flow(rollback_deployment, name=name, reason=reason), as_json, render_deployment)


@command(app, "undeploy")
def undeploy_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a deployment and release the model version it served."""
    from mlops_pipeline.flows.deploy import undeploy

    result = run_flow(undeploy, name=name, reason=reason)
    emit(result, as_json, lambda d: console.print(f"Undeployed [bold]{d['name']}[/]"))


@command(app, "logs")
def logs_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    tail: Annotated[int, typer.Option(min=1, max=100_000, help="How many last lines.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The last lines of a deployment's scoring-service log, where user code's tracebacks and
    load errors go (exit 3 when NAME is unknown)."""
    from mlops_pipeline.targets import operations

    text = operations.get_logs(name, tail)
    emit(
        {"name": name, "tail": tail, "lines": text.splitlines()},
        as_json,
        lambda r: typer.echo("\n".join(r["lines"])),
    )


@command(app, "status")
def status_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    as_json: JsonOption = False,
) -> None:
    """Endpoint URL, served version and health of a deployment (exit 1 when not ready).

    A batch: deployment shows its schedule, next and last run and last output; it is not ready
    (`degraded`, exit 1) when its last run failed or no worker polls its pool.
    """
    from mlops_pipeline.targets import operations

    status = operations.get_status(name).model_dump(mode="json")

    def render(s: dict[str, Any]) -> None:
        health = s["health"]
        # the first line says what the deployment is now, as the health lines below do
        live = health.get("health") or ("ready" if health.get("ready") else "not ready")
        render_deployment({**s, "status": live})
        if "schedule" in health:
            render_batch_health(health)
            return
        console.print(
            "health: "
            + ("[green]ready[/]" if health.get("ready") else "[red]not ready[/]")
            + (f" ({health['error']})" if health.get("error") else "")
        )
        if health.get("routes"):
            console.print(f"split: {describe_split(health['routes'])}", highlight=False)

    emit(status, as_json, render)
    if not status["health"].get("ready"):
        raise typer.Exit(1)


@command(deployments_app, "list")
def deployments_list_cmd(
    target: Annotated[str | None, typer.Option(help="Only deployments on this target URI.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List deployments (--target batch: lists every batch: deployment, whatever its folders)."""
    from mlops_pipeline.targets import operations

    scheme = target.rstrip(":") + ":" if target and ":" not in target.rstrip(":") else None
    if scheme:  # batch: records the full URI (folders, schedule); a bare scheme names them all
        rows = [d for d in operations.list_deployments() if d["target_uri"].startswith(scheme)]
    else:
        rows = operations.list_deployments(target)
    emit(rows, as_json, render_deployments)


@command(deployments_app, "show")
def deployments_show_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    as_json: JsonOption = False,
) -> None:
    """Show one deployment as recorded in the ledger."""
    from mlops_pipeline.targets import operations

    emit(operations.get_deployment(name).model_dump(mode="json"), as_json)


@command(deployments_app, "history")
def deployments_history_cmd(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    as_json: JsonOption = False,
) -> None:
    """Every create/update/rollback/delete of a deployment: who, when, from, to, result."""
    from mlops_pipeline.targets import operations

    emit(operations.get_deployment_history(name), as_json, render_history)


@command(app, "build-image")
def build_image_cmd(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION or models:/NAME@ALIAS.")],
    tag: Annotated[
        str | None, typer.Option(help="Image tag (default mlops/NAME:VERSION).", show_default=False)
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option(help="Base image (default: env MLOPS_BASE_IMAGE).", show_default=False),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Rebuild every layer, ignoring Docker's cache.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build a Docker image serving a model version; dependencies come from a host wheelhouse."""
    from mlops_pipeline import images

    # build steps as progress through Prefect's console handler (stderr; stdout stays JSON)
    with show_progress("mlops_pipeline.images"):
        result = images.build_image(model_uri, tag=tag, base_image=base_image, no_cache=no_cache)
    emit(
        result.to_dict(),
        as_json,
        lambda r: console.print(
            f"Built [bold]{r['tag']}[/] for {r['model_uri']} in {r['seconds']} s "
            f"({r['cached_steps']} of {r['steps']} steps from cache)"
        ),
    )
