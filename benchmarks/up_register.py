"""A cold `mlops register` of a small pickle with reference data, with `mlops up` running and
without the stack.

With the stack up, the CLI in a new process finds the stack in the state file and hands the step
to its warm step runner, which runs it as a flow run of the stack's Prefect server (issue 10 asks
for <= 5 s); without it, the same command runs the step in-process. Each side registers into its
own MLOPS_HOME; the runs alternate (A B A B ...) after one warm-up pair, reported apart (the
first registration after `mlops up`), so machine noise hits both alike. Also timed: a cold `mlops
up`, a second (idempotent) `mlops up`, and `mlops down`. Prints the figures; it writes nothing
to BENCHMARKS.md.

    python benchmarks/up_register.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MLOPS = str(Path(sys.executable).with_name("mlops"))
TARGET_S = 5.0


def make_pickle(directory: Path) -> tuple[Path, Path]:
    """A pickled iris LogisticRegression and its training features as reference data."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    path = directory / "iris.pkl"
    path.write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(features, target)))
    features.to_csv(directory / "reference.csv", index=False)
    return path, directory / "reference.csv"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([MLOPS, *args], env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"`mlops {' '.join(args)}` failed ({done.returncode}): {done.stderr}")
    return elapsed, done.stdout


def register_runs(api: str) -> int:
    """How many `register-model` flow runs the stack's Prefect server has."""
    flows = httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()
    ids = [f["id"] for f in flows if f["name"] == "register-model"]
    body = {"flows": {"id": {"any_": ids}}} if ids else None
    return 0 if not ids else httpx.post(f"{api}/flow_runs/count", json=body, timeout=30).json()


def row(label: str, values: list[float]) -> str:
    return f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from mlops_pipeline.serving.contract import free_port

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, reference = make_pickle(root)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "PREFECT_"))}
        base["PREFECT_HOME"] = str(root / "client-prefect")  # the CLI's, not the user's
        stacked = {**base, "MLOPS_HOME": str(root / "stacked")}
        direct = {**base, "MLOPS_HOME": str(root / "direct")}
        ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port())]
        try:
            up_s, out = timed(["up", *ports, "--timeout", "300", "--json"], stacked)
            urls = {c["name"]: c["url"] for c in json.loads(out)["components"]}
            api = f"{urls['prefect']}/api"
            again_s, _ = timed(["up", "--json"], stacked)
            with_stack, without = [], []
            register = [
                *("register", str(model), "--name", "bench", "--json"),
                *("--reference-data", str(reference)),
            ]
            for i in range(args.runs + 1):  # the first pair warms the page cache: apart
                stack_s, _ = timed(register, stacked)
                direct_s, _ = timed(register, direct)
                if i:
                    with_stack.append(stack_s)
                    without.append(direct_s)
                else:
                    first = (stack_s, direct_s)
            flow_runs = register_runs(api)
        finally:
            down_s, _ = timed(["down", "--json"], stacked)
    ratios = [s / d for s, d in zip(with_stack, without, strict=True)]
    verdict = "meets" if statistics.median(with_stack) <= TARGET_S else "misses"
    print(
        "\n".join(
            [
                f"Cold `mlops register` of a pickled iris LogisticRegression with reference data,"
                f" {args.runs} alternated pairs after one warm-up pair; 2-core machine shared"
                " with other work.",
                "",
                "| | median wall s | min | max |",
                "|---|---|---|---|",
                row("with `mlops up` (a flow run in its step runner)", with_stack),
                row("without the stack (in-process)", without),
                row("**ratio with/without**", ratios),
                "",
                f"Median with the stack: {statistics.median(with_stack):.2f} s, which {verdict} "
                f"the <= {TARGET_S:.0f} s target. The stack's server recorded {flow_runs} "
                f"register-model flow runs for {args.runs + 1} registrations.",
                f"The warm-up pair, the first registration after `mlops up`: {first[0]:.2f} s"
                f" with the stack, {first[1]:.2f} s without.",
                f"`mlops up` cold: {up_s:.1f} s; again (all running, nothing started): "
                f"{again_s:.1f} s; `mlops down`: {down_s:.1f} s.",
            ]
        )
    )


if __name__ == "__main__":
    main()
