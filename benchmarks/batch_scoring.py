"""Batch scoring at volume: `mlops score-batch` vs whole-frame pyfunc predict vs `mlflow models
predict --env-manager local`, rows/s and peak RSS of each, in one run.

One registered model (sklearn, 20 numeric features) scores the same synthetic rows three ways,
each in a fresh process whose peak RSS the kernel reports (wait4 ru_maxrss):

* score-batch: the real CLI, Parquet in, Parquet out (all input columns + prediction + model +
  time), wall time of the whole command;
* whole frame: `pd.read_parquet` then `mlflow.pyfunc.load_model(...).predict(frame)`; rows/s of
  predict alone (the frame already in memory) and of read + predict;
* mlflow CLI: `mlflow models predict -t csv` on the same rows as CSV (it reads CSV or JSON only).

score-batch and the whole-frame predict alternate `--repeats` times (default 3) and the median
of each is reported, as the 2-core box is shared. Before every measured process the page cache
is flushed (`os.sync`): otherwise the gigabytes of input just written (and the previous run's
output) are written back to disk while the next process runs, throttling its writes.

Then score-batch again on `--rss-rows` (default 2x) rows, for the claim that its memory does not
grow with the input. Goals (issue 14): score-batch peak RSS <= 1 GB whatever the size, and
rows/s >= 0.8x the whole-frame predict.

    python benchmarks/batch_scoring.py --rows 10000000            # the full run (~30 min)
    python benchmarks/batch_scoring.py --rows 200000 --skip-mlflow-cli   # development
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
FEATURES = [f"f{i:02d}" for i in range(20)]

WHOLE_FRAME = """
import json, sys, time
import mlflow, pandas as pd
start = time.perf_counter()
frame = pd.read_parquet(sys.argv[1])
read = time.perf_counter() - start
model = mlflow.pyfunc.load_model(sys.argv[2])
start = time.perf_counter()
predictions = model.predict(frame)
predict = time.perf_counter() - start
print(json.dumps({"read": read, "predict": predict, "rows": len(predictions)}))
"""


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of a child process, from the kernel's rusage."""
    os.sync()  # no other run's writes flushed to disk during this one
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{command[:3]} failed: {err.read().decode()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def train_and_register(work: Path, env: dict[str, str], model_kind: str) -> str:
    """Fit a model on 50k synthetic rows and register it as `bench` version 1."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50_000, len(FEATURES))), columns=FEATURES)
    target = (frame.iloc[:, :5].sum(axis=1) + rng.normal(size=len(frame)) > 0).astype(int)
    if model_kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(max_iter=100).fit(frame, target)
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=500).fit(frame, target)
    path = work / "model"
    mlflow.sklearn.save_model(model, path, signature=infer_signature(frame, target))
    subprocess.run(
        [str(BIN / "mlops"), "register", str(path), "--name", "bench"],
        env=env,
        check=True,
        capture_output=True,
    )
    return "models:/bench/1"


def write_input(path: Path, rows: int, csv_path: Path | None = None) -> None:
    """ROWS synthetic rows as Parquet (row groups of 1M), and optionally the same as CSV."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    step = 1_000_000
    schema = pa.schema([(name, pa.float64()) for name in FEATURES])
    csv_writer = None
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, step):
            n = min(step, rows - start)
            table = pa.table({name: rng.normal(size=n) for name in FEATURES}, schema=schema)
            writer.write_table(table)
            if csv_path is not None:
                if csv_writer is None:
                    csv_writer = pacsv.CSVWriter(str(csv_path), schema)
                csv_writer.write_table(table)
    if csv_writer is not None:
        csv_writer.close()


def score_batch(model_uri: str, source: Path, out: Path, env: dict, chunk_rows: int) -> dict:
    wall, rss, stdout = run_measured(
        [str(BIN / "mlops"), "score-batch", model_uri, "--input", str(source),
         "--output", str(out), "--chunk-rows", str(chunk_rows), "--json"],
        env,
    )  # fmt: skip
    result = json.loads(stdout)
    assert result["rows_scored"] > 0, result
    run = dt.datetime.fromisoformat(result["finished_at"]) - dt.datetime.fromisoformat(
        result["started_at"]
    )
    # seconds: the whole command; run_seconds: scoring only, after start-up and model load
    return {
        "seconds": wall,
        "run_seconds": run.total_seconds(),
        "rss_mb": rss,
        "rows": result["rows_scored"],
    }


