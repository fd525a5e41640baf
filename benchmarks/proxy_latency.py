"""The stable-port proxy's added latency: straight to the scoring service vs through the proxy
with no split, with a 10 % canary, and with a 100 % shadow.

Two scoring services (same iris model, capture off): A is the primary; B is the canary or the
shadow. Three proxies in front of A, one per case, so every case is measured in the same run:
the cases take turns in rounds of `--batch` requests at concurrency 1 over one keep-alive
TCP_NODELAY connection each, after a warm-up, until each has sent `--requests`. Added latency is
the proxy case's p50 (p99) minus the direct p50 (p99). Issue 18's goal: <= 1 ms added at p50
with no split and with a canary. The section "Proxy: canary and shadow routes" of
BENCHMARKS.md is rewritten (appended the first time); other sections are left alone.

    .venv/bin/python benchmarks/proxy_latency.py [--requests 2000] [--batch 100]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from mlops_pipeline.serving.contract import free_port
from serve_vs_mlflow import payload, save_model, start, wait_ready

HERE = Path(__file__).resolve().parent
HEADING = "Proxy: canary and shadow routes"
TOKEN = "bench-token"
CASES = ("direct", "proxy, no split", "proxy, 10 % canary", "proxy, 100 % shadow")
GOAL_MS = 1.0


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs the same body and times each answer."""

    def __init__(self, port: int, body: bytes) -> None:
        self.port = port
        self.reconnects = 0
        self._connect()
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.request = head.encode() + body

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def post(self) -> tuple[int, float]:
        """(status, seconds) of one request; a connection the server closed while it sat idle
        (uvicorn's 5 s keep-alive, while the other cases run) is reopened, as clients do."""
        started = time.perf_counter()
        self.sock.sendall(self.request)
        line = self.file.readline()
        if not line:
            self.close()
            self._connect()
            self.reconnects += 1
            started = time.perf_counter()
            self.sock.sendall(self.request)
            line = self.file.readline()
        status = int(line[9:12])
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        self.file.read(length)
        return status, time.perf_counter() - started

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def start_proxy(upstream: str, tmp: Path, name: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["MLOPS_SERVING_PROXY_TOKEN"] = TOKEN
    log = (tmp / f"proxy-{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops_pipeline.serving.proxy", "--port", str(port)]
        + ["--upstream", upstream],
        env=env,
        stdout=log,
        stderr=log,
    )
    wait_ready(f"http://127.0.0.1:{port}/-/proxy/ping", proc, timeout=60)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run(requests: int, batch: int) -> tuple[dict[str, list[float]], dict[str, int], dict]:
    """Latencies (seconds) per case, non-200 answers per case, and the proxies' own stats
    with the proxy process's CPU seconds while its case ran ("cpu")."""
    procs: list[subprocess.Popen] = []
    pids: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model, columns = save_model(tmp)
        body = payload(columns, 1)
        try:
            ports = {}
            for service in ("A", "B"):
                port = free_port()
                procs.append(start(f"ours, capture off {service}", model, port, 1, tmp))
                ports[service] = port
            a, b = (f"http://127.0.0.1:{ports[s]}" for s in ("A", "B"))
            proxies: dict[str, int] = {"direct": ports["A"]}
            for i, case in enumerate(CASES[1:], 1):
                proc, port = start_proxy(a, tmp, str(i))
                procs.append(proc)
                proxies[case] = port
                pids[case] = proc.pid
            admin = {"Authorization": f"Bearer {TOKEN}"}
            routes = {
                CASES[2]: {"canary": {"upstream": b, "percent": 10, "version": "B"}},
                CASES[3]: {"shadow": {"upstream": b, "percent": 100, "version": "B"}},
            }
            for case, route in routes.items():
                url = f"http://127.0.0.1:{proxies[case]}/-/proxy/routes"
                httpx.put(url, json=route, headers=admin, timeout=30).raise_for_status()
            conns = {case: Connection(port, body) for case, port in proxies.items()}
            for conn in conns.values():
                for _ in range(200):
                    conn.post()
            latencies: dict[str, list[float]] = {case: [] for case in CASES}
            errors = dict.fromkeys(CASES, 0)
            cpu = dict.fromkeys(CASES[1:], 0.0)
            deadline = time.monotonic() + 600
            while min(map(len, latencies.values())) < requests:
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark took more than 10 minutes")
                for case in CASES:
                    before = cpu_seconds(pids[case]) if case in pids else 0.0
                    for _ in range(min(batch, requests - len(latencies[case]))):
                        status, seconds = conns[case].post()
                        latencies[case].append(seconds)
                        errors[case] += status != 200
                    if case == CASES[3]:
                        time.sleep(0.05)  # let the shadow copies finish before the next case
                    if case in pids:
                        cpu[case] += cpu_seconds(pids[case]) - before
            for conn in conns.values():
                conn.close()
            stats = {
                case: httpx.get(
                    f"http://127.0.0.1:{proxies[case]}/-/proxy/stats?window=3600",
                    headers=admin,
                    timeout=10,
                ).json()["stats"]
                for case in CASES[1:]
            }
            stats["cpu"] = cpu
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    return latencies, errors, stats


