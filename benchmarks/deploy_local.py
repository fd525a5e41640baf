"""Local target: deploy-to-ready, zero-downtime update vs a plain stop-and-start restart.

In one run, with the same registered iris model (versions 1 and 2) and a client scoring
continuously (sequential keep-alive requests, bounded in count and time):

* ours: `LocalTarget.create` (deploy-to-ready), then `update` v1 -> v2 and back (rollback),
  reporting update seconds, the proxy switch+drain seconds and failed requests;
* baseline: one `python -m mlops_pipeline.serving` process restarted in place (SIGTERM, start
  v2 on the same port, wait for /ready), reporting downtime and failed requests;
* proxy overhead: sequential request latency through the stable port vs straight to the service.

Writes the "## Local target deploy/update" section of BENCHMARKS.md.

    .venv/bin/python benchmarks/deploy_local.py [--seconds 3] [--rounds 5] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from mlops_pipeline.serving.contract import free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
HEADING = "Local target deploy/update"
ROW = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [[5.1, 3.5, 1.4, 0.2]],
    }
}


class Load(threading.Thread):
    """Sequential scoring through one keep-alive connection; counts failures."""

    def __init__(self, url: str, max_requests: int = 100_000, max_seconds: float = 300.0):
        super().__init__(daemon=True)
        self.url, self.max_requests, self.max_seconds = url, max_requests, max_seconds
        self.ok = 0
        self.failed = 0
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            while (
                not self.done.is_set()
                and self.ok + self.failed < self.max_requests
                and time.monotonic() - started < self.max_seconds
            ):
                try:
                    ok = client.post(self.url + "/invocations", json=ROW).status_code == 200
                except httpx.HTTPError:
                    ok = False
                    time.sleep(0.01)  # a refused connection returns at once; don't spin
                self.ok += ok
                self.failed += not ok

    def finish(self) -> Load:
        self.done.set()
        self.join(30)
        return self


def latency_ms(url: str, seconds: float) -> tuple[float, float]:
    """p50 latency (ms) and requests/s of sequential keep-alive requests for `seconds`."""
    samples = []
    with httpx.Client(timeout=30) as client:
        client.post(url + "/invocations", json=ROW)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(samples) < 50_000:
            started = time.perf_counter()
            client.post(url + "/invocations", json=ROW).raise_for_status()
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000, len(samples) / sum(samples)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def setup(home: Path) -> None:
    """A private MLOPS_HOME with iris versions 1 and 2 registered."""
    os.environ["MLOPS_HOME"] = str(home)
    for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLOPS_LEDGER_URI"):
        os.environ.pop(var, None)
    import mlflow
    from mlflow.models import infer_signature
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).data
    frame.columns = ROW["dataframe_split"]["columns"]
    model = LogisticRegression(max_iter=500).fit(frame, load_iris().target)
    path = home.parent / "iris"
    mlflow.sklearn.save_model(model, path, signature=infer_signature(frame, model.predict(frame)))
    for _ in range(2):
        run_flow(register_model, source=str(path), name="iris")


def bench_ours(seconds: float, rounds: int) -> dict:
    from mlops_pipeline.targets import DeployConfig, ModelRef
    from mlops_pipeline.targets.local import LocalTarget

    target = LocalTarget()
    config = DeployConfig(drain_timeout=30)
    started = time.monotonic()
    deployment = target.create("bench", ModelRef("iris", "1"), config)
    result = {"deploy_s": time.monotonic() - started}
    try:
        endpoint = deployment.endpoint_url
        state_file = target.root / "bench" / "state.json"
        service = f"http://127.0.0.1:{json.loads(state_file.read_text())['active']['port']}"
        # alternate the order each round so neither path gets the quieter moments of the box
        runs: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
        for i in range(rounds):
            order = [("direct", service), ("proxy", endpoint)]
            for path, url in order if i % 2 == 0 else order[::-1]:
                runs[path].append(latency_ms(url, seconds))
        for path, samples in runs.items():
            result[f"{path}_p50"] = statistics.median(p50 for p50, _ in samples)
            result[f"{path}_rps"] = statistics.median(rps for _, rps in samples)
        for step, version in (("update", "2"), ("rollback", "1")):
            load = Load(endpoint)
            load.start()
            time.sleep(1.0)
            started = time.monotonic()
            target.update("bench", ModelRef("iris", version), config)
            result[f"{step}_s"] = time.monotonic() - started
            time.sleep(1.0)
            load.finish()
            switch = json.loads(state_file.read_text())["last_switch"]
            result[f"{step}_switch_s"] = switch["drain_seconds"]
            result[f"{step}_failed"], result[f"{step}_ok"] = load.failed, load.ok
    finally:
        target.delete("bench")
    return result


ECHO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"predictions": [0]}'})
"""


