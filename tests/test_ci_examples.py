"""The CI example runs: every `run:` step of .ci/examples/github-actions.yml, in order, as GitHub
Actions would run it (bash -eo pipefail, $GITHUB_ENV carried between steps), against a real
local MLflow server with a temporary MLOPS_HOME; two pushes: the first deploys, the second is
gated against the champion, and each verdict is posted (step summary and VERDICT_URL)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from mlops_pipeline.serving.contract import free_port

from tests.servers import mlflow_server

EXAMPLES = Path(__file__).resolve().parents[1] / ".ci" / "examples"
WORKFLOW = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())


@pytest.fixture
def verdict_url() -> Iterator[tuple[str, list[dict]]]:
    """A local stand-in for a chat's incoming webhook: records each JSON body posted."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()


def run_steps(repo: Path, env: dict[str, str]) -> None:
    """Every step with `run:`, as the runner does; `uses:` steps (checkout, setup-python) are
    what the test's checkout and virtualenv already are."""
    github_env = Path(env["GITHUB_ENV"])
    for step in WORKFLOW["jobs"]["model"]["steps"]:
        if "run" not in step:
            continue
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"step {step.get('name')}: {done.stderr[-3000:]}"
        for line in github_env.read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value


@pytest.mark.e2e
def test_the_github_actions_example_runs(
    tmp_path: Path, verdict_url: tuple[str, list[dict]]
) -> None:
    url, posted = verdict_url
    repo = tmp_path / "model-repo"
    repo.mkdir()
    shutil.copy(EXAMPLES / "train.py", repo / "train.py")
    venv_bin = str(Path(sys.executable).parent)
    with mlflow_server(
        f"sqlite:///{tmp_path / 'team-mlflow.db'}", tmp_path / "artifacts"
    ) as mlflow:
        # the workflow's `env:` block, with the team's servers replaced by local ones
        values = {
            "MODEL_NAME": "ci-iris",
            "DEPLOYMENT": "ci-iris",
            "MLOPS_TARGET": "local:",
            "MLOPS_TRACKING_URI": mlflow,
            "MLOPS_LEDGER_URI": f"sqlite:///{tmp_path / 'team-ledger.db'}",
            "PREFECT_API_URL": "",  # none: the steps run directly
            "MLOPS_ACTOR": "github-actions/team/ci-iris",
            "MLOPS_BAKE_SECONDS": "0",
            "VERDICT_URL": url,
            "MLOPS_PIPELINE_VERSION": "0.1.0",
        }
        assert set(values) == set(WORKFLOW["env"]), "the workflow's env changed: update this test"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "PREFECT_"))}
        base.pop("MLFLOW_TRACKING_URI", None)
        base.pop("MLFLOW_REGISTRY_URI", None)
        env = {
            **base,
            **values,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
            "MLOPS_HOME": str(tmp_path / "mlops-home"),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "GITHUB_REPOSITORY": "team/ci-iris",
            "GITHUB_ENV": str(tmp_path / "github-env"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        }
        env.pop("PREFECT_API_URL")
        try:
            for push, sha in enumerate(("a1" * 20, "b2" * 20), start=1):
                (tmp_path / "github-env").write_text("")
                env["GITHUB_SHA"] = sha
                run_steps(repo, env)
                verdict = json.loads((repo / "verdict.json").read_text())
                assert env["MODEL_VERSION"] == str(push)
                if push == 1:
                    assert verdict["decision"] == "deployed"
                else:  # the same training again: a tie, which never passes the gate
                    assert verdict["decision"] in {"promoted", "rejected"}
                    assert verdict["challenger"]["version"] == "2"
            summary = (tmp_path / "summary.md").read_text()
            assert "### ci-iris v1: **deployed**" in summary
            assert f"### ci-iris v2: **{verdict['decision']}**" in summary
            assert [p["text"].splitlines()[0] for p in posted] == [
                "### ci-iris v1: **deployed**",
                f"### ci-iris v2: **{verdict['decision']}**",
            ]
            # the version carries the commit it was trained from, in the team's registry
            shown = subprocess.run(
                ["mlops", "models", "show", "ci-iris", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert shown.returncode == 0, shown.stderr
            assert "b2" * 20 in shown.stdout
        finally:
            subprocess.run(
                ["mlops", "undeploy", "ci-iris", "--json"],
                env=env,
                capture_output=True,
                timeout=120,
            )