def report(
    latencies: dict[str, list[float]],
    errors: dict[str, int],
    stats: dict,
    requests: int,
    batch: int,
) -> str:
    direct50, direct99 = pct(latencies["direct"], 0.5), pct(latencies["direct"], 0.99)
    intro = (
        f"`python benchmarks/proxy_latency.py --requests {requests} --batch {batch}` on "
        f"{os.cpu_count()} shared CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load average {os.getloadavg()[0]:.1f} at the end. Two scoring services (iris "
        "LogisticRegression, 1 worker, capture off, 1-row JSON requests): A serves, B is the "
        "canary or the shadow; one proxy per case in front of A; concurrency 1 over one "
        f"keep-alive connection per case; the cases take turns every {batch} requests until "
        f"each has {requests}, after 200 warm-up requests each."
    )
    lines = [
        textwrap.fill(intro, 100),
        "",
        "| case | requests | errors | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| proxy CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        p50, p99 = pct(latencies[case], 0.5), pct(latencies[case], 0.99)
        added = "-" if case == "direct" else f"{p50 - direct50:+.2f}"
        added99 = "-" if case == "direct" else f"{p99 - direct99:+.2f}"
        cpu = "-" if case == "direct" else f"{stats['cpu'][case] / len(latencies[case]) * 1e3:.2f}"
        lines.append(
            f"| {case} | {len(latencies[case])} | {errors[case]} | {p50:.2f} | {p99:.2f} | "
            f"{added} | {added99} | {cpu} |"
        )
    canary = next((s for s in stats[CASES[2]] if s["route"] == "canary"), {})
    primary = next((s for s in stats[CASES[2]] if s["route"] == "primary"), {})
    shadow = next((s for s in stats[CASES[3]] if s["route"] == "shadow"), {})
    total = sum(s["total_requests"] for s in stats[CASES[2]])
    counts = (
        f"The proxies' own counts (GET /-/proxy/stats, warm-up included): the canary took "
        f"{canary.get('total_requests', 0)} of {total} requests (p50 as the proxy timed it: "
        f"{canary.get('p50_ms')} ms on B, {primary.get('p50_ms')} ms on A); the shadow answered "
        f"{shadow.get('total_requests', 0)} copies ({shadow.get('total_errors', 0)} errors, "
        f"{shadow.get('total_dropped', 0)} dropped), p50 {shadow.get('p50_ms')} ms."
    )
    lines += [
        "",
        textwrap.fill(counts, 100),
        "",
        "| goal (issue 18) | measured | met |",
        "|---|---:|:---:|",
    ]
    for case in CASES[1:3]:
        added = pct(latencies[case], 0.5) - direct50
        lines.append(
            f"| added p50 <= {GOAL_MS:g} ms, {case} | {added:.2f} ms | "
            f"{'yes' if added <= GOAL_MS else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="Measured requests per case.")
    parser.add_argument("--batch", type=int, default=100, help="Requests per case per turn.")
    parser.add_argument("--output", type=Path, default=HERE / "BENCHMARKS.md")
    args = parser.parse_args()
    from _sections import write_section

    latencies, errors, stats = run(args.requests, args.batch)
    body = report(latencies, errors, stats, args.requests, args.batch)
    write_section(HEADING, body, args.output)
    print(body)


if __name__ == "__main__":
    main()
