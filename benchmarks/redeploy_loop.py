"""Redeploy loop: drift event -> the challenger serving, vs a manual undeploy + deploy.

In one run on the local target, with a private MLOPS_HOME, a real `prefect server` and the
flows served by `python -m mlops_pipeline.flows.deployments` (what `mlops up` runs). Each
round and approach gets a fresh registered model (a weak champion serving with capture, a
strong challenger under the alias `challenger`, so retraining is excluded), a client scoring
back to back through the stable endpoint (counting failed requests) and a watcher polling
/version every 50 ms:

* ours, event path: `mlops.drift.detected` emitted with `prefect.events.emit_event` -> the
  automation -> a `redeploy` flow run in the served runner -> gate -> zero-downtime switch;
  timed to the new version answering /version and to the decision in the ledger, with the
  flow run's timestamps splitting automation, runner pick-up and the flow's own work;
* ours, direct path: `run_flow(redeploy, ...)` in this process (no Prefect in the way);
* anchor: the `undeploy` then `deploy` flows with the challenger on the same port, as a user
  would switch by hand.

The bake period is off by default (`--bake-seconds`); it only delays the decision.
Writes the "## Redeploy loop" section of BENCHMARKS.md unless --no-write.

    .venv/bin/python benchmarks/redeploy_loop.py [--rounds 3] [--runner-poll S] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers and tests.flows.redeploy_support
HEADING = "Redeploy loop"
APPROACHES = ("event", "direct", "anchor")
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = {"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}
ROUND_TIMEOUT = 240.0  # seconds a round may take to switch and record its decision


class Load(threading.Thread):
    """Sequential scoring through one keep-alive connection; counts failures and when they
    happened. Bounded in count and time."""

    def __init__(self, url: str, max_requests: int = 100_000, max_seconds: float = 600.0):
        super().__init__(daemon=True)
        self.url, self.max_requests, self.max_seconds = url, max_requests, max_seconds
        self.ok = 0
        self.failed_at: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            while (
                not self.done.is_set()
                and self.ok + len(self.failed_at) < self.max_requests
                and time.monotonic() - started < self.max_seconds
            ):
                try:
                    ok = client.post(self.url + "/invocations", json=ROW).status_code == 200
                except httpx.HTTPError:
                    ok = False
                    time.sleep(0.01)  # a refused connection returns at once; don't spin
                if ok:
                    self.ok += 1
                else:
                    self.failed_at.append(time.monotonic())

    def finish(self) -> Load:
        self.done.set()
        if self.is_alive():
            self.join(30)
        return self


class VersionWatcher(threading.Thread):
    """Polls /version every 50 ms until it names `version`; bounded in time."""

    def __init__(self, url: str, version: str, max_seconds: float = ROUND_TIMEOUT):
        super().__init__(daemon=True)
        self.url, self.version, self.max_seconds = url, version, max_seconds
        self.seen_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            while not self.done.is_set() and time.monotonic() - started < self.max_seconds:
                try:
                    served = client.get(self.url + "/version").json().get("model_version")
                except (httpx.HTTPError, ValueError):
                    served = None
                if str(served) == self.version:
                    self.seen_at = time.monotonic()
                    return
                time.sleep(0.05)

    def finish(self) -> VersionWatcher:
        self.done.set()
        if self.is_alive():
            self.join(10)
        return self


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def since(start_wall: dt.datetime, moment: Any) -> float | None:
    """Seconds from `start_wall` to a timestamp (naive ones are UTC, as the ledger stores)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp() - start_wall.timestamp()


def isolate(home: Path, bake_seconds: float) -> None:
    """A private MLOPS_HOME; this process's own flows run in-process (not tracked)."""
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_ORCHESTRATE"] = "never"
    os.environ["MLOPS_BAKE_SECONDS"] = str(bake_seconds)
    for var in (
        "MLOPS_TRACKING_URI",
        "MLOPS_REGISTRY_URI",
        "MLOPS_LEDGER_URI",
        "MLOPS_MONITORED_DEPLOYMENT",
        "MLOPS_TRAINER",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "PREFECT_API_URL",
    ):
        os.environ.pop(var, None)


