"""Scoring service vs `mlflow models serve`: same sklearn model, same workers, same load.

For each server (ours with capture on, ours with capture off, mlflow) it runs a keep-alive,
TCP_NODELAY load generator on 127.0.0.1 at concurrency 1, 8 and 32 with 1-row and 100-row
payloads, each cell bounded in time, and writes requests/s and p50/p99 latency plus the
target ratios to its own section of BENCHMARKS.md (other sections are left alone). Each cell
warms up on the same connections it then measures, so the window holds steady keep-alive
traffic, not the burst of 32 simultaneous connection set-ups.

    .venv/bin/python benchmarks/serve_vs_mlflow.py [--seconds 1.5] [--rounds 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from mlops_pipeline.serving.contract import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEADING = "Scoring service vs mlflow models serve"
CONCURRENCY = (1, 8, 32)
ROWS = (1, 100)


@dataclass
class Cell:
    server: str
    concurrency: int
    rows: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    p99_rounds: float = float("nan")  # median over the rounds of each round's p99

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def save_model(directory: Path) -> tuple[Path, list[str]]:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).data
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    target = load_iris().target
    model = LogisticRegression(max_iter=500).fit(frame, target)
    path = directory / "iris"
    mlflow.sklearn.save_model(model, path, signature=infer_signature(frame, model.predict(frame)))
    return path, list(frame.columns)


def payload(columns: list[str], rows: int) -> bytes:
    data = [[5.1 + i % 7 * 0.1, 3.5, 1.4 + i % 5, 0.2] for i in range(rows)]
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def connection(
    port: int, request: bytes, measure_from: float, stop_at: float, out: list, errors: list
) -> None:
    """One keep-alive connection sending requests back to back until `stop_at`, recording
    those sent from `measure_from` on (earlier ones warm the connection and the server)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if start < measure_from:
                continue
            if status == 200:
                out.append(time.perf_counter() - start)
            else:
                errors.append(status)
    finally:
        writer.close()


async def measure(port: int, body: bytes, concurrency: int, seconds: float) -> tuple:
    request = request_bytes(port, body)
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter() + 0.3
    stop_at = start + seconds
    await asyncio.gather(
        *(connection(port, request, start, stop_at, latencies, errors) for _ in range(concurrency))
    )
    return latencies, errors, time.perf_counter() - start


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def start(name: str, model: Path, port: int, workers: int, tmp: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    # mlflow execs `uvicorn` by name, so this venv's bin must be on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = (tmp / f"{name}.log").open("wb")
    if name == "mlflow":
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(workers),
            "--env-manager",
            "local",
        ]
        ready = f"http://127.0.0.1:{port}/ping"
    else:
        env.update(
            MLOPS_SERVING_MODEL_URI=str(model),
            MLOPS_SERVING_PORT=str(port),
            MLOPS_SERVING_WORKERS=str(workers),
            MLOPS_SERVING_LOG_LEVEL="warning",
        )
        if name == "ours, capture on":
            env.update(
                MLOPS_SERVING_CAPTURE_URI=str(tmp / "capture"),
                MLOPS_SERVING_CAPTURE_SPOOL_DIR=str(tmp / "spool"),
            )
        cmd = [sys.executable, "-m", "mlops_pipeline.serving"]
        ready = f"http://127.0.0.1:{port}/ready"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    wait_ready(ready, proc)
    return proc


