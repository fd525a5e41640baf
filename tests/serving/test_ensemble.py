"""An ensemble in a real scoring service: combined predictions equal the same computation done
by hand, /version lists every member, the capture keeps the combined and each member's output."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlops_pipeline.serving.ensemble import combine
from mlops_pipeline.serving.errors import ServingError

from tests.serving.conftest import read_capture, start_server, wait_for


def test_weighted_mean_ensemble_serves_captures_and_lists_members(
    tmp_path: Path, iris_model_dir: Path, iris_estimator, iris_features, weak_iris_model
) -> None:
    weak, weak_dir = weak_iris_model
    ensemble = {
        "primary_weight": 1.0,
        "members": [
            {"model_uri": str(weak_dir), "model_name": "weak", "model_version": "7", "weight": 3}
        ],
        "combiner": "weighted_mean",
    }
    capture = tmp_path / "capture"
    server = start_server(
        tmp_path,
        iris_model_dir,
        MLOPS_SERVING_ENSEMBLE=json.dumps(ensemble),
        MLOPS_SERVING_CAPTURE_URI=str(capture),
    )
    try:
        rows = iris_features.iloc[::10]
        answer = httpx.post(
            f"{server.url}/invocations",
            json={"dataframe_split": {"columns": list(rows), "data": rows.to_numpy().tolist()}},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        by_hand = (1 * iris_estimator.predict(rows) + 3 * weak.predict(rows)) / 4
        assert np.allclose(answer.json()["predictions"], by_hand)
        assert not np.allclose(by_hand, iris_estimator.predict(rows))  # the members disagree

        version = httpx.get(f"{server.url}/version", timeout=30).json()
        assert version["combiner"] == "weighted_mean"
        assert [(m["model_name"], m["model_version"], m["weight"]) for m in version["members"]] == [
            ("iris", "1", 1.0),
            ("weak", "7", 3.0),
        ]
    finally:
        assert server.stop() == 0
    wait_for(lambda: len(read_capture(capture)) == len(rows))
    captured = read_capture(capture).sort_values("_row")
    assert np.allclose(captured["prediction"], by_hand)
    assert (captured["_member.iris/1.prediction"].to_numpy() == iris_estimator.predict(rows)).all()
    assert (captured["_member.weak/7.prediction"].to_numpy() == weak.predict(rows)).all()


def test_combiners_match_the_computation_by_hand() -> None:
    a, b, c = np.array([0, 1, 2, 2]), np.array([1, 1, 0, 2]), np.array([1, 2, 0, 1])
    members = {"a/1": a, "b/1": b, "c/1": c}
    assert np.allclose(combine(members, "mean", [1, 1, 1]), (a + b + c) / 3)
    assert np.allclose(combine(members, "weighted_mean", [1, 2, 5]), (a + 2 * b + 5 * c) / 8)
    # row 0: 1 wins 2 votes to 1; row 1: a tie of three goes to the first member's label (1)
    assert combine(members, "majority_vote", [1, 1, 1]).tolist() == [1, 1, 0, 2]
    # weights count as votes: c alone (5) outweighs a and b (1 + 2)
    assert combine(members, "majority_vote", [1, 2, 5]).tolist() == c.tolist()
    assert (
        combine(members, "custom", [1, 1, 1], lambda p: np.maximum.reduce(list(p.values())))[0] == 1
    )
    with pytest.raises(ServingError, match="different shapes"):
        combine({"a/1": a, "b/1": b[:2]}, "mean", [1, 1])
    with pytest.raises(ServingError, match="numeric predictions"):
        combine({"a/1": np.array(["x"]), "b/1": np.array(["y"])}, "mean", [1, 1])
