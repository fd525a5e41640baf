"""Ensembles end to end on the local target: two registered models deployed as one, the
combined prediction checked against the same computation by hand, every member recorded in the
ledger and protected from deletion, members in /version and in the capture."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from mlops_pipeline import inuse, ledger
from mlops_pipeline.deployment import EnsembleConfig, ModelRef, load_predictor, with_primary
from mlops_pipeline.errors import InUseError, InvalidInputError
from mlops_pipeline.flows.deploy import deploy, rollback_deployment, undeploy
from mlops_pipeline.registry import delete_model_versions
from mlops_pipeline.tracking import connect

from tests.serving.conftest import read_capture, wait_for
from tests.targets.local_support import register_version


def test_ensemble_of_two_registered_models(
    prefect_harness: None,
    undeploy_all: None,
    registered_model: dict,
    weak_iris_model,
    iris_estimator,
    iris_features,
    tmp_path: Path,
) -> None:
    weak, weak_dir = weak_iris_model
    weak_version = register_version(weak_dir, name="iris-weak")
    ensemble = EnsembleConfig(
        members=[
            {"model_uri": "models:/iris@champion"},
            {"model_uri": f"models:/iris-weak/{weak_version}", "weight": 3},
        ],
        combiner="weighted_mean",
    )
    with pytest.raises(InvalidInputError, match="custom combiner needs --scoring-code"):
        deploy(
            model_uri="models:/iris/1",
            name="iris-ens",
            ensemble=ensemble.model_copy(update={"combiner": "custom"}),
        )

    capture = tmp_path / "capture"
    created = deploy(
        model_uri="models:/iris/1",
        name="iris-ens",
        ensemble=ensemble,
        capture_uri=str(capture),
        ready_timeout=120,
    )
    # the ledger records every member pinned to its version; the first is the primary
    assert (created["model_name"], created["model_version"]) == ("iris", "1")
    recorded = ledger.get_deployment("iris-ens").deploy_config.ensemble
    assert [(m.model_uri, m.weight) for m in recorded.members] == [
        ("models:/iris/1", 1.0),
        (f"models:/iris-weak/{weak_version}", 3.0),
    ]
    client = connect()
    assert inuse.deployments_using(client, "iris", "1") == {"iris-ens": "local:"}
    assert inuse.deployments_using(client, "iris-weak", weak_version) == {"iris-ens": "local:"}
    with pytest.raises(InUseError, match="iris-ens"):
        delete_model_versions("iris-weak", weak_version)

    endpoint = created["endpoint_url"]
    rows = iris_features.iloc[::5]
    answer = httpx.post(
        f"{endpoint}/invocations",
        json={"dataframe_split": {"columns": list(rows), "data": rows.to_numpy().tolist()}},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    by_hand = (iris_estimator.predict(rows) + 3 * weak.predict(rows)) / 4
    assert np.allclose(answer.json()["predictions"], by_hand)

    # drift references and the redeploy gate score the ensemble offline the same way
    config = ledger.get_deployment("iris-ens").deploy_config
    offline = load_predictor(ModelRef("iris", "1"), config).predict(rows)
    assert np.allclose(offline, by_hand)
    # a new primary (update, rollback, promotion) keeps the other members
    moved = with_primary(config, ModelRef("iris", "2")).ensemble.members
    assert [m.model_uri for m in moved] == ["models:/iris/2", f"models:/iris-weak/{weak_version}"]

    version = httpx.get(f"{endpoint}/version", timeout=30).json()
    assert [(m["model_name"], m["model_version"]) for m in version["members"]] == [
        ("iris", "1"),
        ("iris-weak", weak_version),
    ]

    # an update to other weights, then a rollback: the members and weights come back too
    def score() -> np.ndarray:
        body = {"dataframe_split": {"columns": list(rows), "data": rows.to_numpy().tolist()}}
        answer = httpx.post(f"{endpoint}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return np.asarray(answer.json()["predictions"])

    evenly = ensemble.model_copy(update={"combiner": "mean"})
    deploy(model_uri="models:/iris/1", name="iris-ens", ensemble=evenly)
    assert np.allclose(score(), (iris_estimator.predict(rows) + weak.predict(rows)) / 2)
    back = rollback_deployment(name="iris-ens", reason="the even ensemble scores worse")
    assert back["config"]["ensemble"]["combiner"] == "weighted_mean"
    assert np.allclose(score(), by_hand)

    undeploy(name="iris-ens")
    assert inuse.deployments_using(client, "iris-weak", weak_version) == {}
    wait_for(lambda: len(read_capture(capture)) == 3 * len(rows))  # weighted, even, weighted
    requests = [r.sort_values("_row") for _, r in read_capture(capture).groupby("_request_id")]
    weighted = [r for r in requests if np.allclose(r["prediction"], by_hand)]
    assert len(requests) == 3 and len(weighted) == 2
    for captured in requests:
        member = captured[f"_member.iris-weak/{weak_version}.prediction"].to_numpy()
        assert (member == weak.predict(rows)).all()
