"""Load on the webhook receiver: signed GitHub deliveries at a steady rate, then forged ones.

A real Prefect server (its own PREFECT_HOME), the `register` deployment applied to it (no
runner: the runs wait as Scheduled, so only starting them is measured) and `mlops webhook
serve` as a process. Requests go out over 64 keep-alive connections, each at its slot (open loop;
a request whose connection still waits for an answer goes as soon as that answer is in), and
latency counts from the slot. Then:

0. RATE deliveries per second for SECONDS seconds of an event no route maps (`issues`): the
   receiver and its replay store alone (signature, claim, 202 `ignored`), no Prefect call.
1. The same of valid `push` deliveries: every answer must be 202, the p99 latency <= 100 ms,
   and the Prefect server must hold exactly one flow run per delivery.
2. BAD requests with wrong signatures: every answer 401, and no new flow run.

The Prefect server keeps its database in sqlite (its default) or, with `--prefect-db postgres`,
in a throwaway PostgreSQL cluster (what a team's server should use: sqlite serialises writers,
and concurrent flow run creations wait on its lock for seconds). The receiver's replay store is
the default sqlite ledger in its MLOPS_HOME either way.

Prints the figures; it writes nothing to BENCHMARKS.md.

    python benchmarks/webhook_load.py [--rate 200] [--seconds 10] [--bad 1000]
                                      [--prefect-db sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from mlops_pipeline.serving.contract import free_port
from mlops_pipeline.webhooks.signatures import github_signature

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.servers: the throwaway PostgreSQL cluster
BIN = Path(sys.executable).parent
P99_TARGET_MS = 100.0
MAPPING = {
    "github": {
        "push": [
            {
                "deployment": "register-model/register",
                "parameters": {"source": "/srv/{{ payload.after }}", "name": "load"},
            }
        ]
    }
}


def start(command: list[str], env: dict[str, str], log: Path, health: str) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited; see {log}")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{health} did not answer within 180 s; see {log}")


def apply_deployment(api: str, home: Path) -> None:
    """The served `register` deployment on API; `home` is this run's MLOPS_HOME (its ledger
    holds the spec schedules served_deployments reads)."""
    from unittest import mock

    from mlops_pipeline.flows.deployments import ServeSettings, served_deployments
    from mlops_pipeline.settings import get_settings
    from prefect.settings import PREFECT_API_URL, temporary_settings

    get_settings.cache_clear()
    with (
        mock.patch.dict(os.environ, {"MLOPS_HOME": str(home)}),
        temporary_settings({PREFECT_API_URL: api}),
    ):
        for deployment in served_deployments(ServeSettings(monitored_deployment=None)):
            if deployment.name == "register":
                deployment.apply()
    get_settings.cache_clear()


def delivery_tags(api: str) -> collections.Counter:
    """How many flow runs carry each delivery tag (webhook:github runs)."""
    counts: collections.Counter = collections.Counter()
    offset = 0
    while True:
        page = httpx.post(
            f"{api}/flow_runs/filter",
            json={
                "flow_runs": {"tags": {"all_": ["webhook:github"]}},
                "limit": 200,
                "offset": offset,
            },
            timeout=60,
        ).json()
        for run in page:
            counts.update(t for t in run["tags"] if t.startswith("delivery:"))
        if len(page) < 200:
            return counts
        offset += 200


def request(port: int, secret: str, delivery: str, event: str, forged: bool) -> bytes:
    """The raw HTTP/1.1 request GitHub would send for one delivery."""
    body = json.dumps(
        {"ref": "refs/heads/main", "after": delivery, "repository": {"name": "load"}}
    ).encode()
    signature = github_signature("not-the-secret" if forged else secret, body)
    head = (
        f"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\n"
        f"X-Hub-Signature-256: {signature}\r\n\r\n"
    )
    return head.encode() + body


async def lane(port: int, requests: list[tuple[float, bytes, str]], out: list) -> None:
    """One keep-alive connection sending its requests, each at its slot (or as soon as the
    previous answer is in); latency counts from the slot, so a slow answer also delays the
    requests queued behind it in the figures (no coordinated omission). A connection the
    server closed while idle (keep-alive timeout) is opened again."""
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(raw: bytes) -> int:
        nonlocal connection
        if connection is None:
            connection = await asyncio.open_connection("127.0.0.1", port)
            connection[1].get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        reader, writer = connection
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return int(head[9:12])

    try:
        for slot, raw, delivery in requests:
            await asyncio.sleep(max(0.0, slot - time.perf_counter()))
            try:
                status = await exchange(raw)
            except (asyncio.IncompleteReadError, ConnectionError):
                connection = None  # closed while idle: the request was not read, send it again
                status = await exchange(raw)
            out.append((status, time.perf_counter() - slot, delivery))
    finally:
        if connection is not None:
            connection[1].close()


async def paced(
    port: int, secret: str, rate: float, count: int, event: str, forged: bool, lanes: int = 64
) -> list[tuple[int, float, str]]:
    """COUNT deliveries at RATE per second over LANES connections: (status, latency s,
    delivery id) each."""
    start = time.perf_counter() + 0.5
    plan: list[list[tuple[float, bytes, str]]] = [[] for _ in range(lanes)]
    for i in range(count):
        delivery = str(uuid.uuid4())
        raw = request(port, secret, delivery, event, forged)
        plan[i % lanes].append((start + i / rate, raw, delivery))
    out: list[tuple[int, float, str]] = []
    await asyncio.gather(*(lane(port, requests, out) for requests in plan))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(title: str, results: list[tuple[int, float, str]], rate: float):
    statuses = collections.Counter(status for status, _, _ in results)
    ms = [latency * 1000 for _, latency, _ in results]
    p99 = percentile(ms, 0.99)
    print(f"\n{title}: {len(results)} deliveries offered at {rate:.0f}/s")
    print(f"  answers: {dict(statuses)}")
    print(
        f"  latency ms from each request's slot: p50 {percentile(ms, 0.5):.1f}, "
        f"p90 {percentile(ms, 0.9):.1f}, p99 {p99:.1f}, max {max(ms):.1f}"
    )
    return statuses, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bad", type=int, default=1000)
    parser.add_argument("--prefect-db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        database: dict[str, str] = {}
        if args.prefect_db == "postgres":
            from tests.servers import postgres_cluster

            uri = stack.enter_context(postgres_cluster())
            database["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = uri.replace("psycopg2", "asyncpg")
        run(args, database)


def run(args: argparse.Namespace, database: dict[str, str]) -> None:

    tmp = Path(tempfile.mkdtemp(prefix="webhook-load-"))
    secret = secrets.token_hex(32)
    prefect_port, receiver_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "PREFECT_"))}
    prefect = start(
        [
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(prefect_port),
        ],
        {
            **base,
            **database,
            "PREFECT_HOME": str(tmp / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        },
        tmp / "prefect.log",
        f"{api}/health",
    )
    receiver = None
    try:
        apply_deployment(api, tmp / "home")
        (tmp / "mapping.json").write_text(json.dumps(MAPPING))
        receiver = start(
            [str(BIN / "mlops"), "webhook", "serve", "--port", str(receiver_port)],
            {
                **base,
                "PREFECT_API_URL": api,
                "PREFECT_HOME": str(tmp / "client"),
                "MLOPS_HOME": str(tmp / "home"),
                "MLOPS_GITHUB_WEBHOOK_SECRET": secret,
                "MLOPS_WEBHOOK_MAPPING_FILE": str(tmp / "mapping.json"),
            },
            tmp / "receiver.log",
            f"http://127.0.0.1:{receiver_port}/health",
        )
        print(
            f"receiver http://127.0.0.1:{receiver_port}, Prefect {api} "
            f"({args.prefect_db}), logs in {tmp}"
        )

        total = int(args.rate * args.seconds)
        # the replay store and the receiver alone: events no route maps (claimed, no run)
        ignored = asyncio.run(paced(receiver_port, secret, args.rate, total, "issues", False))
        report("ignored (no Prefect call)", ignored, args.rate)

        results = asyncio.run(paced(receiver_port, secret, args.rate, total, "push", False))
        statuses, p99 = report("valid push -> flow run", results, args.rate)
        counts = delivery_tags(api)
        accepted = {f"delivery:{d}" for status, _, d in results if status == 202}
        refused = {f"delivery:{d}" for status, _, d in results if status != 202}
        print(
            f"  flow runs: {sum(counts.values())} for {len(counts)} deliveries; runs per "
            f"accepted delivery: {dict(collections.Counter(counts[t] for t in accepted))}; "
            f"refused deliveries (503) whose run was created anyway (a retry gets that run "
            f"back by its idempotency key): {sum(1 for t in refused if counts[t])}"
        )

        before = sum(counts.values())
        bad = asyncio.run(paced(receiver_port, secret, args.rate, args.bad, "push", True))
        bad_statuses = collections.Counter(status for status, _, _ in bad)
        after = sum(delivery_tags(api).values())
        print(
            f"\nforged: {args.bad} requests, answers {dict(bad_statuses)}, "
            f"new flow runs {after - before}"
        )

        checks = {
            "all valid answered 202": statuses == {202: len(results)},
            f"p99 <= {P99_TARGET_MS:.0f} ms": p99 <= P99_TARGET_MS,
            "exactly one run per delivery": len(accepted) == len(results)
            and all(counts[t] == 1 for t in accepted),
            "never two runs for one delivery": max(counts.values(), default=1) == 1,
            "forged: all 401, 0 runs": bad_statuses == {401: args.bad} and after == before,
        }
        print()
        for check, ok in checks.items():
            print(f"  {'PASS' if ok else 'FAIL'}  {check}")
    finally:
        for process in (receiver, prefect):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
