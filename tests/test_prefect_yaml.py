"""Every deployment in prefect.yaml points at a real flow with a UI-renderable parameter schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

ROOT = Path(__file__).parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_entrypoint_loads_a_flow_with_typed_parameters(deployment, monkeypatch):
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    schema = parameter_schema(flow.fn)
    for name, spec in schema.properties.items():
        assert spec, f"{deployment['entrypoint']} parameter {name} has no type for the UI form"
    for parameter in deployment.get("parameters", {}):
        assert parameter in schema.properties
