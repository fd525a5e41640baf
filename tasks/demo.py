"""Tasks behind `mlops demo`: train small models on a dataset that ships with scikit-learn."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier


@dataclass(frozen=True)
class DemoData:
    """Where the demo's models and data frames were written."""

    champion_model_dir: Path
    quick_experiment_pickle: Path
    retrained_pickle: Path
    reference_csv: Path
    retrained_reference_csv: Path
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


def new_supplier(
    features: pd.DataFrame, target: pd.Series, rows: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Labelled rows from a new grape supplier: more alcohol and colour, same everything else."""
    drifted = noisy_sample(features, target, rows, rng)
    drifted["alcohol"] += features["alcohol"].std()
    drifted["color_intensity"] *= rng.uniform(1.4, 1.8, size=len(drifted))
    return drifted


def scaled_logreg(frame: pd.DataFrame) -> object:
    """Standard scaler + logistic regression fitted on a labelled frame."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        frame.drop(columns="label"), frame["label"]
    )


@step
def train_demo_models(workdir: Path, seed: int = 7) -> DemoData:
    """Train the champion, a quick experiment the gate turns down, and a retrained challenger.

    * champion: scaler + logistic regression, saved by MLflow's sklearn flavour (skops, whose
      default trusted types cover it);
    * quick experiment: a depth-1 decision tree as a joblib pickle, the way a model trained
      outside MLflow arrives (about 66 % accurate: the gate rejects it);
    * retrained: the champion's recipe refitted on its training data plus labelled rows from
      the new supplier, as a pickle with that data as its reference (the champion scores
      about 90 % on the new supplier's wine, the retrained model 100 %).

    Reference data keeps the `label` column, so the gate could hold part of it out.
    """
    import mlflow
    from mlflow.models import infer_signature

    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wine, classes = wine_frame()
    training = noisy_sample(wine, classes, 3000, rng)
    features = training.drop(columns="label")
    champion = scaled_logreg(training)
    model_dir = workdir / "wine-logreg"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    mlflow.sklearn.save_model(
        champion, model_dir, signature=infer_signature(features, champion.predict(features))
    )
    stump = DecisionTreeClassifier(max_depth=1, random_state=seed).fit(features, training["label"])
    stump_pickle = workdir / "wine-stump.joblib"
    joblib.dump(stump, stump_pickle)
    retraining = pd.concat([training, new_supplier(wine, classes, 1500, rng)], ignore_index=True)
    retrained_pickle = workdir / "wine-logreg-retrained.joblib"
    joblib.dump(scaled_logreg(retraining), retrained_pickle)

    paths = {
        "reference.csv": training,
        "reference-retrained.csv": retraining,
        "traffic.csv": noisy_sample(wine, classes, 1500, rng),
        "traffic-drifted.csv": new_supplier(wine, classes, 1500, rng),
    }
    for name, frame in paths.items():
        frame.to_csv(workdir / name, index=False)
    return DemoData(
        champion_model_dir=model_dir,
        quick_experiment_pickle=stump_pickle,
        retrained_pickle=retrained_pickle,
        reference_csv=workdir / "reference.csv",
        retrained_reference_csv=workdir / "reference-retrained.csv",
        traffic_csv=workdir / "traffic.csv",
        drifted_traffic_csv=workdir / "traffic-drifted.csv",
    )


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
def wait_for_captures(capture_dir: Path, rows: int, labels: int = 0, timeout: float = 60.0) -> int:
    """Wait until the scoring service has flushed at least `rows` captured rows and `labels`
    feedback labels to Parquet; returns the captured rows.

    Predictions and labels are flushed as separate files, so a monitor run that waited for the
    predictions alone can start before the last labels land. Logs a warning on timeout (s).
    """
    import pyarrow.parquet as pq
    from mlops_pipeline.serving.contract import FEEDBACK_PREFIX, QUARANTINE_DIR

    def flushed(root: Path) -> int:
        files = [p for p in root.glob("model=*/**/*.parquet") if QUARANTINE_DIR not in p.parts]
        return sum(pq.ParquetFile(p).metadata.num_rows for p in files)

    deadline = time.monotonic() + timeout
    while True:
        captured = flushed(capture_dir)
        labelled = flushed(capture_dir / FEEDBACK_PREFIX) if labels else 0
        if captured >= rows and labelled >= labels:
            return captured
        if time.monotonic() > deadline:
            logging.getLogger(__name__).warning(
                "after %.0f s, %d of %d rows and %d of %d labels were captured",
                timeout,
                captured,
                rows,
                labelled,
                labels,
            )
            return captured
        time.sleep(0.5)


