"""Cold `mlops register` process vs a plain script calling mlflow.register_model, same model.

Both register the same MLflow model directory into their own fresh sqlite registry, run after
run alternately (A B A B ...), so machine noise hits both alike; we report the median ratio.

    python benchmarks/register_vs_mlflow.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sections import write_section

PLAIN_SCRIPT = """
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
with mlflow.start_run():
    mlflow.log_artifacts(sys.argv[2], artifact_path="model")
    run_id = mlflow.active_run().info.run_id
print(mlflow.register_model(f"runs:/{run_id}/model", "bench").version)
"""


def make_model(directory: Path) -> Path:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(features, target)
    path = directory / "model"
    mlflow.sklearn.save_model(model, path, signature=infer_signature(features, target))
    return path


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_model(root)
        ours, plain = [], []
        for i in range(args.runs + 1):  # the first pair warms the page cache and is dropped
            home = root / f"ours-{i}"
            env = {**os.environ, "MLOPS_HOME": str(home)}
            env.pop("MLOPS_TRACKING_URI", None)
            env.pop("PREFECT_API_URL", None)
            ours_s = timed([str(bin_dir / "mlops"), "register", str(model), "--name", "bench"], env)
            uri = f"sqlite:///{root / f'plain-{i}.db'}"
            plain_s = timed([sys.executable, "-c", PLAIN_SCRIPT, uri, str(model)], env)
            if i:
                ours.append(ours_s)
                plain.append(plain_s)
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    body = "\n".join(
        [
            f"Cold processes, alternated, {args.runs} pairs after one warm-up pair; "
            "each registers the same MLflow model dir into a fresh sqlite registry.",
            "",
            "| | median wall s | min | max |",
            "|---|---|---|---|",
            f"| `mlops register` | {statistics.median(ours):.2f} | {min(ours):.2f} "
            f"| {max(ours):.2f} |",
            f"| plain `mlflow.register_model` script | {statistics.median(plain):.2f} "
            f"| {min(plain):.2f} | {max(plain):.2f} |",
            f"| **ratio ours/plain** | **{statistics.median(ratios):.2f}** "
            f"| {min(ratios):.2f} | {max(ratios):.2f} |",
        ]
    )
    print(body)
    write_section("Registration: `mlops register` vs plain MLflow", body)


if __name__ == "__main__":
    main()
