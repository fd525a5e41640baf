"""Which event starts which Prefect deployment, with which parameters: the mapping file.

A YAML or JSON file (MLOPS_WEBHOOK_MAPPING_FILE; `.ci/examples/webhooks.yaml` is a documented
example) maps each sender's event names to routes::

    mlflow:                                   # keys: "<entity>.<action>" as MLflow names them
      model_version_alias.created:
        - deployment: update-deployment/update          # "<flow name>/<deployment name>"
          for_each_deployment_of: "{{ payload.data.name }}"
          when: "payload.data.alias == 'champion'"
          parameters:
            name: "{{ deployment.name }}"
            model_uri: "models:/{{ payload.data.name }}/{{ payload.data.version }}"
    github:                                   # keys: the X-GitHub-Event header (push, release, ...)
      push:
        - deployment: mlops-pipeline/pipeline
          when: "payload.ref == 'refs/heads/main'"
          parameters: {source: "/srv/models/{{ payload.repository.name }}", name: "..."}

Templates are Jinja (sandboxed, undefined names are errors), as in Prefect's own deployment
triggers. They see `payload` (the JSON body), `event`, `source` (github or mlflow), `delivery`
(the delivery id) and, in a route with `for_each_deployment_of`, `deployment` (the ledger
record: name, model_name, model_version, target_uri, ...). A parameter that is one `{{ ... }}`
expression keeps its JSON type; text around it makes a string. `when` is one expression. A route
with `for_each_deployment_of` starts one run per ledger deployment serving that model (and
passing `when`). Without a file, DEFAULT_MAPPING applies: moving alias `champion` switches the
deployments serving that model to the aliased version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mlops_pipeline.errors import InvalidInputError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Source = Literal["github", "mlflow"]

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


class UnmappableEventError(InvalidInputError):
    """A verified event lacks what its route's templates need (HTTP 422, no run)."""

    http_status = 422
    code = "unmappable_event"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _compiles(compile_: Any, text: str) -> None:
    # pydantic reports ValueErrors as validation errors, with the field's location
    try:
        compile_(text)
    except TemplateError as exc:
        raise ValueError(f"{text!r} is not valid Jinja: {exc}") from None


class Route(BaseModel):
    """One flow run (or one per served deployment) that an event starts."""

    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(
        pattern=r"^[^/]+/[^/]+$", description='Prefect deployment, "<flow name>/<deployment>".'
    )
    when: str | None = Field(
        default=None, description="Jinja expression; the route applies if true."
    )
    for_each_deployment_of: str | None = Field(
        default=None,
        description="Jinja template giving a model name: one run per ledger deployment serving it.",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Flow parameters; strings are Jinja templates."
    )

    @field_validator("when")
    @classmethod
    def _expression_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compiles(_env.compile_expression, value)
        return value

    @field_validator("for_each_deployment_of")
    @classmethod
    def _template_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compiles(_env.from_string, value)
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters_compile(cls, value: dict[str, Any]) -> dict[str, Any]:
        for item in _strings(value):
            _compiles(_env.from_string, item)
        return value


class WebhookMapping(BaseModel):
    """Routes by sender and event name."""

    model_config = ConfigDict(extra="forbid")

    github: dict[str, list[Route]] = Field(default_factory=dict)
    mlflow: dict[str, list[Route]] = Field(default_factory=dict)

    def routes(self, source: Source, event: str) -> list[Route]:
        return getattr(self, source).get(event, [])


class RunRequest(BaseModel):
    """One flow run to start for a delivery."""

    deployment: str
    parameters: dict[str, Any]
    idempotency_key: str  # the delivery's: a retry never starts the run twice
    flow_run_name: str
    tags: list[str]


