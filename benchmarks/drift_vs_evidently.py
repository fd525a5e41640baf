"""Validation + drift on 1M current rows x 24 features vs 100k reference rows, against Evidently.

The data is issue 8's case: 20 numeric columns of four shapes, five of them shifted by 0.1
reference standard deviations (material: both tools should flag them), and four categoricals, one
moving from 0.40/0.10 to 0.35/0.15 on two of its four levels. Each side's flagged columns are
reported: ours must be exactly the shifted ones.

Ours: the GX suite a registration stores (built from the reference profile beforehand) is run
on the current frame (monitoring.validation.validate_frame), then
monitoring.drift.compare_frames tests every column. Evidently:
`Report([DataDriftPreset()]).run(current, reference)` on the same Parquet files. Evidently
0.7 does not import with pandas 3, so its half runs in its own venv
(benchmarks/.out/evidently-venv, created on first use with pandas<3). Each half runs in a fresh
subprocess so peak RSS is its own; the halves alternate (ours, Evidently, ours, ...) so machine
noise hits both alike, and we report medians. Parquet reading is timed separately and excluded
from both compute times.

    python benchmarks/drift_vs_evidently.py [--runs 2] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / ".out" / "drift-bench"
EVIDENTLY_VENV = HERE / ".out" / "evidently-venv"
EVIDENTLY_REQUIREMENTS = ["evidently>=0.7,<0.8", "pandas>=2.2,<3", "pyarrow>=17"]
N_NUMERIC, N_CATEGORICAL = 20, 4
SHIFT_SD = 0.1
SHIFTED = ["cat_0", "num_00", "num_05", "num_10", "num_15", "num_16"]

OURS = r"""
import json, resource, sys, time
import pandas as pd
t0 = time.perf_counter()
reference = pd.read_parquet(sys.argv[1]); current = pd.read_parquet(sys.argv[2])
read = time.perf_counter() - t0
from mlops_pipeline.monitoring.drift import compare_frames
from mlops_pipeline.monitoring.profile import profile_frame
from mlops_pipeline.monitoring.validation import build_expectation_suite, validate_frame
suite = build_expectation_suite(profile_frame(reference), "bench")  # done at registration
t0 = time.perf_counter()
validation = validate_frame(current, suite)
gx = time.perf_counter() - t0
t0 = time.perf_counter()
verdict = compare_frames(reference, current)
drift = time.perf_counter() - t0
print(json.dumps({"read": read, "gx": gx, "drift": drift, "total": gx + drift,
                  "drifted": sorted(verdict["drifted"]),
                  "failed_expectations": validation["failed"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

EVIDENTLY = r"""
import json, re, resource, sys, time
import pandas as pd
t0 = time.perf_counter()
reference = pd.read_parquet(sys.argv[1]); current = pd.read_parquet(sys.argv[2])
read = time.perf_counter() - t0
from evidently import Report
from evidently.presets import DataDriftPreset
t0 = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current, reference)
result = snapshot.dict()
total = time.perf_counter() - t0
drifted = []
for metric in result["metrics"]:
    found = re.match(r"ValueDrift\(column=(.+?),method=(.+?),threshold=([^)]+)\)",
                     str(metric.get("metric_name", "")))
    if found:
        column, method, threshold = found.group(1), found.group(2), float(found.group(3))
        value = float(metric["value"])
        if (value < threshold) if "p_value" in method else (value >= threshold):
            drifted.append(column)
print(json.dumps({"read": read, "total": total, "evidently": __import__("evidently").__version__,
                  "metrics": len(result["metrics"]), "drifted": sorted(drifted),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_data(rows: int, reference_rows: int) -> tuple[Path, Path]:
    """Reference and current Parquet files; SHIFTED columns drift in the current data."""
    import numpy as np
    import pandas as pd

    OUT.mkdir(parents=True, exist_ok=True)
    reference_path = OUT / f"reference-{reference_rows}-issue8.parquet"
    current_path = OUT / f"current-{rows}-issue8.parquet"
    if reference_path.exists() and current_path.exists():
        return reference_path, current_path

    def frame(n: int, seed: int, drifted: bool) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        columns = {}
        for i in range(N_NUMERIC):
            name = f"num_{i:02d}"
            shift = SHIFT_SD if drifted and name in SHIFTED else 0.0
            if i % 4 == 0:
                columns[name] = rng.normal(shift, 1.0, n)
            elif i % 4 == 1:
                columns[name] = rng.lognormal(0.0, 0.5, n) + shift * 0.53
            elif i % 4 == 2:
                columns[name] = rng.gamma(2.0, 3.0, n) + shift * 4.24
            else:
                columns[name] = rng.uniform(0.0, 100.0, n) + shift * 28.9
        for j in range(N_CATEGORICAL):
            name = f"cat_{j}"
            levels = [f"{name}_v{k}" for k in range(4 + 5 * j)]
            weights = np.linspace(1.0, 2.0, len(levels))
            if j == 0:
                weights = np.array(
                    [0.35, 0.15, 0.25, 0.25] if drifted else [0.40, 0.10, 0.25, 0.25]
                )
            columns[name] = rng.choice(levels, n, p=weights / weights.sum())
        return pd.DataFrame(columns)

    frame(reference_rows, 1, False).to_parquet(reference_path, index=False)
    frame(rows, 2, True).to_parquet(current_path, index=False)
    return reference_path, current_path


def evidently_python() -> Path:
    """The Python of Evidently's own venv, created (pandas<3) when missing."""
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *EVIDENTLY_REQUIREMENTS], check=True
        )
    return python


def run_half(python: Path, code: str, reference: Path, current: Path) -> dict:
    completed = subprocess.run(
        [str(python), "-c", code, str(reference), str(current)],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode:
        sys.exit(f"benchmark half failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="Alternating runs of each half.")
    parser.add_argument("--rows", type=int, default=1_000_000, help="Current rows.")
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()

    reference, current = make_data(args.rows, args.reference_rows)
    evidently = evidently_python()
    ours, theirs = [], []
    for run in range(args.runs):
        ours.append(run_half(Path(sys.executable), OURS, reference, current))
        theirs.append(run_half(evidently, EVIDENTLY, reference, current))
        print(
            f"run {run + 1}: ours {ours[-1]['total']:.2f} s (GX {ours[-1]['gx']:.2f} s, drift "
            f"{ours[-1]['drift']:.2f} s, {ours[-1]['rss_mb']:.0f} MB) | Evidently "
            f"{theirs[-1]['total']:.2f} s ({theirs[-1]['rss_mb']:.0f} MB)",
            flush=True,
        )

    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    total, gx, drift = median(ours, "total"), median(ours, "gx"), median(ours, "drift")
    evidently_total = median(theirs, "total")
    rss = max(r["rss_mb"] for r in ours)
    evidently_rss = max(r["rss_mb"] for r in theirs)
    ratio = evidently_total / total
    per_run = ", ".join(
        f"{a['total']:.2f} / {b['total']:.1f} s" for a, b in zip(ours, theirs, strict=True)
    )
    checks = {
        "validation + drift <= 10 s": total <= 10,
        ">= 5x faster than Evidently": ratio >= 5,
        "peak RSS <= 2 GB": rss <= 2048,
        "ours flagged exactly the shifted columns": ours[0]["drifted"] == sorted(SHIFTED),
    }
    body = "\n".join(
        [
            f"`python benchmarks/drift_vs_evidently.py --runs {args.runs}` on "
            f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}, "
            f"Evidently {theirs[0]['evidently']}. {args.rows:,} current x {args.reference_rows:,} "
            f"reference rows, {N_NUMERIC} numeric + {N_CATEGORICAL} categorical columns, "
            f"{len(SHIFTED)} of them shifted ({SHIFT_SD} sd on five numeric, 0.40/0.10 -> "
            f"0.35/0.15 on a categorical). Medians of {args.runs} alternating runs, each in a "
            "fresh process; Parquet reading excluded from both sides.",
            "",
            f"Flagged: ours {ours[0]['drifted']}; Evidently {theirs[0]['drifted']} "
            f"(shifted: {SHIFTED}).",
            "",
            "| | time (s) | peak RSS (MB) |",
            "| --- | ---: | ---: |",
            f"| ours: GX validation ({ours[0]['failed_expectations']} failed expectations) | "
            f"{gx:.2f} | |",
            f"| ours: drift (KS + PSI + W1 / chi2 + PSI, null rates, Holm) | {drift:.2f} | |",
            f"| **ours: validation + drift** | **{total:.2f}** | {rss:.0f} |",
            f"| Evidently DataDriftPreset | {evidently_total:.2f} | {evidently_rss:.0f} |",
            "",
            f"Evidently / ours: **{ratio:.1f}x** (drift alone: {evidently_total / drift:.1f}x). "
            f"Reading the two Parquet files: {median(ours, 'read'):.2f} s. Per run, ours / "
            f"Evidently: {per_run} (load average {os.getloadavg()[0]:.1f} on this shared "
            "machine at the end).",
            "",
            *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()],
        ]
    )
    print(body)
    if not args.no_write:
        from _sections import write_section

        write_section("Drift and validation vs Evidently", body)
    return 0 if all(checks.values()) else 1


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"benchmark took {time.perf_counter() - started:.0f} s")
    sys.exit(code)
