"""The live-challenger capability: the base default, and the local: target's contract (ready
before traffic, nothing left on failure, one at a time, idempotent stop)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from mlops_pipeline.errors import ConflictError, DeploymentError, InvalidInputError
from mlops_pipeline.inuse import deployments_using
from mlops_pipeline.targets import DeployConfig, ModelRef, get_target, operations
from mlops_pipeline.targets.base import Target
from mlops_pipeline.targets.local import LocalTarget
from mlops_pipeline.targets.local_protocol import pid_alive
from mlops_pipeline.tracking import connect

from tests.targets.local_support import break_version, register_version

FAST = DeployConfig(ready_timeout=90, drain_timeout=10)


class NoProxy(Target):
    scheme = "noproxy"

    def create(self, *a, **k): ...
    def update(self, *a, **k): ...
    def delete(self, *a, **k): ...
    def list(self): ...
    def get(self, *a, **k): ...
    def logs(self, *a, **k): ...


@pytest.mark.parametrize("call", ["start", "stop", "promote", "access"])
def test_targets_without_a_proxy_refuse_live_challengers(call: str) -> None:
    target = NoProxy.__new__(NoProxy)
    target.scheme, target.target_uri = "noproxy", "noproxy:"
    calls = {
        "start": lambda: target.start_challenger("n", ModelRef("m", "2"), FAST),
        "stop": lambda: target.stop_challenger("n"),
        "promote": lambda: target.promote_challenger("n"),
        "access": lambda: target.proxy_access("n"),
    }
    with pytest.raises(InvalidInputError) as raised:
        calls[call]()
    assert str(raised.value).startswith("target noproxy: has no live challenger")
    assert raised.value.exit_code == 2


def _state(mlops_home: Path, name: str) -> dict:
    return json.loads((mlops_home / "local" / name / "state.json").read_text())


def test_local_challenger_start_stop_and_failures(
    registered_model: dict, iris_model_dir: Path, mlops_home: Path, undeploy_all: None
) -> None:
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.deploy import deploy

    good = register_version(iris_model_dir)
    broken = register_version(iris_model_dir)
    break_version("iris", broken)
    deployed = run_flow(deploy, model_uri="models:/iris/1", name="iris-c", ready_timeout=90.0)
    target: LocalTarget = get_target("local:")

    # a version that cannot load: DeploymentError, nothing left running, tag released
    with pytest.raises(DeploymentError) as raised:
        operations.start_challenger("iris-c", ModelRef("iris", broken))
    assert "could not load the model" in str(raised.value)
    assert _state(mlops_home, "iris-c")["challenger"] is None
    assert "iris-c" not in deployments_using(connect(), "iris", broken)

    # the served version cannot challenge itself
    with pytest.raises(ConflictError):
        operations.start_challenger("iris-c", ModelRef("iris", "1"))

    upstream = operations.start_challenger("iris-c", ModelRef("iris", good))
    assert httpx.get(f"{upstream}/ready").status_code == 200  # ready before any traffic
    assert httpx.get(f"{upstream}/version").json()["model_version"] == good
    child = _state(mlops_home, "iris-c")["challenger"]
    assert child["model_version"] == good and pid_alive(child["pid"])
    assert "iris-c" in deployments_using(connect(), "iris", good)
    # no route yet: every answer still comes from the champion
    answers = [httpx.post(f"{deployed['endpoint_url']}/invocations", json=_row()) for _ in range(5)]
    assert {r.headers["x-model-version"] for r in answers} == {"1"}
    with pytest.raises(ConflictError):  # one challenger at a time
        target.start_challenger("iris-c", ModelRef("iris", good), FAST)

    operations.stop_challenger("iris-c", ModelRef("iris", good))
    assert _state(mlops_home, "iris-c")["challenger"] is None and not pid_alive(child["pid"])
    assert "iris-c" not in deployments_using(connect(), "iris", good)
    target.stop_challenger("iris-c")  # idempotent
    target.stop_challenger("never-deployed")
    with pytest.raises(ConflictError):
        target.promote_challenger("iris-c")
    assert target.get("iris-c").model_version == "1"


def _row() -> dict:
    from tests.targets.local_support import IRIS_ROW

    return IRIS_ROW
