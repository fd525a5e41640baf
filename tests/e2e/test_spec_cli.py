"""`mlops deploy --spec`, `mlops diff --spec` on the local target: create, idempotent re-apply,
a diff after a change, the update it applies, recorded settings and errors at their line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from mlops_pipeline import ledger
from mlops_pipeline.cli import app
from mlops_pipeline.spec.store import find_applied, monitoring_settings, redeploy_settings
from typer.testing import CliRunner

from tests.targets.local_support import IRIS_ROW, register_version

pytestmark = pytest.mark.e2e

SPEC = """\
# yaml-language-server: $schema=./deploy.schema.json
name: iris-spec
model: models:/iris/1
target:
  uri: "local:"
replicas: 1
capture:
  uri: captures
  sample_rate: 1.0
auth:
  primary: {env: IRIS_SPEC_KEY}
monitoring:
  schedule: "0 * * * *"
  drift: {alpha: 0.05}
redeploy:
  metric: accuracy
  min_improvement: 0.01
  bake_seconds: 0
"""

runner = CliRunner()
KEY = {"Authorization": "Bearer s3cret-key-1"}


def mlops(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def history(name: str) -> list:
    return ledger.history(name)


@pytest.fixture
def spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRIS_SPEC_KEY", "s3cret-key-1")
    path = tmp_path / "deploy.yaml"
    path.write_text(SPEC)
    return path


def test_apply_is_idempotent_and_diff_shows_each_change(
    undeploy_all: None,
    registered_model: dict,
    iris_model_dir: Path,
    spec_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out = mlops("diff", "--spec", str(spec_file), "--json")
    assert code == 1, out
    planned = json.loads(out)
    assert planned["action"] == "create" and planned["changed"] is True
    new = {change["field"]: change["desired"] for change in planned["changes"]}
    assert new["model"] == "models:/iris/1" and new["target.uri"] == "local:"

    code, out = mlops("deploy", "--spec", str(spec_file), "--json")
    assert code == 0, out
    created = json.loads(out)
    assert created["action"] == "create"
    deployment = created["deployment"]
    endpoint = deployment["endpoint_url"]
    assert deployment["model_version"] == "1"
    assert deployment["capture_uri"] == str(spec_file.parent / "captures")
    # the key comes from the variable the spec names; the spec record never holds it
    key_file = Path(deployment["config"]["api_key_file"])
    assert key_file.read_text() == "s3cret-key-1\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "s3cret" not in json.dumps(find_applied("iris-spec").model_dump(mode="json"))
    refused = httpx.post(f"{endpoint}/invocations", json=IRIS_ROW, timeout=30)
    assert refused.status_code == 401
    scored = httpx.post(
        f"{endpoint}/invocations",
        json=IRIS_ROW,
        headers=KEY,
        timeout=30,
    )
    assert scored.status_code == 200, scored.text
    events = len(history("iris-spec"))

    # the same file again: nothing changes, it says so, exit 0, no new ledger event
    code, out = mlops("deploy", "--spec", str(spec_file))
    assert code == 0, out
    assert out.strip() == "iris-spec: no changes"
    code, out = mlops("diff", "--spec", str(spec_file))
    assert (code, out.strip()) == (0, "iris-spec: no changes")
    assert len(history("iris-spec")) == events

    # a new version and another sample rate: diff lists both, field by field
    assert register_version(iris_model_dir) == "2"
    spec_file.write_text(SPEC.replace("models:/iris/1", "models:/iris/2").replace("1.0", "0.5"))
    code, out = mlops("diff", "--spec", str(spec_file))
    assert code == 1, out
    assert "model: models:/iris/1 → models:/iris/2" in out
    assert "capture.sample_rate: 1.0 → 0.5" in out
    code, out = mlops("diff", "--spec", str(spec_file), "--json")
    changes = {c["field"]: c for c in json.loads(out)["changes"]}
    assert set(changes) == {"model", "capture.sample_rate"}
    assert changes["capture.sample_rate"] == {
        "field": "capture.sample_rate",
        "current": 1.0,
        "desired": 0.5,
        "effect": "switch",
    }
    assert len(history("iris-spec")) == events  # diff changes nothing

    code, out = mlops("deploy", "--spec", str(spec_file), "--json")
    assert code == 0, out
    updated = json.loads(out)
    assert updated["action"] == "update"
    assert updated["deployment"]["config"]["sample_rate"] == 0.5
    version = httpx.get(f"{endpoint}/version", headers=KEY, timeout=10).json()
    assert version["model_version"] == "2"  # on the same stable endpoint
    assert len(history("iris-spec")) == events + 1
    assert history("iris-spec")[-1].action == "update"
    assert mlops("deploy", "--spec", str(spec_file))[1].strip() == "iris-spec: no changes"

    # monitoring and redeploy settings are recorded, not deployed: no ledger event
    spec_file.write_text(
        spec_file.read_text().replace("alpha: 0.05", "alpha: 0.02").replace("0.01", "0.03")
    )
    code, out = mlops("deploy", "--spec", str(spec_file))
    assert code == 0, out
    assert "monitoring.drift.alpha: 0.05 → 0.02 (recorded)" in out
    assert "redeploy.min_improvement: 0.01 → 0.03 (recorded)" in out
    assert len(history("iris-spec")) == events + 1
    assert monitoring_settings("iris-spec").drift.alpha == 0.02
    assert redeploy_settings("iris-spec").min_improvement == 0.03

    # a key rotated in its variable: the key file follows and the new key is accepted
    monkeypatch.setenv("IRIS_SPEC_KEY", "s3cret-key-2")
    code, out = mlops("diff", "--spec", str(spec_file))
    assert code == 1 and "auth.keys:" in out and "s3cret" not in out, out
    code, out = mlops("deploy", "--spec", str(spec_file))
    assert code == 0, out
    assert key_file.read_text() == "s3cret-key-2\n"
    rotated = {"Authorization": "Bearer s3cret-key-2"}
    assert httpx.post(f"{endpoint}/invocations", json=IRIS_ROW, headers=rotated).status_code == 200
    assert mlops("diff", "--spec", str(spec_file))[0] == 0


def test_another_model_is_refused_at_its_line(
    undeploy_all: None, registered_model: dict, iris_model_dir: Path, spec_file: Path
) -> None:
    assert mlops("deploy", "--spec", str(spec_file))[0] == 0
    register_version(iris_model_dir, "iris-b")
    spec_file.write_text(SPEC.replace("models:/iris/1", "models:/iris-b/1"))
    code, out = mlops("deploy", "--spec", str(spec_file))
    assert code == 4, out
    assert "deploy.yaml:3: model: deployment 'iris-spec' has iris, the spec iris-b" in out
    code, out = mlops("diff", "--spec", str(spec_file))
    assert code == 1 and "would need re-creating" in out


def test_spec_errors_exit_2_with_the_line_and_change_nothing(
    registered_model: dict, spec_file: Path
) -> None:
    spec_file.write_text(SPEC.replace("sample_rate: 1.0", "sample_rate: 1.5"))
    for command in ("deploy", "diff"):
        code, out = mlops(command, "--spec", str(spec_file))
        assert code == 2, out
        assert (
            "deploy.yaml:9: capture.sample_rate: 1.5 is not <= 1; use a value between 0 and 1"
            in out
        )
    spec_file.write_text(SPEC.replace("models:/iris/1", "models:/iris/7"))
    code, out = mlops("deploy", "--spec", str(spec_file))
    assert code == 3 and "deploy.yaml:3: model:" in out, out
    spec_file.write_text(SPEC)
    code, out = mlops("deploy", "models:/iris/1", "--spec", str(spec_file))
    assert code == 2 and "--spec takes every setting from the file" in out, out
    assert ledger.list_deployments() == []


ENSEMBLE = """\
name: iris-pair
models:
  - uri: models:/iris/1
  - uri: models:/iris/2
    weight: 3