def bench_bare_proxy(seconds: float, rounds: int, workdir: Path) -> dict:
    """Proxy overhead alone: a constant-answer uvicorn upstream, direct vs through the proxy."""
    (workdir / "echo_app.py").write_text(ECHO_APP)
    upstream, proxy_port = free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    echo = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "echo_app:app", "--port", str(upstream)],
        cwd=workdir,
        **quiet,
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "mlops_pipeline.serving.proxy", "--port", str(proxy_port)],
        env={**os.environ, "MLOPS_SERVING_PROXY_UPSTREAM": f"http://127.0.0.1:{upstream}"},
        **quiet,
    )
    try:
        wait_ready(f"http://127.0.0.1:{upstream}", echo)
        wait_ready(f"http://127.0.0.1:{proxy_port}", proxy)
        runs: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
        for i in range(rounds):
            order = [("direct", upstream), ("proxy", proxy_port)]
            for path, port in order if i % 2 == 0 else order[::-1]:
                runs[path].append(latency_ms(f"http://127.0.0.1:{port}", seconds))
        return {
            f"bare_{path}_p50": statistics.median(p50 for p50, _ in samples)
            for path, samples in runs.items()
        }
    finally:
        for proc in (proxy, echo):
            proc.terminate()
            proc.wait(30)


def bench_restart() -> dict:
    from mlops_pipeline.settings import get_settings
    from mlops_pipeline.targets import DeployConfig, ModelRef
    from mlops_pipeline.targets.base import serving_env

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tracking = get_settings().resolved_tracking_uri

    def start(version: str) -> subprocess.Popen:
        model = ModelRef("iris", version)
        env = {**os.environ, **serving_env(model.uri, model, DeployConfig(), port=port)}
        env["MLFLOW_TRACKING_URI"] = tracking
        return subprocess.Popen(
            [sys.executable, "-m", "mlops_pipeline.serving"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    proc = start("1")
    try:
        wait_ready(url, proc)
        load = Load(url)
        load.start()
        time.sleep(1.0)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        proc = start("2")
        wait_ready(url, proc)
        downtime = time.monotonic() - started
        time.sleep(1.0)
        load.finish()
        return {"restart_s": downtime, "restart_failed": load.failed, "restart_ok": load.ok}
    finally:
        proc.terminate()
        proc.wait(60)


def render(ours: dict, base: dict) -> str:
    return "\n".join(
        [
            "One run on the shared 2-core dev box; iris LogisticRegression, 1 uvicorn worker, a",
            "client scoring 1-row requests back to back through the endpoint during each change.",
            "",
            "| step | seconds | requests ok | requests failed |",
            "|---|---:|---:|---:|",
            f"| deploy-to-ready (`LocalTarget.create`) | {ours['deploy_s']:.1f} | - | - |",
            f"| update v1 -> v2, total (start, /ready, switch, drain, stop old) | "
            f"{ours['update_s']:.1f} | {ours['update_ok']} | **{ours['update_failed']}** |",
            f"| update: proxy switch + drain | {ours['update_switch_s'] * 1000:.1f} ms | - | - |",
            f"| rollback v2 -> v1, total | {ours['rollback_s']:.1f} | {ours['rollback_ok']} | "
            f"**{ours['rollback_failed']}** |",
            f"| rollback: proxy switch + drain | {ours['rollback_switch_s'] * 1000:.1f} ms "
            "| - | - |",
            f"| baseline: stop-and-start restart (SIGTERM, start v2, /ready) | "
            f"{base['restart_s']:.1f} (downtime) | {base['restart_ok']} | "
            f"**{base['restart_failed']}** |",
            "",
            "The baseline's failed requests are the client's attempts during the downtime (it "
            "retries every 10 ms after a refused connection).",
            "",
            "Proxy overhead (sequential keep-alive requests to the same service; median of "
            "alternating rounds):",
            "",
            "| path | p50 ms | requests/s |",
            "|---|---:|---:|",
            f"| direct to the scoring service | {ours['direct_p50']:.2f} | "
            f"{ours['direct_rps']:.0f} |",
            f"| through the stable-port proxy | {ours['proxy_p50']:.2f} | "
            f"{ours['proxy_rps']:.0f} |",
            f"| constant-answer upstream, direct | {ours['bare_direct_p50']:.2f} | - |",
            f"| constant-answer upstream, through the proxy | {ours['bare_proxy_p50']:.2f} | - |",
            "",
            f"Ratios: requests failed during update {ours['update_failed']} vs "
            f"{base['restart_failed']} for a restart; traffic switch "
            f"{ours['update_switch_s'] * 1000:.0f} ms vs {base['restart_s']:.1f} s of downtime; "
            f"proxy adds {ours['proxy_p50'] - ours['direct_p50']:.2f} ms at p50 in front of the "
            f"model ({ours['proxy_p50'] / ours['direct_p50']:.2f}x) and "
            f"{ours['bare_proxy_p50'] - ours['bare_direct_p50']:.2f} ms in front of a "
            "constant-answer upstream (the hop itself).",
            "",
            "Reproduce: `.venv/bin/python benchmarks/deploy_local.py`.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Per latency measurement.")
    parser.add_argument("--rounds", type=int, default=5, help="Latency rounds per path.")
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-deploy-") as tmp:
        setup(Path(tmp) / "home")
        ours = bench_ours(args.seconds, args.rounds)
        base = bench_restart()
        ours.update(bench_bare_proxy(args.seconds, args.rounds, Path(tmp)))
    body = render(ours, base)
    print(body)
    if not args.no_write:
        from _sections import write_section

        write_section(HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