def median_run(runs: list[dict], key: str) -> dict:
    """The run with the median KEY, with every run's KEY and the highest peak RSS beside it."""
    ordered = sorted(runs, key=lambda r: r[key])
    return {
        **ordered[len(ordered) // 2],
        f"all_{key}": [round(r[key], 2) for r in runs],
        "rss_mb": max(r["rss_mb"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rss-rows", type=int, default=None, help="default: 2 x --rows")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--model", choices=["logistic", "hgb"], default="logistic")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs; median kept")
    parser.add_argument("--skip-mlflow-cli", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    args = parser.parse_args()
    rss_rows = args.rss_rows or 2 * args.rows

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "MLOPS_HOME": str(work / "home"),
            "MLOPS_ORCHESTRATE": "never",
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'home' / 'mlflow.db'}",
        }
        env.pop("PREFECT_API_URL", None)
        os.environ.update({k: env[k] for k in ("MLOPS_HOME", "MLFLOW_TRACKING_URI")})
        model_uri = train_and_register(work, env, args.model)
        data = work / "input.parquet"
        csv = None if args.skip_mlflow_cli else work / "input.csv"
        write_input(data, args.rows, csv)

        results: dict[str, dict] = {}
        batch_runs, frame_runs = [], []
        for i in range(args.repeats):
            out = work / f"out-{i}"
            batch_runs.append(score_batch(model_uri, data, out, env, args.chunk_rows))
            shutil.rmtree(out)
            wall, rss, stdout = run_measured(
                [sys.executable, "-c", WHOLE_FRAME, str(data), model_uri], env
            )
            frame = json.loads(stdout)
            frame_runs.append({
                "seconds": frame["predict"], "rss_mb": rss, "rows": frame["rows"],
                "read_seconds": frame["read"],
            })  # fmt: skip
        results["score-batch"] = median_run(batch_runs, "run_seconds")
        results["whole-frame predict"] = median_run(frame_runs, "seconds")
        if csv is not None:
            wall, rss, _ = run_measured(
                [str(BIN / "mlflow"), "models", "predict", "-m", model_uri, "-i", str(csv),
                 "-t", "csv", "-o", str(work / "mlflow-out.json"), "--env-manager", "local"],
                env,
            )  # fmt: skip
            results["mlflow models predict"] = {"seconds": wall, "rss_mb": rss, "rows": args.rows}
            csv.unlink()
        # the same input repeated: score-batch's memory at twice the size
        big = work / "big"
        big.mkdir()
        copies = max(1, round(rss_rows / args.rows))
        for i in range(copies):
            os.link(data, big / f"part-{i}.parquet")
        results[f"score-batch x{copies}"] = score_batch(
            model_uri, big, work / "out-big", env, args.chunk_rows
        )

    whole = results["whole-frame predict"]
    whole_rate = whole["rows"] / whole["seconds"]
    whole_read_rate = whole["rows"] / (whole["seconds"] + whole["read_seconds"])
    print(f"{args.rows:,} rows x {len(FEATURES)} features, model {args.model}, chunks of "
          f"{args.chunk_rows:,} rows, median of {args.repeats} alternating runs")  # fmt: skip
    print(f"{'method':<26}{'rows':>12}{'seconds':>10}{'rows/s':>14}{'peak RSS MB':>13}")
    print("(score-batch: the whole command, start-up and model load included)")
    for name, r in results.items():
        rate = r["rows"] / r["seconds"]
        print(f"{name:<26}{r['rows']:>12,}{r['seconds']:>10.1f}{rate:>14,.0f}{r['rss_mb']:>13,.0f}")
    ours = results["score-batch"]
    for label, seconds in (("command", ours["seconds"]), ("scoring", ours["run_seconds"])):
        rate = ours["rows"] / seconds
        print(
            f"score-batch {label} ({rate:,.0f} rows/s) / whole-frame predict: "
            f"{rate / whole_rate:.2f}x; / whole-frame read + predict: {rate / whole_read_rate:.2f}x"
        )
    print(json.dumps({"rows": args.rows, "model": args.model, "results": results}))


if __name__ == "__main__":
    main()