class SteadyTraffic:
    """Clients scoring rows of a CSV through a deployment while it switches versions.

    `clients` threads send requests back to back, each on its own keep-alive connection.
    Counts answered requests by status and requests that got no answer; bounded by
    `max_requests` (all clients together) and `max_seconds` so a stuck deployment cannot keep
    it running. Use as a context manager: traffic runs inside the `with` block.
    """

    def __init__(
        self,
        endpoint_url: str,
        rows_csv: Path,
        rows_per_request: int = 5,
        max_requests: int = 50_000,
        max_seconds: float = 400.0,
        clients: int = 1,
    ) -> None:
        frame = pd.read_csv(rows_csv)
        self.frame = frame.drop(columns=[c for c in ("label",) if c in frame.columns])
        self.endpoint_url, self.rows_per_request = endpoint_url, rows_per_request
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.statuses: dict[int, int] = {}
        self.unanswered = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.unanswered

    @property
    def failed(self) -> int:
        """Requests without an answer or answered with a status other than 200."""
        return self.requests - self.statuses.get(200, 0)

    def _run(self, client_index: int) -> None:
        import httpx

        started = time.monotonic()
        start = client_index * self.rows_per_request  # clients start on different rows
        with httpx.Client(timeout=30) as client:
            while (
                not self._stop_event.is_set()
                and self.requests < self.max_requests
                and time.monotonic() - started < self.max_seconds
            ):
                batch = self.frame.iloc[start : start + self.rows_per_request]
                start = (start + self.rows_per_request) % max(len(self.frame), 1)
                body = {"dataframe_split": batch.to_dict(orient="split", index=False)}
                try:
                    status = client.post(f"{self.endpoint_url}/invocations", json=body).status_code
                except httpx.HTTPError:
                    with self._lock:
                        self.unanswered += 1
                    continue
                with self._lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1

    def __enter__(self) -> SteadyTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        for thread in self._threads:
            thread.join(30)


@step(cache_policy=NO_CACHE)
def wait_for_redeploy(
    deployment: str,
    episode_id: str,
    served: str,
    start_timeout: float = 180.0,
    finish_timeout: float = 1200.0,
) -> dict | None:
    """Wait for the redeploy an automation started for drift episode `episode_id` to finish.

    Two bounds, so a slow machine never makes the caller run a second redeploy beside the one
    under way: the automation gets `start_timeout` seconds to start a flow run of the served
    deployment `served` for the episode (or the redeploy to claim it in the ledger); a started
    one gets `finish_timeout` seconds, its progress logged every minute.

    Returns:
        The decision JSON; None when no redeploy for the episode started within
        `start_timeout`, or its flow run ended cancelled or crashed before deciding (the caller
        may run the flow itself: the episode's claim stops a double redeploy).

    Raises:
        DeploymentError: the redeploy failed, or is still running after `finish_timeout`.
    """
    from mlops_pipeline.errors import DeploymentError
    from mlops_pipeline.redeploy.records import FAILED, RUNNING, decisions
    from mlops_pipeline.tasks.orchestration import deployment_run_states

    log = logging.getLogger(__name__)
    started = last_report = time.monotonic()
    seen_start = False  # once a run for the episode is seen, finish_timeout bounds the wait
    while True:
        rows = [
            row
            for row in decisions(deployment)
            if ((row.get("details") or {}).get("trigger") or {}).get("episode_id") == episode_id
            or row.get("episode_id") == episode_id
        ]
        for row in rows:
            if row["decision"] == FAILED:
                raise DeploymentError(
                    f"The redeploy the drift event started failed: {row['reason']}"
                )
            if row["finished_at"]:
                return row.get("details") or {}
        states = deployment_run_states(served, episode_id=episode_id)
        if not rows and states and states[0] in ("CANCELLED", "CRASHED", "FAILED"):
            log.warning("the event's redeploy flow run ended %s before deciding", states[0])
            return None
        under_way = any(row["decision"] == RUNNING for row in rows) or any(
            state in ("SCHEDULED", "PENDING", "RUNNING") for state in states
        )
        if under_way and not seen_start:
            seen_start = True
            log.info("the event's redeploy is under way; waiting for its decision")
        now = time.monotonic()
        if now >= started + (finish_timeout if seen_start else start_timeout):
            if under_way:
                raise DeploymentError(
                    f"The redeploy of {deployment} for drift episode {episode_id} is still "
                    f"running after {finish_timeout:.0f} s; follow it in the Prefect UI."
                )
            return None
        if now - last_report >= 60:
            log.info("still waiting for the redeploy (%.0f s)", now - started)
            last_report = now
        time.sleep(1.0)


@step(cache_policy=NO_CACHE)
def last_decision_id(deployment: str) -> int:
    """The id of deployment's newest redeploy or rollout row in the ledger (0 when none)."""
    from mlops_pipeline.redeploy.records import decisions

    return max((row["id"] for row in decisions(deployment)), default=0)


@step(cache_policy=NO_CACHE)
def rollout_after(deployment: str, after_id: int, kind: str = "canary") -> dict | None:
    """The newest `kind` rollout (a `RolloutDecision` as JSON: each canary step's figures) of
    deployment recorded after ledger row `after_id`; None when there is none."""
    from mlops_pipeline.redeploy.records import decisions

    for row in reversed(decisions(deployment)):
        details = row.get("details") or {}
        if row["id"] > after_id and details.get("kind") == kind:
            return details
    return None