combiner: weighted_mean
"""


def test_an_ensemble_spec_deploys_every_member_and_diffs_its_weights(
    undeploy_all: None, registered_model: dict, iris_model_dir: Path, tmp_path: Path
) -> None:
    assert register_version(iris_model_dir) == "2"
    spec_file = tmp_path / "ensemble.yaml"
    spec_file.write_text(ENSEMBLE)
    code, out = mlops("deploy", "--spec", str(spec_file), "--json")
    assert code == 0, out
    deployment = json.loads(out)["deployment"]
    assert deployment["config"]["ensemble"] == {
        "members": [
            {"model_uri": "models:/iris/1", "weight": 1.0},
            {"model_uri": "models:/iris/2", "weight": 3.0},
        ],
        "combiner": "weighted_mean",
    }
    version = httpx.get(f"{deployment['endpoint_url']}/version", timeout=10).json()
    assert [(m["model_version"], m["weight"]) for m in version["members"]] == [("1", 1), ("2", 3)]
    assert mlops("deploy", "--spec", str(spec_file))[1].strip() == "iris-pair: no changes"

    spec_file.write_text(ENSEMBLE.replace("weight: 3", "weight: 1").replace("weighted_", ""))
    code, out = mlops("diff", "--spec", str(spec_file), "--json")
    assert code == 1, out
    changes = {c["field"]: (c["current"], c["desired"]) for c in json.loads(out)["changes"]}
    assert changes == {"models.1.weight": (3.0, 1.0), "combiner": ("weighted_mean", "mean")}


CODE = """
import numpy as np

def init():
    pass

def run(data, model):
    return np.asarray(model.predict(data)) * {factor}
"""


def test_scoring_code_relative_to_the_spec_and_an_edit_of_it_is_a_change(
    undeploy_all: None, registered_model: dict, tmp_path: Path
) -> None:
    (tmp_path / "code").mkdir()
    module = tmp_path / "code" / "score.py"
    module.write_text(CODE.format(factor=2))
    spec_file = tmp_path / "deploy.yaml"
    spec_file.write_text("name: iris-code\nmodel: models:/iris/1\nscoring_code: code/score.py\n")
    code, out = mlops("deploy", "--spec", str(spec_file), "--json")
    assert code == 0, out
    deployment = json.loads(out)["deployment"]
    assert deployment["config"]["scoring_code"] == str(module)
    rows = IRIS_ROW  # predicted 0 and 2 by the model, then doubled by the code
    scored = httpx.post(f"{deployment['endpoint_url']}/invocations", json=rows, timeout=30)
    assert scored.status_code == 200 and scored.json()["predictions"] == [0, 4], scored.text
    assert mlops("diff", "--spec", str(spec_file))[0] == 0

    # the same path, new code: the digest differs, so diff and apply see it
    module.write_text(CODE.format(factor=3))
    code, out = mlops("diff", "--spec", str(spec_file))
    assert code == 1 and "scoring_code: sha256 " in out, out
    assert mlops("deploy", "--spec", str(spec_file))[0] == 0
    scored = httpx.post(f"{deployment['endpoint_url']}/invocations", json=rows, timeout=30)
    assert scored.json()["predictions"] == [0, 6], scored.text
    assert mlops("diff", "--spec", str(spec_file))[0] == 0

    module.unlink()
    code, out = mlops("diff", "--spec", str(spec_file))
    assert code == 2 and "deploy.yaml:3: scoring_code:" in out, out
