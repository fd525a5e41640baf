"""Docker image build and deploy: cold vs warm builds, deploy-to-ready, zero-downtime update.

Needs a Docker engine and the local base image (`sudo bash .ci/docker.sh`). In one run:
1. cold build of model version 1: a fresh wheelhouse (pip still uses its HTTP cache) and
   `--no-cache`, so every layer is built;
2. warm build of version 2: same requirements, only the model changed;
3. deploy version 1 on `docker:` -> seconds until /ready answers through the stable port;
4. update to version 2 while one client scores back to back through the stable port;
5. the anchor for 4: the naive recreate (delete, then create on the same port) under the same
   load, which is what an update without the proxy switch amounts to.

    python benchmarks/docker_build_deploy.py [--no-write]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # the load client lives with the test helpers
OUT = HERE / ".out" / "docker-bench"
NAME = "bench-docker"
MODEL = "iris-bench"
HEADING = "Docker image build and deploy"


class SwitchClock(logging.Handler):
    """Notes the moment the target reports that the proxy switched traffic."""

    at: float = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Switched"):
            self.at = time.monotonic()


def register_versions() -> None:
    """Two versions of one sklearn model with identical requirements (only C differs)."""
    import mlflow
    from mlflow.models import infer_signature
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    for c in (1.0, 0.3):
        model = LogisticRegression(max_iter=500, C=c).fit(X, y)
        path = OUT / f"model-c{c}"
        mlflow.sklearn.save_model(model, path, signature=infer_signature(X, model.predict(X)))
        run_flow(register_model, source=str(path), name=MODEL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    os.environ["MLOPS_HOME"] = str(OUT / "home")
    os.environ["MLOPS_WHEELHOUSE"] = str(OUT / "wheelhouse")
    os.environ.setdefault("MLOPS_BASE_IMAGE", "mlops-test/bookworm-python:latest")
    for var in ("MLOPS_TRACKING_URI", "MLOPS_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
        os.environ.pop(var, None)

    from mlops_pipeline.images import build_image
    from mlops_pipeline.targets.base import DeployConfig, ModelRef
    from mlops_pipeline.targets.docker import DockerTarget, docker_client

    from tests.docker_support import IRIS_PAYLOAD, continuous_load

    engine = docker_client().version()["Version"]
    register_versions()
    v1, v2 = ModelRef(MODEL, "1"), ModelRef(MODEL, "2")
    cold = build_image(v1.uri, tag="mlops-bench/iris:1", no_cache=True)
    warm = build_image(v2.uri, tag="mlops-bench/iris:2")
    print(f"build: cold {cold.seconds} s, warm {warm.seconds} s", flush=True)

    target = DockerTarget("docker:")
    target.delete(NAME)
    try:
        started = time.monotonic()
        deployment = target.create(NAME, v1, DeployConfig(), image=cold.tag)
        deploy_s = time.monotonic() - started
        url = f"{deployment.endpoint_url}/invocations"
        clock = SwitchClock()
        logging.getLogger("mlops_pipeline.targets.docker").addHandler(clock)
        logging.getLogger("mlops_pipeline.targets.docker").setLevel(logging.INFO)
        with continuous_load(url, IRIS_PAYLOAD, max_requests=20000) as update_load:
            started = time.monotonic()
            target.update(NAME, v2, DeployConfig(), image=warm.tag)
            update_s = time.monotonic() - started
        switch_s = clock.at - started
        port = int(deployment.endpoint_url.rsplit(":", 1)[1])
        with continuous_load(url, IRIS_PAYLOAD, max_requests=20000) as recreate_load:
            started = time.monotonic()
            target.delete(NAME)
            target.create(NAME, v1, DeployConfig(port=port), image=cold.tag)
            recreate_s = time.monotonic() - started
    finally:
        target.delete(NAME)
        for tag in (cold.tag, warm.tag):
            target.client.images.remove(tag, force=True)

    median_ms = statistics.median(update_load.latencies) * 1000
    result = {
        "cold_build_s": cold.seconds,
        "warm_build_s": warm.seconds,
        "warm_cached_steps": f"{warm.cached_steps}/{warm.steps}",
        "deploy_to_ready_s": round(deploy_s, 2),
        "update_s": round(update_s, 2),
        "update_to_switch_s": round(switch_s, 2),
        "update_ok": update_load.ok,
        "update_failed": len(update_load.failures),
        "update_median_ms": round(median_ms, 1),
        "update_longest_ms": round(max(update_load.latencies) * 1000, 1),
        "recreate_s": round(recreate_s, 2),
        "recreate_ok": recreate_load.ok,
        "recreate_failed": len(recreate_load.failures),
    }
    (OUT / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    r = result
    rows = [
        ("cold image build (fresh wheelhouse, `--no-cache`)", f"{cold.seconds:.1f} s"),
        (
            "warm image build (new model version, same requirements)",
            f"{warm.seconds:.1f} s ({warm.cached_steps} of {warm.steps} steps from cache)",
        ),
        ("**cold / warm**", f"**{cold.seconds / warm.seconds:.0f}x**"),
        ("deploy to ready (`docker:`, through the stable port)", f"{deploy_s:.1f} s"),
        (
            "update v1 -> v2: new version serving (start, /ready, switch) / done (old stopped)",
            f"{switch_s:.1f} s / {update_s:.1f} s",
        ),
        (
            "requests during the update: ok / **failed**",
            f"{r['update_ok']} / **{r['update_failed']}**",
        ),
        (
            "request latency during the update: median / longest",
            f"{r['update_median_ms']} ms / {r['update_longest_ms']:.0f} ms",
        ),
        (
            "anchor: recreate (delete + create on the same port)",
            f"{recreate_s:.1f} s, {r['recreate_ok']} ok / **{r['recreate_failed']} failed**",
        ),
    ]
    table = "\n".join(f"| {measure} | {value} |" for measure, value in rows)
    body = f"""`python benchmarks/docker_build_deploy.py` on {datetime.now(UTC):%Y-%m-%d}, \
{platform.machine()}, {os.cpu_count()} cores shared with other work, Docker engine {engine}, \
base image `{cold.base_image}` (debootstrap bookworm, Python 3.11). One sklearn model; version 2 \
differs only in its weights. One client thread scores back to back through the stable port.

| measure | value |
| --- | --- |
{table}

The warm build reuses every layer above `COPY model/` (base, venv installed from the
wheelhouse, serving source), so a new model version costs only its own artifacts. The update
keeps the old container serving until the new one answers /ready, then the proxy switches and
drains; the recreate anchor shows what the same load sees without that switch."""
    if not args.no_write:
        from _sections import write_section

        write_section(HEADING, body)
    return 0 if not update_load.failures else 1


if __name__ == "__main__":
    sys.exit(main())
