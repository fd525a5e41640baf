"""Retraining: the `module:function` entry point, its training data, its result."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.errors import InvalidInputError, NotFoundError
from mlops_pipeline.redeploy.gate import choose_holdout, evaluate_gate
from mlops_pipeline.redeploy.retrain import load_trainer, retrain, training_data
from sklearn.dummy import DummyClassifier

from tests.conftest import IRIS_COLUMNS

TRAINER = """
from sklearn.linear_model import LogisticRegression

FEATURES = {features!r}
calls = []

def train(data):
    calls.append(len(data))
    return LogisticRegression(max_iter=1000).fit(data[FEATURES], data["label"])

def not_a_model(data):
    return {{"rows": len(data)}}

def broken(data):
    raise RuntimeError("no GPU here")

class Trainers:
    @staticmethod
    def fit(data):
        return train(data)

NOT_CALLABLE = 3
"""


@pytest.fixture
def trainer_module(tmp_path, monkeypatch) -> str:
    """A trainer module written to tmp_path, importable under a name unique to the test."""
    name = f"user_trainer_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TRAINER.format(features=IRIS_COLUMNS))
    (tmp_path / f"{name}_needs_dep.py").write_text("import a_package_nobody_installed\n")
    (tmp_path / f"{name}_raises.py").write_text("raise ValueError('bad config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_load_and_retrain(trainer_module, iris_frame):
    train = load_trainer(f"{trainer_module}:train")
    model = retrain(train, iris_frame)
    assert model.predict(iris_frame[IRIS_COLUMNS].head(3)).shape == (3,)
    assert (
        load_trainer(f" {trainer_module}:Trainers.fit ")(iris_frame).score(
            iris_frame[IRIS_COLUMNS], iris_frame["label"]
        )
        > 0.9
    )


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("{m}", InvalidInputError, "not an entry point; write it as module:function"),
        ("{m}:", InvalidInputError, "not an entry point"),
        (":train", InvalidInputError, "not an entry point"),
        ("{m}_missing:train", NotFoundError, "no module named '{m}_missing'"),
        ("{m}.sub:train", NotFoundError, "no module named '{m}.sub'"),
        ("{m}:nope", NotFoundError, "has no attribute 'nope'"),
        ("{m}:Trainers.nope", NotFoundError, "has no attribute 'Trainers.nope'"),
        ("{m}:NOT_CALLABLE", InvalidInputError, "is a int, not a function"),
        ("{m}_needs_dep:train", InvalidInputError, "no module named 'a_package_nobody"),
        ("{m}_raises:train", InvalidInputError, "ValueError: bad config"),
    ],
)
def test_bad_entry_points_name_the_setting(trainer_module, spec, error, match):
    spec = spec.format(m=trainer_module)
    with pytest.raises(error, match=match.format(m=trainer_module)) as err:
        load_trainer(spec, setting="MLOPS_TRAINER")
    assert str(err.value).startswith(f"MLOPS_TRAINER={spec.strip()!r}")
    assert "\n" not in str(err.value)


def test_retrain_checks_what_the_trainer_returns(trainer_module, iris_frame, caplog):
    with pytest.raises(InvalidInputError, match="returned a dict, not a model with predict"):
        retrain(load_trainer(f"{trainer_module}:not_a_model"), iris_frame)
    with pytest.raises(InvalidInputError, match="failed: RuntimeError: no GPU here"):
        retrain(load_trainer(f"{trainer_module}:broken"), iris_frame)
    assert any(r.exc_info and "no GPU here" in str(r.exc_info[1]) for r in caplog.records)


def captured(iris_frame: pd.DataFrame) -> pd.DataFrame:
    """Six captured rows: 2 labelled, 1 duplicate of them, 1 rejected, 2 unlabelled."""
    rows = iris_frame.iloc[[0, 60, 120, 1, 2, 3]].reset_index(drop=True)
    frame = rows[IRIS_COLUMNS].copy()
    frame["prediction"] = 0
    frame["_request_id"] = ["a", "b", "b", "c", "d", "e"]
    frame["_row"] = [0, 0, 0, np.nan, 0, 0]
    frame["_status"] = [200, 200, 200, 400, 200, 200]
    frame["label"] = [0, 1, 2, 0, None, None]
    frame.loc[2, IRIS_COLUMNS] = frame.loc[1, IRIS_COLUMNS].to_numpy()  # same row sent again
    return frame


def test_training_data_joins_reference_and_labelled_captures(iris_frame):
    data = training_data(iris_frame, captured(iris_frame), IRIS_COLUMNS, "label")
    assert list(data.columns) == [*IRIS_COLUMNS, "label"] and len(data) == 150 + 2
    assert data.index.equals(pd.RangeIndex(152))
    assert data["label"].iloc[150:].tolist() == [0, 2]  # the later label of request b wins


def test_training_data_without_reference_labels_uses_captures_only(iris_frame):
    data = training_data(iris_frame[IRIS_COLUMNS], captured(iris_frame), IRIS_COLUMNS, "target")
    assert len(data) == 2 and list(data.columns) == [*IRIS_COLUMNS, "target"]
    with pytest.raises(InvalidInputError, match="No labelled rows to train on"):
        training_data(iris_frame[IRIS_COLUMNS], None, IRIS_COLUMNS, "label")
    with pytest.raises(InvalidInputError, match="petal_width"):
        training_data(iris_frame.drop(columns="petal_width"), None, IRIS_COLUMNS, "label")


def test_a_retrained_challenger_beats_a_dummy_champion_on_a_fair_holdout(
    trainer_module, iris_frame
):
    holdout = choose_holdout(None, iris_frame, "label", 100, 0.3, seed=0)
    data = training_data(iris_frame, None, IRIS_COLUMNS, "label", holdout=holdout)
    challenger = retrain(load_trainer(f"{trainer_module}:train"), data)
    champion = DummyClassifier().fit(data[IRIS_COLUMNS], data["label"])
    result = evaluate_gate(champion, challenger, holdout.X, holdout.y, "accuracy", 0.2)
    assert result.passed and result.holdout_rows == 45 and len(data) == 105
