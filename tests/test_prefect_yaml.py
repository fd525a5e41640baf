"""prefect.yaml and its Docker/Kubernetes examples: every deployment points at a real flow with a
UI-renderable parameter schema, and each says what `mlops_pipeline.flows.deployments` serves
(names, descriptions, parameters, schedules, the event trigger, the concurrency limit)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlops_pipeline.flows.deployments import ServeSettings, served_deployments
from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.utilities.templating import apply_values
from pydantic import TypeAdapter

ROOT = Path(__file__).parents[1]
PREFECT_FILES = ("prefect.yaml", "prefect.docker-k8s.yaml")
MONITORED = "iris-prod"


def deployments_in(file: str) -> list[dict[str, Any]]:
    return yaml.safe_load((ROOT / file).read_text())["deployments"]


ALL = [(file, d) for file in PREFECT_FILES for d in deployments_in(file)]


@pytest.mark.parametrize(("file", "deployment"), ALL, ids=[f"{f}:{d['name']}" for f, d in ALL])
def test_entrypoint_loads_a_flow_with_typed_parameters(file, deployment, monkeypatch):
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    schema = parameter_schema(flow.fn)
    for name, spec in schema.properties.items():
        assert spec, f"{deployment['entrypoint']} parameter {name} has no type for the UI form"
    for parameter in deployment.get("parameters", {}):
        assert parameter in schema.properties
    for schedule in deployment.get("schedules", []):
        assert set(schedule.get("parameters", {})) <= set(schema.properties)


def test_work_pools_are_process_in_prefect_yaml_and_docker_or_k8s_in_the_examples():
    assert {d["work_pool"]["name"] for d in deployments_in("prefect.yaml")} == {"mlops"}
    examples = {d["work_pool"]["name"]: d["work_pool"] for d in deployments_in(PREFECT_FILES[1])}
    assert set(examples) == {"mlops-docker", "mlops-k8s"}
    assert all(pool["job_variables"]["image"] for pool in examples.values())
    # resources as the variables of prefect-kubernetes' default base job template, in
    # Kubernetes quantities; a request never above its limit
    k8s = examples["mlops-k8s"]["job_variables"]
    assert k8s["namespace"] == "mlops"
    quantity = re.compile(r"^(\d+(\.\d+)?)(m|Mi|Gi)?$")
    units = {None: 1.0, "m": 0.001, "Mi": 2**20, "Gi": 2**30}
    size = {}
    for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        found = quantity.match(str(k8s[key]))
        assert found, f"{key}={k8s[key]!r} is not a Kubernetes quantity"
        size[key] = float(found[1]) * units[found[3]]
    assert size["cpu_request"] <= size["cpu_limit"]
    assert size["memory_request"] <= size["memory_limit"]


def as_deployed(config: dict[str, Any], monkeypatch) -> dict[str, Any]:
    """`config` with its `{{ $ENV }}` placeholders resolved as `prefect deploy` does."""
    monkeypatch.setenv("MLOPS_MONITORED_DEPLOYMENT", MONITORED)
    return apply_values(config, dict(os.environ), remove_notset=False)


def yaml_view(config: dict[str, Any]) -> dict[str, Any]:
    """What a prefect.yaml deployment declares, in comparable form."""
    limit = config.get("concurrency_limit")
    concurrency = ConcurrencyLimitConfig(**limit) if limit else None
    return {
        "description": config["description"],
        "flow": load_flow_from_entrypoint(config["entrypoint"]).name,
        "parameters": config.get("parameters", {}),
        "schedules": [
            (s["cron"], s.get("slug"), s.get("active", True), s.get("parameters", {}))
            for s in config.get("schedules", [])
        ],
        "triggers": [
            TypeAdapter(DeploymentTriggerTypes).validate_python(t).model_dump(exclude={"id"})
            for t in config.get("triggers", [])
        ],
        "concurrency": (concurrency.limit, concurrency.collision_strategy) if concurrency else None,
    }


def served_view(deployment: RunnerDeployment) -> dict[str, Any]:
    """What a served deployment declares, in the same form as `yaml_view`."""
    options = deployment.concurrency_options
    return {
        "description": deployment.description,
        "flow": deployment.flow_name,
        "parameters": deployment.parameters,
        "schedules": [
            (s.schedule.cron, s.slug, s.active, s.parameters) for s in deployment.schedules
        ],
        "triggers": [t.model_dump(exclude={"id"}) for t in deployment.triggers],
        "concurrency": (deployment.concurrency_limit, options.collision_strategy)
        if options
        else None,
    }


@pytest.fixture
def served(mlops_home: Path) -> dict[str, RunnerDeployment]:
    # a private ledger: spec schedules (not in prefect.yaml) come from the ledger's applied specs
    settings = ServeSettings(monitored_deployment=MONITORED)
    return {d.name: d for d in served_deployments(settings)}


def test_prefect_yaml_declares_what_is_served(served, monkeypatch):
    monkeypatch.chdir(ROOT)
    declared = {d["name"]: as_deployed(d, monkeypatch) for d in deployments_in("prefect.yaml")}
    assert list(declared) == list(served)
    for name, config in declared.items():
        assert yaml_view(config) == served_view(served[name]), name
    assert served_view(served["redeploy"])["triggers"], "the redeploy deployment has no trigger"
    assert served_view(served["monitor"])["schedules"], "the monitor deployment has no schedule"


@pytest.mark.parametrize("example", deployments_in(PREFECT_FILES[1]), ids=lambda d: d["name"])
def test_docker_and_k8s_examples_declare_what_is_served(example, served, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = example["name"].rsplit("-", 1)[0]  # monitor-docker -> monitor
    assert yaml_view(as_deployed(example, monkeypatch)) == served_view(served[base])
