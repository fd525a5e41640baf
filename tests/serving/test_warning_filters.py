"""The scoring process's warning filters and its model input frames (issue 17's c=1 path).

scikit-learn replays the caller's warning filters around every tree of a forest, so the service
compacts them once its model is loaded; and an all-numeric request becomes one 2-D block. Both
must leave every answer as it was: checked here against MLflow's own `pyfunc.predict`.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlops_pipeline.serving import warning_filters
from mlops_pipeline.serving.handler import Service
from mlops_pipeline.serving.model import load_runtime
from mlops_pipeline.serving.settings import ServingSettings

FEATURES = [f"f{i}" for i in range(5)]


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, len(FEATURES))), columns=FEATURES)
    labels = (frame["f0"] + frame["f1"] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=15, random_state=0).fit(frame, labels)
    path = tmp_path_factory.mktemp("forest") / "model"
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(frame, model.predict(frame)),
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    return path


def _some_filters() -> None:
    warnings.filterwarnings("ignore", message="numpy.ndarray size changed")
    warnings.simplefilter("always", RuntimeWarning)
    warnings.simplefilter("ignore", DeprecationWarning)


def test_compact_leaves_three_filters_that_hide_deprecations_and_show_the_rest(monkeypatch):
    monkeypatch.setattr(sys, "warnoptions", [])
    with warnings.catch_warnings(record=True) as seen:
        _some_filters()
        assert warning_filters.settle("compact") == 3
        assert warnings.filters == [
            ("ignore", None, PendingDeprecationWarning, None, 0),
            ("ignore", None, DeprecationWarning, None, 0),
            ("default", None, Warning, None, 0),
        ]
        for _ in range(3):  # one code location: shown once, deprecations never
            warnings.warn("deprecated here", DeprecationWarning, stacklevel=1)
            warnings.warn("numpy.ndarray size changed", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["numpy.ndarray size changed"]


def test_inherit_and_operator_filters_are_kept(monkeypatch):
    with warnings.catch_warnings():
        _some_filters()
        before = list(warnings.filters)
        monkeypatch.setattr(sys, "warnoptions", [])
        assert warning_filters.settle("inherit") == len(before)
        assert warnings.filters == before
        monkeypatch.setattr(sys, "warnoptions", ["ignore::UserWarning"])  # PYTHONWARNINGS / -W
        assert warning_filters.settle("compact") == len(before)
        assert warnings.filters == before


@pytest.mark.parametrize("policy", ["compact", "inherit"])
def test_the_service_settles_its_filters_after_the_model_loads(forest, monkeypatch, policy):
    monkeypatch.setattr(sys, "warnoptions", [])
    with warnings.catch_warnings():
        _some_filters()
        before = len(warnings.filters)
        service = Service(ServingSettings(model_uri=str(forest), warning_filters=policy))
        service.load()
        assert service.load_error is None
        assert len(warnings.filters) == (3 if policy == "compact" else before)
        if service.batcher is not None:
            service.batcher.close()


def test_numeric_requests_become_one_block_with_the_same_frame_and_answer(forest, monkeypatch):
    monkeypatch.setattr(sys, "warnoptions", [])
    runtime = load_runtime(ServingSettings(model_uri=str(forest)))
    pyfunc = mlflow.pyfunc.load_model(str(forest))
    rows = np.random.default_rng(1).normal(size=(7, len(FEATURES))).round(4).tolist()
    body = json.dumps({"dataframe_split": {"columns": FEATURES, "data": rows}}).encode()
    with warnings.catch_warnings():
        warning_filters.settle("compact")
        parsed = runtime.parse(body, "application/json")
        frame = parsed.data
        assert frame._mgr.nblocks == 1
        pd.testing.assert_frame_equal(frame, pd.DataFrame(rows, columns=FEATURES))
        assert parsed.batch_key == (tuple(FEATURES), ("float64",) * len(FEATURES))
        ours = runtime.predict(parsed)
    np.testing.assert_array_equal(ours, pyfunc.predict(pd.DataFrame(rows, columns=FEATURES)))


def test_mixed_dtypes_keep_one_column_per_array(forest):
    runtime = load_runtime(ServingSettings(model_uri=str(forest)))
    features = {"a": np.array([1.5, 2.5]), "b": np.array([1, 2]), "c": np.array(["x", "y"], object)}
    frame, key, block = runtime._frame(features)
    assert block is None
    pd.testing.assert_frame_equal(frame, pd.DataFrame(features))
    assert key == (("a", "b", "c"), tuple(map(str, pd.DataFrame(features).dtypes)))
    same, same_key, same_block = runtime._frame({"a": np.array([1, 2]), "b": np.array([3, 4])})
    assert same._mgr.nblocks == 1 and same_key == (("a", "b"), ("int64", "int64"))
    # the capture's block holds the values but not the frame's memory (a model may change it)
    np.testing.assert_array_equal(same_block, [[1, 3], [2, 4]])
    assert not np.shares_memory(same_block, same.to_numpy())
    pd.testing.assert_frame_equal(same, pd.DataFrame({"a": [1, 2], "b": [3, 4]}))