def start_runner(api: str, tmp: Path, runner_poll: float | None) -> subprocess.Popen:
    """`python -m mlops_pipeline.flows.deployments` against `api`, sharing MLOPS_HOME."""
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(tmp / "prefect-runner"),
        "MLOPS_ORCHESTRATE": "auto",
    }
    if runner_poll is not None:
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = str(runner_poll)
    log = open(tmp / "runner.log", "w")  # noqa: SIM115 - the child keeps it; closed at exit
    return subprocess.Popen(
        [sys.executable, "-m", "mlops_pipeline.flows.deployments"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_for_served(client: Any, runner: subprocess.Popen) -> None:
    """Until the runner has created the redeploy deployment and its trigger's automation."""

    def ready() -> bool:
        if runner.poll() is not None:
            raise RuntimeError(f"the served flows exited with {runner.returncode}")
        if "redeploy" not in {d.name for d in client.read_deployments()}:
            return False
        redeploy = client.read_deployment_by_name("redeploy/redeploy")
        return bool(client.read_resource_related_automations(f"prefect.deployment.{redeploy.id}"))

    wait_until(ready, 120, "the served redeploy deployment and its automation", every=1)


class Round:
    """One approach in one round: its own registered model, deployment, load and watcher."""

    def __init__(self, approach: str, index: int, tmp: Path, frame: Any):
        from mlops_pipeline.flows import run_flow
        from mlops_pipeline.flows.deploy import deploy
        from mlops_pipeline.serving.contract import free_port

        from tests.flows.redeploy_support import register_pickle, strong_model, weak_model

        self.name = f"rl-{approach}-{index}"
        reference = tmp / f"{self.name}-reference.csv"
        frame.to_csv(reference, index=False)
        self.champion = register_pickle(weak_model(frame), tmp, reference, "champion", self.name)
        self.challenger = register_pickle(
            strong_model(frame), tmp, reference, "challenger", self.name
        )
        self.port = free_port()
        self.capture = str(tmp / f"{self.name}-captures")
        served = run_flow(
            deploy,
            model_uri=f"models:/{self.name}/{self.champion}",
            name=self.name,
            port=self.port,
            capture_uri=self.capture,
            ready_timeout=90,
        )
        self.endpoint = served["endpoint_url"]
        self.load = Load(self.endpoint)
        self.watcher = VersionWatcher(self.endpoint, self.challenger)

    def start(self) -> tuple[float, dt.datetime]:
        self.load.start()
        time.sleep(1.0)  # steady traffic before the change
        self.watcher.start()
        return time.monotonic(), dt.datetime.now(dt.UTC)

    def switched(self) -> float:
        wait_until(lambda: self.watcher.seen_at, ROUND_TIMEOUT, f"{self.name} did not switch")
        assert self.watcher.seen_at is not None
        return self.watcher.seen_at

    def finish(self, started: float) -> dict[str, Any]:
        """Stop the load a second after the switch; the request figures of the change."""
        switched_at = self.switched()
        time.sleep(1.0)
        self.load.finish()
        self.watcher.finish()
        failed = self.load.failed_at
        return {
            "switch_s": switched_at - started,
            "failed": len(failed),
            "ok": self.load.ok,
            "outage_s": failed[-1] - failed[0] if failed else 0.0,
        }

    def decision(self) -> dict[str, Any] | None:
        """The redeploy's finished ledger row, once it has one."""
        from mlops_pipeline.redeploy import records

        rows = [r for r in records.decisions(self.name) if r["finished_at"] is not None]
        if not rows:
            return None
        if rows[-1]["decision"] != "promoted":
            raise RuntimeError(f"{self.name}: {rows[-1]['decision']}: {rows[-1]['reason']}")
        return rows[-1]

    def delete(self) -> None:
        from mlops_pipeline.targets.local import LocalTarget

        self.load.finish()
        self.watcher.finish()
        target = LocalTarget()
        if any(d.name == self.name for d in target.list()):
            target.delete(self.name)


def run_event(case: Round, client: Any) -> dict[str, Any]:
    from mlops_pipeline.monitoring.publish import drift_event
    from mlops_pipeline.monitoring.reference import MonitorTarget
    from mlops_pipeline.monitoring.results import DriftVerdict
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.events import emit_event

    target = MonitorTarget(case.name, case.capture, case.name, case.champion)
    verdict = DriftVerdict(drift=True, drifted=["petal_length"])
    started, wall = case.start()
    emit_event(**drift_event(target, verdict, "report.html", uuid.uuid4().hex))
    result = case.finish(started)
    row = wait_until(case.decision, ROUND_TIMEOUT, f"{case.name}: no decision recorded")
    result["claimed_s"] = since(wall, row["started_at"])
    result["decision_s"] = since(wall, row["finished_at"])
    by_deployment = DeploymentFilter(name=DeploymentFilterName(any_=["redeploy"]))

    def run_finished() -> Any:
        runs = client.read_flow_runs(deployment_filter=by_deployment)
        mine = [r for r in runs if r.parameters.get("name") == case.name]
        return next((r for r in mine if r.state and r.state.is_final()), None)

    run = wait_until(run_finished, 60, f"{case.name}: the redeploy flow run did not end", 0.5)
    if not run.state.is_completed():
        raise RuntimeError(f"{case.name}: redeploy flow run {run.state.type}")
    result |= {
        "run_created_s": since(wall, run.created),
        "run_started_s": since(wall, run.start_time),
        "run_ended_s": since(wall, run.end_time),
    }
    return result


def run_direct(case: Round, bake_seconds: float) -> dict[str, Any]:
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.redeploy import redeploy

    started, wall = case.start()
    out = run_flow(
        redeploy,
        name=case.name,
        reason="drift",
        bake_seconds=bake_seconds,
        episode_id=uuid.uuid4().hex,
    )
    returned = time.monotonic() - started
    if out["decision"] != "promoted":
        raise RuntimeError(f"{case.name}: {out['decision']}: {out['reason']}")
    result = case.finish(started)
    row = case.decision() or {}
    result["claimed_s"] = since(wall, row.get("started_at"))
    result["decision_s"] = since(wall, row.get("finished_at"))
    result["flow_s"] = returned
    return result


def run_anchor(case: Round) -> dict[str, Any]:
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.deploy import deploy, undeploy

    started, _ = case.start()
    run_flow(undeploy, name=case.name, reason="manual switch")
    undeployed = time.monotonic() - started
    run_flow(
        deploy,
        model_uri=f"models:/{case.name}/{case.challenger}",
        name=case.name,
        port=case.port,
        capture_uri=case.capture,
        ready_timeout=90,
    )
    result = case.finish(started)
    result["undeploy_s"] = undeployed
    return result


def bench(rounds: int, bake_seconds: float, runner_poll: float | None, tmp: Path) -> dict:
    """Every approach `rounds` times, in a rotating order; per-round figures by approach."""
    import pandas as pd
    from mlops_pipeline.settings import get_settings
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from sklearn.datasets import load_iris

    from tests.servers import prefect_server

    get_settings.cache_clear()
    iris = load_iris(as_frame=True)
    frame = pd.DataFrame(iris.data.to_numpy(), columns=COLUMNS).assign(label=iris.target)
    (tmp / "prefect-server").mkdir()
    results: dict[str, list[dict]] = {approach: [] for approach in APPROACHES}
    with prefect_server(tmp / "prefect-server") as api:
        runner = start_runner(api, tmp, runner_poll)
        cases: list[Round] = []
        try:
            with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as c:
                wait_for_served(c, runner)
                for index in range(rounds):
                    shift = index % len(APPROACHES)
                    for approach in APPROACHES[shift:] + APPROACHES[:shift]:
                        case = Round(approach, index, tmp, frame)
                        cases.append(case)
                        if approach == "event":
                            result = run_event(case, c)
                        elif approach == "direct":
                            result = run_direct(case, bake_seconds)
                        else:
                            result = run_anchor(case)
                        print(f"round {index + 1} {approach}: {result}", file=sys.stderr)
                        results[approach].append(result)
                        case.delete()
        finally:
            for case in cases:
                case.delete()
            runner.terminate()
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait(10)
    return results


def med(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def render(results: dict, rounds: int, bake_seconds: float, runner_poll: float | None) -> str:
    event, direct, anchor = (results[a] for a in APPROACHES)

    def failed(rows: list[dict]) -> int:
        return sum(row["failed"] for row in rows)

    def ok(rows: list[dict]) -> int:
        return sum(row["ok"] for row in rows)

    poll = f"{runner_poll:g} s" if runner_poll is not None else "Prefect's default, 10 s"
    a_switch = med(anchor, "switch_s")
    lines = [
        f"One run on the shared 2-core dev box, {rounds} round(s) per approach in a rotating "
        "order; each round a fresh registered model: a weak iris champion (sepal_width only) "
        "serving on the local target with capture, a strong challenger under the alias "
        "`challenger` (retraining excluded), a client scoring 1-row requests back to back "
        "through the stable endpoint and a watcher on /version every 50 ms. Bake period "
        f"{bake_seconds:g} s; runner poll {poll}. Medians; failed requests summed over rounds.",
        "",
        "| approach | s to new version serving | s to decision recorded | requests ok | "
        "requests failed |",
        "|---|---:|---:|---:|---:|",
        f"| ours, event: `mlops.drift.detected` -> automation -> served `redeploy` run | "
        f"{med(event, 'switch_s'):.1f} | {med(event, 'decision_s'):.1f} | {ok(event)} | "
        f"**{failed(event)}** |",
        f"| ours, direct: `run_flow(redeploy)` in-process | {med(direct, 'switch_s'):.1f} | "
        f"{med(direct, 'decision_s'):.1f} | {ok(direct)} | **{failed(direct)}** |",
        f"| anchor: `undeploy` + `deploy` of the challenger on the same port | {a_switch:.1f} | "
        f"- | {ok(anchor)} | **{failed(anchor)}** |",
        "",
        "Event path, seconds from the event (median; the flow run's own timestamps):",
        "",
        "| event -> run created (automation) | -> run started (runner pick-up) | "
        "-> episode claimed (flow's first step) | -> new version serving | "
        "-> decision recorded | -> run ended |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {med(event, 'run_created_s'):.1f} | {med(event, 'run_started_s'):.1f} | "
        f"{med(event, 'claimed_s'):.1f} | {med(event, 'switch_s'):.1f} | "
        f"{med(event, 'decision_s'):.1f} | {med(event, 'run_ended_s'):.1f} |",
        "",
        f"Direct path: episode claimed after {med(direct, 'claimed_s'):.1f} s, the flow "
        f"returns after {med(direct, 'flow_s'):.1f} s. Anchor: undeploy "
        f"{med(anchor, 'undeploy_s'):.1f} s, then the endpoint refuses requests for "
        f"{med(anchor, 'outage_s'):.1f} s (first to last failed request).",
        "",
        f"Ratios ours/anchor, time to the new version serving: event "
        f"{med(event, 'switch_s') / a_switch:.2f}x, direct "
        f"{med(direct, 'switch_s') / a_switch:.2f}x; "
        f"failed requests {failed(event)} and {failed(direct)} vs {failed(anchor)}.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/redeploy_loop.py"
        + (f" --rounds {rounds}" if rounds != 3 else "")
        + (f" --runner-poll {runner_poll:g}" if runner_poll is not None else "")
        + "`.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per approach.")
    parser.add_argument(
        "--bake-seconds", type=float, default=0.0, help="Bake period (delays the decision only)."
    )
    from mlops_pipeline.stack import RUNNER_POLL_SECONDS

    parser.add_argument(
        "--runner-poll",
        type=float,
        default=float(RUNNER_POLL_SECONDS),
        help="PREFECT_RUNNER_POLL_FREQUENCY of the served flows (default: as `mlops up` sets it).",
    )
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-redeploy-") as tmp:
        isolate(Path(tmp) / "home", args.bake_seconds)
        results = bench(args.rounds, args.bake_seconds, args.runner_poll, Path(tmp))
    body = render(results, args.rounds, args.bake_seconds, args.runner_poll)
    print(body)
    if not args.no_write:
        from _sections import write_section

        write_section(HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
