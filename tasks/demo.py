"""Tasks behind `mlops demo`: train small models on a dataset that ships with scikit-learn."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from mlops_pipeline.tasks.orchestration import step
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class DemoData:
    """Where the demo's models and data frames were written."""

    logreg_model_dir: Path
    forest_pickle: Path
    reference_csv: Path
    traffic_csv: Path
    drifted_traffic_csv: Path


def wine_frame() -> tuple[pd.DataFrame, pd.Series]:
    """The wine dataset with column names that are safe in URLs, SQL and Parquet."""
    features, target = load_wine(return_X_y=True, as_frame=True)
    features.columns = [re.sub(r"[^a-z0-9]+", "_", c.lower()).strip("_") for c in features]
    return features, target


def noisy_sample(
    features: pd.DataFrame, target: pd.Series, rows: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Rows drawn from the dataset with 5 % jitter, labelled: more data from the same process."""
    picks = rng.integers(0, len(features), size=rows)
    sample = features.iloc[picks].reset_index(drop=True)
    sample += rng.normal(0.0, 0.05, size=sample.shape) * features.std().to_numpy()
    return sample.assign(label=target.iloc[picks].to_numpy())


@step
def train_demo_models(workdir: Path, seed: int = 7) -> DemoData:
    """Train a logistic regression (MLflow model dir) and a random forest (plain pickle).

    The pipeline of scaler + logistic regression is saved by MLflow's sklearn flavour (skops,
    whose default trusted types cover it); the forest goes in as a joblib pickle, the way a
    model trained outside MLflow arrives, so skops never has to trust its tree type.
    """
    import mlflow
    from mlflow.models import infer_signature

    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wine, classes = wine_frame()
    training = noisy_sample(wine, classes, 3000, rng)
    features, target = training.drop(columns="label"), training["label"]
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        features, target
    )
    model_dir = workdir / "wine-logreg"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    mlflow.sklearn.save_model(
        logreg, model_dir, signature=infer_signature(features, logreg.predict(features))
    )
    forest = RandomForestClassifier(n_estimators=50, random_state=seed).fit(features, target)
    forest_pickle = workdir / "wine-forest.joblib"
    joblib.dump(forest, forest_pickle)

    reference_csv = workdir / "reference.csv"
    features.to_csv(reference_csv, index=False)
    traffic = noisy_sample(wine, classes, 1500, rng)
    traffic_csv = workdir / "traffic.csv"
    traffic.to_csv(traffic_csv, index=False)
    # a new grape supplier: more alcohol and colour, same everything else
    drifted = noisy_sample(wine, classes, 1500, rng)
    drifted["alcohol"] += wine["alcohol"].std()
    drifted["color_intensity"] *= rng.uniform(1.4, 1.8, size=len(drifted))
    drifted_csv = workdir / "traffic-drifted.csv"
    drifted.to_csv(drifted_csv, index=False)
    return DemoData(model_dir, forest_pickle, reference_csv, traffic_csv, drifted_csv)


@step
def send_demo_traffic(
    endpoint_url: str, rows_csv: Path, batch_size: int = 50, feedback: bool = True
) -> dict[str, int]:
    """Score a labelled CSV through a deployment in batches, sending the labels as feedback."""
    from mlops_pipeline.serving.client import ScoringClient

    frame = pd.read_csv(rows_csv)
    requests = labels = 0
    with ScoringClient(endpoint_url) as client:
        client.wait_ready(timeout=60)
        for start in range(0, len(frame), batch_size):
            batch = frame.iloc[start : start + batch_size]
            prediction = client.predict(batch.drop(columns="label"))
            requests += 1
            if feedback and prediction.request_id:
                for row, label in enumerate(batch["label"]):
                    labels += client.feedback(prediction.request_id, label=int(label), row=row)
    return {"requests": requests, "rows": len(frame), "labels": labels}


@step
def clear_captures(capture_dir: Path) -> None:
    """Remove the captures of an earlier demo run, so this run's monitor sees only its own."""
    shutil.rmtree(capture_dir, ignore_errors=True)


@step
def wait_for_captures(capture_dir: Path, rows: int, timeout: float = 60.0) -> int:
    """Wait until the scoring service has flushed at least `rows` captured rows to Parquet."""
    import pyarrow.parquet as pq

    deadline = time.monotonic() + timeout
    while True:
        files = [
            p for p in capture_dir.glob("model=*/**/*.parquet") if "_quarantine" not in p.parts
        ]
        captured = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
        if captured >= rows or time.monotonic() > deadline:
            return captured
        time.sleep(0.5)
