"""Registry commands: `mlops register` and `mlops models list/show/tag/delete/alias`.

`register` runs the register flow; the `models` commands read and change the MLflow registry
through the registry's domain functions (`mlops_pipeline.registry`) and print their typed
results (`ModelVersionInfo`) as JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from mlops_pipeline.cli._output import JsonOption, command, console, emit, print_table

app = typer.Typer()
models_app = typer.Typer(help="Browse and manage registered models.", no_args_is_help=True)
alias_app = typer.Typer(help="Set or remove model version aliases.", no_args_is_help=True)
models_app.add_typer(alias_app, name="alias")
app.add_typer(models_app, name="models")


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """Turn ['k=v', ...] into a dict, naming the option and value when one is malformed."""
    from mlops_pipeline.errors import InvalidInputError

    parsed: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(
                f"{option} '{pair}' is not KEY=VALUE.", hint=f"Write it as {option} team=fraud."
            )
        parsed[key.strip()] = value
    return parsed


def render_versions(versions: list[dict[str, Any]]) -> None:
    """Model versions as a table; tags under the `mlops.` prefix are the pipeline's own."""
    rows = []
    for mv in versions:
        tags = ", ".join(
            f"{k}={v}" for k, v in sorted(mv["tags"].items()) if not k.startswith("mlops.")
        )
        rows.append(
            [
                mv["name"],
                mv["version"],
                ", ".join(mv["aliases"]),
                tags,
                ", ".join(mv["deployments"]),
            ]
        )
    print_table(
        ["name", "version", "aliases", "tags", "deployments"],
        rows,
        fold=frozenset({"aliases", "tags", "deployments"}),
    )


@command(app, "register")
def register_cmd(
    source: Annotated[
        str, typer.Argument(help="runs:/<run_id>/<path>, an MLflow model dir, or a pickle file.")
    ],
    name: Annotated[str, typer.Option(help="Registered model name.")],
    tag: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE tag on the version (repeatable).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Version description.")] = None,
    reference_data: Annotated[
        str | None, typer.Option(help="CSV/Parquet sample of training data (for drift).")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias to point at the new version.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a model as the next version of NAME."""
    from mlops_pipeline.cli.steps import run_step

    result = run_step(
        "register-model",
        source=source,
        name=name,
        tags=parse_pairs(tag, "--tag"),
        description=description,
        reference_data=reference_data,
        alias=alias,
    )
    emit(
        result,
        as_json,
        lambda r: console.print(f"Registered [bold]{r['name']}[/] version {r['version']}"),
    )


@command(models_app, "list")
def models_list_cmd(
    name: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE filter (repeatable).")] = None,
    as_json: JsonOption = False,
) -> None:
    """List model versions, filtered by name and tags."""
    from mlops_pipeline import registry

    versions = registry.list_model_versions(name, parse_pairs(tag, "--tag"))
    emit([v.model_dump(mode="json") for v in versions], as_json, render_versions)


@command(models_app, "show")
def models_show_cmd(
    name: str,
    version: Annotated[str | None, typer.Option(help="Version number.")] = None,
    alias: Annotated[str | None, typer.Option(help="Alias, e.g. champion.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show one model version (the latest unless --version or --alias)."""
    from mlops_pipeline import registry

    shown = registry.get_model_version(name, version=version, alias=alias)
    emit(shown.model_dump(mode="json"), as_json)


@command(models_app, "tag")
def models_tag_cmd(
    name: str,
    version: Annotated[str, typer.Option(help="Version number.")],
    tag: Annotated[list[str], typer.Option(help="KEY=VALUE (repeatable).")],
    as_json: JsonOption = False,
) -> None:
    """Set tags on a model version."""
    from mlops_pipeline import registry

    tagged = registry.tag_model_version(name, version, parse_pairs(tag, "--tag"))
    emit(tagged.model_dump(mode="json"), as_json)


@command(alias_app, "set")
def alias_set_cmd(
    name: str,
    alias: str,
    version: Annotated[str, typer.Option(help="Version the alias points at.")],
    as_json: JsonOption = False,
) -> None:
    """Point ALIAS of model NAME at a version."""
    from mlops_pipeline import registry

    registry.set_model_alias(name, alias, version)
    emit(
        registry.get_model_version(name, alias=alias).model_dump(mode="json"),
        as_json,
        lambda r: console.print(f"{name}@{alias} -> version {r['version']}"),
    )


@command(alias_app, "remove")
def alias_remove_cmd(name: str, alias: str, as_json: JsonOption = False) -> None:
    """Remove ALIAS from model NAME."""
    from mlops_pipeline import registry

    registry.remove_model_alias(name, alias)
    emit({"name": name, "alias": alias, "removed": True}, as_json)


@command(models_app, "delete")
def models_delete_cmd(
    name: str,
    version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Delete a version even if it holds an alias or is a deployment's rollback "
            "version (never one a deployment serves).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a model version, or the whole model; refused while a deployment uses it, and
    for a version holding an alias or a rollback unless --force (exit 4)."""
    from mlops_pipeline import registry

    deleted = registry.delete_model_versions(name, version, force)
    emit(
        {"name": name, "deleted_versions": deleted},
        as_json,
        lambda r: console.print(f"Deleted {name} versions {', '.join(r['deleted_versions'])}"),
    )