def run(seconds: float, workers: int, rounds: int) -> list[Cell]:
    """Every cell runs `rounds` times, the servers taking turns, and keeps each server's best
    round: on a machine shared with other work, that is the least disturbed measurement. The
    p99 compared is the median of the rounds' p99s: one round's tail is a handful of requests,
    which one disturbance from other work on the machine can double."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    best: dict[tuple[str, int, int], Cell] = {}
    p99s: dict[tuple[str, int, int], list[float]] = {}
    names = ("ours, capture on", "ours, capture off", "mlflow")
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model, columns = save_model(tmp)
        bodies = {rows: payload(columns, rows) for rows in ROWS}
        servers: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            for name in names:
                port = free_port()
                servers[name] = (start(name, model, port, workers, tmp), port)
            for rows in ROWS:
                for concurrency in CONCURRENCY:
                    for _ in range(rounds):
                        for name in names:
                            port = servers[name][1]
                            lat, errors, elapsed = asyncio.run(
                                measure(port, bodies[rows], concurrency, seconds)
                            )
                            cell = Cell(
                                name, concurrency, rows, len(lat), len(errors), elapsed, lat
                            )
                            key = (name, concurrency, rows)
                            p99s.setdefault(key, []).append(cell.pct(0.99))
                            if key not in best or cell.rps > best[key].rps:
                                best[key] = cell
                    for name in names:
                        cell = best[(name, concurrency, rows)]
                        cell.p99_rounds = statistics.median(p99s[(name, concurrency, rows)])
                        print(
                            f"{name:18} c={concurrency:<3} rows={rows:<4} {cell.rps:8.0f} req/s "
                            f"p50 {cell.pct(0.5):6.2f} ms  p99 {cell.p99_rounds:6.2f} ms  "
                            f"errors {cell.errors}",
                            flush=True,
                        )
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    return [best[(n, c, r)] for n in names for r in ROWS for c in CONCURRENCY]


def report(cells: list[Cell], seconds: float, workers: int, rounds: int) -> str:
    def get(server: str, c: int, rows: int) -> Cell:
        return next(x for x in cells if (x.server, x.concurrency, x.rows) == (server, c, rows))

    on, off, ml = "ours, capture on", "ours, capture off", "mlflow"
    lines = [
        f"`benchmarks/serve_vs_mlflow.py --seconds {seconds:g} --workers {workers} "
        f"--rounds {rounds}` on "
        f"{os.cpu_count()} shared CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "Same iris LogisticRegression MLflow model, uvicorn with the same worker count, "
        "keep-alive TCP_NODELAY load generator on 127.0.0.1 (asyncio), "
        f"{seconds:g} s per cell and round after 0.3 s of warm-up on the same connections; "
        f"req/s and p50 are the server's best of {rounds} rounds taken in turns with the other "
        "servers (the machine is shared, so the best round is the least disturbed one), p99 is "
        f"the median of the {rounds} rounds' p99s. "
        "mlflow: `mlflow models serve --env-manager local`.",
        "",
        "| server | concurrency | rows/request | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        lines.append(
            f"| {cell.server} | {cell.concurrency} | {cell.rows} | {cell.rps:.0f} | "
            f"{cell.pct(0.5):.2f} | {cell.p99_rounds:.2f} | {cell.errors} |"
        )
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for rows in ROWS:
        ratio = get(on, 8, rows).rps / get(ml, 8, rows).rps
        lines.append(
            f"| ours (capture on) / mlflow req/s, c=8, {rows} rows >= 1.5 | {ratio:.2f}x | "
            f"{'yes' if ratio >= 1.5 else 'NO'} |"
        )
    for rows in ROWS:
        ratio = get(on, 8, rows).rps / get(off, 8, rows).rps
        lines.append(
            f"| capture on / off req/s, c=8, {rows} rows >= 0.9 | {ratio:.2f} | "
            f"{'yes' if ratio >= 0.9 else 'NO'} |"
        )
    worse = [
        f"c={c} {r} rows"
        for c in CONCURRENCY
        for r in ROWS
        if get(on, c, r).p99_rounds > get(ml, c, r).p99_rounds
    ]
    lines.append(
        f"| p99 (capture on) no worse than mlflow's in every cell | "
        f"{'worse in ' + ', '.join(worse) if worse else 'all cells'} | "
        f"{'NO' if worse else 'yes'} |"
    )
    floor = max(get(s, 1, r).pct(0.5) for s in (on, off) for r in ROWS)
    lines.append(
        f"| no ~40 ms floor at concurrency 1 (max p50 of ours) | {floor:.2f} ms | "
        f"{'yes' if floor < 20 else 'NO'} |"
    )
    p50s = {r: statistics.median(get(on, 1, r).latencies) * 1000 for r in ROWS}
    ml50 = {r: statistics.median(get(ml, 1, r).latencies) * 1000 for r in ROWS}
    lines += [
        "",
        "At concurrency 1 the median round trip is "
        + ", ".join(f"{p50s[r]:.2f} ms ({r} rows)" for r in ROWS)
        + " for ours with capture, vs "
        + ", ".join(f"{ml50[r]:.2f} ms" for r in ROWS)
        + " for mlflow.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="Seconds per cell and round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per cell; best is kept.")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for each server.")
    parser.add_argument("--output", type=Path, default=HERE / "BENCHMARKS.md")
    args = parser.parse_args()
    from _sections import write_section

    cells = run(args.seconds, args.workers, args.rounds)
    body = report(cells, args.seconds, args.workers, args.rounds)
    write_section(HEADING, body, args.output)
    print(body)


if __name__ == "__main__":
    main()
