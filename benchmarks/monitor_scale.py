"""Monitoring at volume: 10 million captured rows in 200 partitions, three ways.

The window is summarised one capture file per task (`monitoring.partitions`, the path
`mlops monitor --task-runner` takes) and the summaries merged into the verdict:
- single process: every partition in turn, no pool;
- thread pool: `--task-runner threads` (4 threads);
- Dask: a `LocalCluster` of 2 worker processes (`--task-runner dask:ADDRESS`).
Each way runs in a fresh subprocess, so the driver's peak RSS (ru_maxrss) is its own; each Dask
worker reports its own peak RSS through `client.run`. Bounds: peak RSS <= 2 GB per process,
and the three verdicts (overall status and every column's status and flagging tests) equal.

The capture files are synthetic, in the contract's layout (model=/version=/date=/part-*.parquet,
the metadata columns the service writes), generated once and cached in the temp dir: 4 numeric
features, one categorical, the prediction; `f_shift` moves by 0.2 sd in the second half of the
window, so the verdict is "drift" on that column only. Reference: 20k rows from the first half's
distribution.

    python benchmarks/monitor_scale.py [--rows 10000000] [--partitions 200] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL, VERSION = "scale", "1"
RSS_BOUND_MB = 2048

CHILD = r"""
import json, resource, sys, time
import pandas as pd
from mlops_pipeline.monitoring import partitions
from mlops_pipeline.monitoring.drift_settings import DriftConfig
from mlops_pipeline.tasks.capture import map_partitions

root, mode = sys.argv[1], sys.argv[2]
reference = pd.read_parquet(f"{root}/reference.parquet")
relpaths = json.loads(open(f"{root}/relpaths.json").read())
features = {"f_normal": "numeric", "f_skewed": "numeric", "f_shift": "numeric",
            "f_int": "numeric", "f_city": "categorical", "prediction": "numeric"}
columns = list(features)
config = DriftConfig()
cluster = client = None
runner = None
started = time.perf_counter()
if mode == "dask":
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    # workers import the summary code once before the clock starts, as a long-lived cluster has
    client.run(lambda: __import__("mlops_pipeline.tasks.capture"))
    runner = f"dask:{cluster.scheduler_address}"
elif mode == "threads":
    runner = "threads"
startup = time.perf_counter() - started
t0 = time.perf_counter()
plans = partitions.plan_columns(reference, columns, ["prediction"], config, None)
merged = map_partitions(runner, f"{root}/capture", relpaths, features, plans)
verdict = partitions.verdict_from_summary(reference, plans, merged, config)
wall = time.perf_counter() - t0
workers = []
if client is not None:
    def peak():
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = sorted(client.run(peak).values())
    client.close(); cluster.close()
print(json.dumps({
    "mode": mode, "wall_s": wall, "startup_s": startup,
    "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_rss_mb": workers, "rows_scored": merged.rows_scored, "files": len(merged.files),
    "verdict": {"status": verdict.status, "drifted": verdict.drifted,
                "columns": {f.name: [f.status, f.drifted_by] for f in verdict.features}},
}))
"""


def generate(root: Path, rows: int, parts: int) -> None:
    """Write the synthetic window (once: a finished cache has relpaths.json)."""
    import datetime as dt

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (root / "relpaths.json").exists():
        return
    per = rows // parts
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

    def features(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
        return {
            "f_normal": rng.normal(0.0, 1.0, n),
            "f_skewed": rng.lognormal(0.0, 0.8, n),
            "f_shift": rng.normal(shift, 1.0, n),
            "f_int": rng.poisson(30, n).astype("int64"),
            "f_city": rng.choice(np.array(["north", "south", "east", "west"]), n),
        }

    rng = np.random.default_rng(0)
    reference = pd.DataFrame(features(rng, 20_000, 0.0))
    reference["prediction"] = reference["f_normal"] + reference["f_shift"]
    root.mkdir(parents=True, exist_ok=True)
    reference.to_parquet(root / "reference.parquet", index=False)
    relpaths = []
    for part in range(parts):
        at = start + dt.timedelta(minutes=part)
        data = features(rng, per, 0.2 if part >= parts // 2 else 0.0)
        data["prediction"] = data["f_normal"] + data["f_shift"]
        ids = np.char.add(f"p{part}-", np.arange(per).astype(str))
        table = pa.table(
            {
                **{name: pa.array(values) for name, values in data.items()},
                "_request_id": pa.array(ids, pa.string()),
                "_row": pa.array(np.zeros(per, dtype="int64")),
                "_ts": pa.array(np.full(per, at), pa.timestamp("us", tz="UTC")),
                "_model_name": pa.array(np.full(per, MODEL), pa.string()),
                "_model_version": pa.array(np.full(per, VERSION), pa.string()),
                "_status": pa.array(np.full(per, 200, dtype="int32")),
                "_error_code": pa.nulls(per, pa.string()),
                "_latency_ms": pa.array(np.full(per, 2.5)),
            }
        )
        rel = (
            f"model={MODEL}/version={VERSION}/date={at:%Y-%m-%d}/"
            f"part-{at:%Y%m%dT%H%M%S%f}Z-{part:08x}.parquet"
        )
        (root / "capture" / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "capture" / rel)
        relpaths.append(rel)
    (root / "relpaths.json").write_text(json.dumps(relpaths))


def run(root: Path, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), mode], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--partitions", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()

    root = Path(tempfile.gettempdir()) / f"mlops-monitor-scale-{args.rows}-{args.partitions}"
    t0 = time.perf_counter()
    generate(root, args.rows, args.partitions)
    print(f"window ready in {root} ({time.perf_counter() - t0:.0f} s)", flush=True)
    results = []
    for mode in ("single", "threads", "dask"):
        load = os.getloadavg()[0]
        result = run(root, mode) | {"load": load}
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "verdict"}), flush=True)

    equal = all(r["verdict"] == results[0]["verdict"] for r in results)
    peaks = [r["driver_rss_mb"] for r in results] + [w for r in results for w in r["worker_rss_mb"]]
    within = max(peaks) <= RSS_BOUND_MB
    rows = [
        "| way | wall (s) | driver peak RSS (MB) | worker peak RSS (MB) | load avg at start |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        workers = ", ".join(f"{w:.0f}" for w in r["worker_rss_mb"]) or "-"
        startup = (
            f" (+{r['startup_s']:.1f} s cluster start, imports)" if r["mode"] == "dask" else ""
        )
        rows.append(
            f"| {r['mode']} | {r['wall_s']:.1f}{startup} | {r['driver_rss_mb']:.0f} | "
            f"{workers} | {r['load']:.1f} |"
        )
    verdict = results[0]["verdict"]
    body = "\n".join(
        [
            f"{results[0]['rows_scored']:,} captured rows in {results[0]['files']} Parquet "
            f"partitions, {os.cpu_count()} cores shared with other work (load average beside "
            "each row); `python benchmarks/monitor_scale.py`.",
            "",
            *rows,
            "",
            f"Verdicts equal: {'yes' if equal else 'NO'} (status {verdict['status']}, drifted "
            f"{verdict['drifted']}). Peak RSS bound {RSS_BOUND_MB} MB per process: "
            f"{'met' if within else 'NOT met'} (largest {max(peaks):.0f} MB).",
        ]
    )
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _sections import write_section

        write_section("Monitoring at volume (partitions, thread pool, Dask)", body)
    return 0 if equal and within else 1


if __name__ == "__main__":
    sys.exit(main())
