"""With several workers, keep-alive connections spread over them (one SO_REUSEPORT socket each)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import mlflow
from mlflow.models import infer_signature

from tests.serving.conftest import start_server


def test_eight_keep_alive_connections_reach_both_of_two_workers(
    tmp_path, iris_model_dir, iris_features
):
    server = start_server(tmp_path, iris_model_dir, MLOPS_SERVING_WORKERS="2")
    body = json.dumps({"dataframe_records": iris_features.head(3).to_dict(orient="records")})
    clients = [
        # one connection per client, kept alive across its requests
        httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=1))
        for _ in range(8)
    ]
    try:
        pids_by_connection = []
        for client in clients:
            seen = set()
            for _ in range(5):
                r = client.post(
                    "/invocations", content=body, headers={"Content-Type": "application/json"}
                )
                assert r.status_code == 200 and len(r.json()["predictions"]) == 3
                seen.add(client.get("/version").json()["worker_pid"])
            pids_by_connection.append(seen)
    finally:
        for client in clients:
            client.close()
        assert server.stop(signal.SIGTERM) == 0
    # a keep-alive connection stays with the worker that accepted it ...
    assert all(len(seen) == 1 for seen in pids_by_connection)
    pids = set().union(*pids_by_connection)
    # ... and the eight are spread over both workers (all eight on one: p = 2/2**8)
    assert len(pids) == 2
    assert server.proc.pid not in pids  # the supervisor itself serves nothing


class SecondWorkerLoadsLate(mlflow.pyfunc.PythonModel):
    """Predicts 0; the second worker process to load it takes 4 s longer than the first."""

    def load_context(self, context):
        flag = Path(os.environ["SLOW_FLAG"])
        try:
            flag.touch(exist_ok=False)
        except FileExistsError:
            time.sleep(4)

    def predict(self, context, model_input):
        return [0] * len(model_input)


def test_ready_waits_for_every_worker_to_load(tmp_path, iris_features):
    """/ready reaches one worker (each has its own socket): 200 from any of them means all
    have loaded, so the first 200 a deploy or the proxy sees is never a half-loaded service."""
    model_dir = tmp_path / "late"
    signature = infer_signature(iris_features.head(3), [0, 0, 0])
    mlflow.pyfunc.save_model(model_dir, python_model=SecondWorkerLoadsLate(), signature=signature)
    server = start_server(
        tmp_path,
        model_dir,
        MLOPS_SERVING_WORKERS="2",
        SLOW_FLAG=str(tmp_path / "first-worker"),
    )
    body = json.dumps({"dataframe_records": iris_features.head(2).to_dict(orient="records")})
    pids = set()
    try:
        # from the first 200 on, every fresh connection (either worker) scores at once
        for _ in range(24):
            with httpx.Client(base_url=server.url, timeout=30) as client:
                assert client.get("/ready").status_code == 200
                r = client.post(
                    "/invocations", content=body, headers={"Content-Type": "application/json"}
                )
                assert r.status_code == 200, r.text
                pids.add(client.get("/version").json()["worker_pid"])
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert len(pids) == 2
