"""With several workers, keep-alive connections spread over them (one SO_REUSEPORT socket each)."""

from __future__ import annotations

import json
import signal

import httpx

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
