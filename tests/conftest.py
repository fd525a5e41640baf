"""Shared fixtures: a fresh MLOPS_HOME with a real sqlite MLflow per test, small real models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import prefect.main  # noqa: F401  (see below)
import pytest
from mlops_pipeline.settings import get_settings
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.servers import flush_prefect_services

# Prefect binds its console log handler to the sys.stderr of its first full import (prefect.main
# sets up its logging). Imported here, that is pytest's stream for the whole session; imported
# first inside a command under test, it would be the CliRunner's stream, closed once that test
# ends, and every later Prefect log of the process would print a "--- Logging error ---"
# traceback instead.

# Docker engine, base image and shared wheelhouse fixtures for image and docker-target tests
pytest_plugins = ["tests.docker_support"]

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(autouse=True)
def reset_mlflow_uris() -> Iterator[None]:
    """connect() sets mlflow's process-wide URIs; no test may leak them into the next."""
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def mlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private MLOPS_HOME whose sqlite MLflow registry lives only for this test."""
    home = tmp_path / "mlops-home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    for var in (
        "MLOPS_TRACKING_URI",
        "MLOPS_REGISTRY_URI",
        "MLOPS_LEDGER_URI",
        "MLFLOW_TRACKING_URI",
        # mlflow.set_registry_uri (called by connect()) exports it and never removes it
        "MLFLOW_REGISTRY_URI",
    ):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def undeploy_all(mlops_home: Path) -> Iterator[None]:
    """Remove every local deployment of this test's MLOPS_HOME afterwards."""
    yield
    from mlops_pipeline.targets.local import LocalTarget

    target = LocalTarget()
    for deployment in target.list():
        target.delete(deployment.name)


@pytest.fixture(scope="session")
def iris_frame() -> pd.DataFrame:
    """Iris features with plain column names, plus the target as `label`."""
    data = load_iris(as_frame=True)
    frame = data.data.copy()
    frame.columns = IRIS_COLUMNS
    frame["label"] = data.target
    return frame


@pytest.fixture(scope="session")
def iris_features(iris_frame: pd.DataFrame) -> pd.DataFrame:
    return iris_frame[IRIS_COLUMNS]


@pytest.fixture(scope="session")
def iris_estimator(iris_frame: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(iris_frame[IRIS_COLUMNS], iris_frame["label"])


@pytest.fixture(scope="session")
def iris_model_dir(tmp_path_factory: pytest.TempPathFactory, iris_estimator, iris_features) -> Path:
    """An MLflow sklearn model directory with a signature, saved once per session."""
    from mlflow.models import infer_signature

    path = tmp_path_factory.mktemp("models") / "iris"
    signature = infer_signature(iris_features, iris_estimator.predict(iris_features))
    mlflow.sklearn.save_model(iris_estimator, path, signature=signature)
    return path


@pytest.fixture(scope="session")
def weak_iris_model(
    tmp_path_factory: pytest.TempPathFactory, iris_frame, iris_features
) -> tuple[LogisticRegression, Path]:
    """A strongly regularised iris classifier and its MLflow model dir: it disagrees with
    `iris_estimator` on some rows, so ensemble members differ."""
    from mlflow.models import infer_signature

    estimator = LogisticRegression(C=0.01, max_iter=500).fit(iris_features, iris_frame["label"])
    path = tmp_path_factory.mktemp("models") / "iris-weak"
    signature = infer_signature(iris_features, estimator.predict(iris_features))
    mlflow.sklearn.save_model(estimator, path, signature=signature)
    return estimator, path


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """A real Dask LocalCluster with 2 workers, threads of this process (CI has 2 cores);
    yields the scheduler address on 127.0.0.1."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="session")
def iris_pickle(tmp_path_factory: pytest.TempPathFactory, iris_estimator) -> Path:
    """The same estimator as a joblib file, as if trained outside MLflow."""
    import joblib

    path = tmp_path_factory.mktemp("pickles") / "iris.joblib"
    joblib.dump(iris_estimator, path)
    return path


@pytest.fixture(scope="session")
def iris_reference_csv(tmp_path_factory: pytest.TempPathFactory, iris_features) -> Path:
    path = tmp_path_factory.mktemp("reference") / "iris.csv"
    iris_features.to_csv(path, index=False)
    return path


_harness_api: list[str] = []  # the harness's API URL while it runs (empty: not running)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole test process (it takes seconds to start)."""
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        _harness_api.append(str(get_current_settings().api.url))
        try:
            yield
        finally:
            _harness_api.clear()


@pytest.fixture(autouse=True)
def prefect_api_only_where_asked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Keep the session's Prefect harness out of tests that did not ask for it.

    The harness sets PREFECT_API_URL in the worker's Prefect settings for the rest of the
    session; a later test of "no Prefect API configured" would find it, and a `serve` command
    under test would then serve forever instead of refusing. Only the harness's own URL is
    cleared: an API a module's fixture configured (a real `prefect server`) stays.
    """
    if not _harness_api or "prefect_harness" in request.fixturenames:
        yield
        return
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if str(get_current_settings().api.url) not in _harness_api:
        yield
        return
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@pytest.fixture(autouse=True)
def prefect_services_flushed() -> Iterator[None]:
    """Each test leaves Prefect's process-wide log and event workers flushed (bounded)."""
    yield
    flush_prefect_services()


@pytest.fixture
def registered_model(mlops_home: Path, iris_model_dir: Path, iris_reference_csv: Path) -> dict:
    """`iris` version 1, registered with reference data and the alias champion."""
    from mlops_pipeline.flows import run_flow
    from mlops_pipeline.flows.register import register_model

    return run_flow(
        register_model,
        source=str(iris_model_dir),
        name="iris",
        tags={"team": "risk"},
        reference_data=str(iris_reference_csv),
        alias="champion",
    )