DEFAULT_MAPPING = WebhookMapping(
    mlflow={
        "model_version_alias.created": [
            Route(
                deployment="update-deployment/update",
                for_each_deployment_of="{{ payload.data.name }}",
                when="payload.data.alias == 'champion' "
                "and deployment.model_version != payload.data.version|string",
                parameters={
                    "name": "{{ deployment.name }}",
                    "model_uri": "models:/{{ payload.data.name }}/{{ payload.data.version }}",
                    "reason": "webhook: alias champion of {{ payload.data.name }} moved to "
                    "v{{ payload.data.version }} (MLflow delivery {{ delivery }})",
                },
            )
        ]
    }
)


def load_mapping(path: Path | None) -> WebhookMapping:
    """The mapping in PATH (YAML, or JSON for a .json file); DEFAULT_MAPPING when PATH is None.

    Raises:
        InvalidInputError: the file is missing, unreadable, or not a valid mapping; the message
            names MLOPS_WEBHOOK_MAPPING_FILE, the file and the first problem.
    """
    if path is None:
        return DEFAULT_MAPPING
    where = f"MLOPS_WEBHOOK_MAPPING_FILE={path}"
    try:
        text = Path(path).read_text()
        raw = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except OSError as exc:
        raise InvalidInputError(
            f"{where} cannot be read: {exc.strerror}.",
            hint="Point it at a YAML or JSON mapping (.ci/examples/webhooks.yaml is an example).",
            field="MLOPS_WEBHOOK_MAPPING_FILE",
        ) from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidInputError(
            f"{where} is not valid {'JSON' if Path(path).suffix == '.json' else 'YAML'}: {exc}",
            field="MLOPS_WEBHOOK_MAPPING_FILE",
        ) from exc
    try:
        return WebhookMapping.model_validate(raw or {})
    except ValidationError as exc:
        problem = exc.errors()[0]
        at = ".".join(str(part) for part in problem["loc"])
        raise InvalidInputError(
            f"{where}: {at}: {problem['msg']}.",
            hint="See .ci/examples/webhooks.yaml for the format.",
            field="MLOPS_WEBHOOK_MAPPING_FILE",
        ) from exc


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: _render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context) for item in value]
    if not isinstance(value, str) or "{" not in value:
        return value
    if match := _ONE_EXPRESSION.match(value):
        return _env.compile_expression(match["expr"], undefined_to_none=False)(**context)
    return _env.from_string(value).render(**context)


def plan_runs(
    mapping: WebhookMapping,
    source: Source,
    event: str,
    payload: Any,
    delivery_id: str,
    deployments_of: Any = None,
) -> list[RunRequest]:
    """The flow runs EVENT of SOURCE starts: [] when no route applies.

    Args:
        payload: the verified JSON body.
        deployments_of: model name -> list of ledger deployments (dicts) serving it; needed only
            by routes with `for_each_deployment_of` (the receiver passes the ledger's).

    Raises:
        UnmappableEventError: a template needs a field the payload lacks (HTTP 422).
    """
    runs: list[RunRequest] = []
    base = {"payload": payload, "event": event, "source": source, "delivery": delivery_id}
    for index, route in enumerate(mapping.routes(source, event)):
        try:
            if route.for_each_deployment_of is None:
                contexts = [base]
            else:
                model = str(_render(route.for_each_deployment_of, base))
                contexts = [{**base, "deployment": d} for d in deployments_of(model)]
            for context in contexts:
                if route.when is not None and not _env.compile_expression(route.when)(**context):
                    continue
                served = context.get("deployment", {}).get("name", "")
                runs.append(
                    RunRequest(
                        deployment=route.deployment,
                        parameters=_render(route.parameters, context),
                        idempotency_key=f"{source}:{delivery_id}:{index}:{served}",
                        flow_run_name=f"{source}-{event}-{delivery_id}"[:120],
                        tags=["webhook", f"webhook:{source}", f"delivery:{delivery_id}"],
                    )
                )
        except TemplateError as exc:
            raise UnmappableEventError(
                f"The {source} event '{event}' cannot be mapped to {route.deployment}: {exc}.",
                hint="Fix the route in the mapping file or send the field it needs.",
                deployment=route.deployment,
            ) from exc
    return runs
