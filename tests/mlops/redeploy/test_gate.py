"""The gate on real sklearn models: direction of each metric, thresholds, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.redeploy.gate import evaluate_gate
from mlops_pipeline.redeploy.metrics import METRICS, get_metric, score
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score, root_mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC


def _split(data):
    X, y = data.data, data.target
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def iris():
    X_train, X_test, y_train, y_test = _split(load_iris(as_frame=True))
    good = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    dummy = DummyClassifier(strategy="prior").fit(X_train, y_train)
    return good, dummy, X_test, y_test


@pytest.fixture(scope="module")
def cancer():
    X_train, X_test, y_train, y_test = _split(load_breast_cancer(as_frame=True))
    good = LogisticRegression(max_iter=5000).fit(X_train, y_train)
    dummy = DummyClassifier(strategy="stratified", random_state=0).fit(X_train, y_train)
    return good, dummy, X_test, y_test


@pytest.fixture(scope="module")
def diabetes():
    X_train, X_test, y_train, y_test = _split_regression(load_diabetes(as_frame=True))
    good = LinearRegression().fit(X_train, y_train)
    dummy = DummyRegressor().fit(X_train, y_train)
    return good, dummy, X_test, y_test


def _split_regression(data):
    return train_test_split(data.data, data.target, test_size=0.3, random_state=0)


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "f1", "precision", "recall"])
def test_gate_passes_the_better_classifier_and_rejects_the_worse(iris, metric):
    good, dummy, X, y = iris
    up = evaluate_gate(dummy, good, X, y, metric, 0.05)
    assert up.passed and up.improvement > 0.05 and up.greater_is_better
    assert up.challenger_score == pytest.approx(score(good, X, y, metric))
    down = evaluate_gate(good, dummy, X, y, metric, 0.0)
    assert not down.passed and down.improvement < 0
    assert "does not pass" in down.reason and metric in down.reason
    assert down.holdout_rows == len(X) == up.holdout_rows


def test_f1_is_macro_for_multiclass_and_binary_for_zero_one(iris, cancer):
    good, _, X, y = iris
    assert score(good, X, y, "f1") == pytest.approx(f1_score(y, good.predict(X), average="macro"))
    good, _, X, y = cancer
    assert score(good, X, y, "f1") == pytest.approx(f1_score(y, good.predict(X)))
    labels = np.where(y == 1, "benign", "malignant")
    string_model = LogisticRegression(max_iter=5000).fit(X, labels)
    expected = f1_score(labels, string_model.predict(X), average="macro")
    assert score(string_model, X, labels, "f1") == pytest.approx(expected)


def test_roc_auc_binary_and_multiclass_use_probabilities(iris, cancer):
    good, dummy, X, y = cancer
    expected = roc_auc_score(y, good.predict_proba(X)[:, 1])
    assert score(good, X, y, "roc_auc") == pytest.approx(expected)
    assert evaluate_gate(dummy, good, X, y, "roc_auc", 0.1).passed
    good, dummy, X, y = iris
    expected = roc_auc_score(y, good.predict_proba(X), multi_class="ovr")
    result = evaluate_gate(dummy, good, X, y, "roc-AUC", 0.1)
    assert result.metric == "roc_auc" and result.passed
    assert result.challenger_score == pytest.approx(expected)
    assert result.champion_score == pytest.approx(0.5)


def test_roc_auc_refuses_a_model_without_probabilities(cancer):
    good, _, X, y = cancer
    svc = LinearSVC().fit(X, y)
    with pytest.raises(InvalidInputError, match="predict_proba") as err:
        evaluate_gate(good, svc, X, y, "roc_auc", 0.0)
    assert "challenger" in str(err.value) and "\n" not in str(err.value)


def test_roc_auc_undefined_on_one_class_is_a_clear_error(cancer):
    good, dummy, X, y = cancer
    only = y == 1
    with pytest.raises(InvalidInputError, match="champion could not be scored"):
        evaluate_gate(good, dummy, X[only], y[only], "roc_auc", 0.0)


@pytest.mark.parametrize(
    ("metric", "greater"),
    [
        ("rmse", False),
        ("mse", False),
        ("mae", False),
        ("medae", False),
        ("mape", False),
        ("r2", True),
        ("explained_variance", True),
    ],
)
def test_regression_metrics_know_their_direction(diabetes, metric, greater):
    good, dummy, X, y = diabetes
    up = evaluate_gate(dummy, good, X, y, metric, 0.0)
    assert up.passed and up.greater_is_better is greater and up.improvement > 0
    if not greater:  # lower is better: the challenger's score is the smaller one
        assert up.challenger_score < up.champion_score
    assert not evaluate_gate(good, dummy, X, y, metric, 0.0).passed


def test_rmse_matches_sklearn_and_log_loss_is_lower_is_better(diabetes, iris):
    good, _, X, y = diabetes
    assert score(good, X, y, "rmse") == pytest.approx(root_mean_squared_error(y, good.predict(X)))
    good, dummy, X, y = iris
    result = evaluate_gate(dummy, good, X, y, "log_loss", 0.5)
    assert result.passed and not result.greater_is_better
    assert result.challenger_score < result.champion_score


class Fixed:
    """A model answering fixed predictions (to hit an exact accuracy)."""

    def __init__(self, predictions):
        self.predictions = np.asarray(predictions)

    def predict(self, X):
        return self.predictions[: len(X)]


def test_min_improvement_is_absolute_and_inclusive():
    y = np.zeros(50, dtype=int)
    champion = Fixed([1] * 3 + [0] * 47)  # 0.94
    challenger = Fixed([1] * 2 + [0] * 48)  # 0.96
    X = pd.DataFrame({"x": range(50)})
    assert evaluate_gate(champion, challenger, X, y, "accuracy", 0.02).passed
    edge = evaluate_gate(champion, challenger, X, y, "accuracy", 0.0201)
    assert not edge.passed and edge.improvement == pytest.approx(0.02)
    tie = evaluate_gate(champion, champion, X, y, "accuracy", 0.0)
    assert not tie.passed and tie.improvement == 0


def test_a_failing_challenger_is_rejected_with_the_reason(iris):
    good, _, X, y = iris

    class Broken:
        def predict(self, X):
            raise RuntimeError("boom on row 3\nsecond line")

    result = evaluate_gate(good, Broken(), X, y, "accuracy", 0.0)
    assert not result.passed and result.challenger_score is None
    assert "RuntimeError: boom on row 3" in result.reason and "second line" not in result.reason


def test_a_champion_that_cannot_score_the_holdout_is_an_error(iris):
    good, dummy, X, y = iris
    with pytest.raises(InvalidInputError, match="champion could not be scored"):
        evaluate_gate(good, dummy, X.rename(columns=lambda c: c.upper()), y, "accuracy", 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "auc_pr"}, "not supported.*accuracy"),
        ({"min_improvement": -0.1}, "min_improvement"),
        ({"min_improvement": float("nan")}, "min_improvement"),
        ({"empty": True}, "empty"),
        ({"short_y": True}, "labels"),
        ({"continuous": True, "metric": "accuracy"}, "classification.*continuous"),
        ({"strings": True, "metric": "rmse"}, "regression.*not numeric"),
    ],
)
def test_bad_gate_input_is_one_clear_line(iris, kwargs, match):
    good, dummy, X, y = iris
    y = np.asarray(y)
    if kwargs.pop("empty", False):
        X, y = X.iloc[0:0], y[0:0]
    if kwargs.pop("short_y", False):
        y = y[:-1]
    if kwargs.pop("continuous", False):
        y = y + 0.5
    if kwargs.pop("strings", False):
        y = y.astype(str)
    args = {"metric": "accuracy", "min_improvement": 0.0, **kwargs}
    with pytest.raises(InvalidInputError, match=match) as err:
        evaluate_gate(dummy, good, X, y, **args)
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_every_metric_has_a_direction_and_a_task():
    for name, metric in METRICS.items():
        assert get_metric(name.upper()) is metric
        assert metric.task in ("classification", "regression")
    assert not get_metric("rmse").greater_is_better and get_metric("roc_auc").greater_is_better
