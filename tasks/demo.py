"""Tasks behind `mlops demo`: train small models on a dataset that ships with scikit-learn."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from prefect import task
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


@task
def train_demo_models(workdir: Path, seed: int = 7) -> DemoData:
    """Train a logistic regression (MLflow model dir) and a random forest (plain pickle).

    The pipeline of scaler + logistic regression is saved by MLflow's sklearn flavour (skops,
    whose default trusted types cover it); the forest goes in as a joblib pickle, the way a
    model trained outside MLflow arrives, so skops never has to trust its tree type.
    """
    import mlflow
    from mlflow.models import infer_signature

    workdir.mkdir(parents=True, exist_ok=True)
    features, target = wine_frame()
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        features, target
    )
    model_dir = workdir / "wine-logreg"
    if not model_dir.exists():
        mlflow.sklearn.save_model(
            logreg, model_dir, signature=infer_signature(features, logreg.predict(features))
        )
    forest = RandomForestClassifier(n_estimators=50, random_state=seed).fit(features, target)
    forest_pickle = workdir / "wine-forest.joblib"
    joblib.dump(forest, forest_pickle)

    rng = np.random.default_rng(seed)
    reference_csv = workdir / "reference.csv"
    features.to_csv(reference_csv, index=False)
    traffic = features.sample(n=400, replace=True, random_state=seed).reset_index(drop=True)
    traffic_csv = workdir / "traffic.csv"
    traffic.to_csv(traffic_csv, index=False)
    # a new grape supplier: more alcohol and colour, same everything else
    drifted = traffic.copy()
    drifted["alcohol"] += features["alcohol"].std() * 1.0
    drifted["color_intensity"] *= rng.uniform(1.4, 1.8, size=len(drifted))
    drifted_csv = workdir / "traffic-drifted.csv"
    drifted.to_csv(drifted_csv, index=False)
    return DemoData(model_dir, forest_pickle, reference_csv, traffic_csv, drifted_csv)


@task
def send_demo_traffic(
    endpoint_url: str, rows_csv: Path, batch_size: int = 20, feedback: bool = True
) -> dict[str, int]:
    """Score a CSV through a deployment in batches, sending ground-truth labels as feedback."""
    from serving.client import ScoringClient

    frame = pd.read_csv(rows_csv)
    features, target = wine_frame()
    # ground truth for the demo: the class of the nearest original row (the rows were sampled)
    nearest = features.reset_index(drop=True)
    requests = rows = 0
    with ScoringClient(endpoint_url) as client:
        client.wait_ready(timeout=60)
        for start in range(0, len(frame), batch_size):
            batch = frame.iloc[start : start + batch_size]
            prediction = client.predict(batch)
            requests += 1
            rows += len(batch)
            if feedback and prediction.request_id:
                for row, values in enumerate(batch.to_numpy()):
                    label = int(target.iloc[((nearest.to_numpy() - values) ** 2).sum(1).argmin()])
                    client.feedback(prediction.request_id, label=label, row=row)
    return {"requests": requests, "rows": rows}
