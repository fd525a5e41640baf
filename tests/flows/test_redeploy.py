"""The redeploy flow against real services: a local deployment, the sqlite registry and ledger.

Gate accepted (switch under load, bake, promotion), gate rejected, bake rollbacks of a challenger
that fails on live rows and of one that is slow, one redeploy per drift episode, and retraining
through MLOPS_TRAINER.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlops_pipeline import ledger
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.deploy import deploy
from mlops_pipeline.flows.redeploy import NO_CHALLENGER, redeploy
from mlops_pipeline.redeploy import records
from mlops_pipeline.registry.versions import get_model_version
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tracking import connect

from tests.flows.redeploy_support import (
    MixedLoad,
    fragile_model,
    register_pickle,
    slow_model,
    strong_model,
    weak_model,
)
from tests.targets.local_support import served_version


@pytest.fixture
def labelled_csv(tmp_path: Path, iris_frame: pd.DataFrame) -> Path:
    path = tmp_path / "iris-labelled.csv"
    iris_frame.to_csv(path, index=False)
    return path


@pytest.fixture
def fast_bake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_BAKE_INTERVAL", "1")
    monkeypatch.setenv("MLOPS_BAKE_MIN_REQUESTS", "20")
    get_settings.cache_clear()


@pytest.fixture
def serving(undeploy_all: None, tmp_path: Path):
    """Deploy a version locally with capture; undeploy everything afterwards."""

    def start(version: str, name: str = "iris-prod") -> str:
        served = run_flow(
            deploy,
            model_uri=f"models:/iris/{version}",
            name=name,
            capture_uri=str(tmp_path / "captures"),
            ready_timeout=90,
        )
        return served["endpoint_url"]

    return start


def aliases(version: str) -> list[str]:
    return get_model_version("iris", version=version).aliases


def redeploy_runs() -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[records.REDEPLOY_EXPERIMENT])


def test_a_better_challenger_passes_the_gate_switches_under_load_and_is_promoted(
    mlops_home, serving, fast_bake, tmp_path, iris_frame, labelled_csv
) -> None:
    champion = register_pickle(weak_model(iris_frame), tmp_path, labelled_csv, alias="champion")
    challenger = register_pickle(
        strong_model(iris_frame), tmp_path, labelled_csv, alias="challenger"
    )
    endpoint = serving(champion)
    load = MixedLoad(endpoint)
    load.start()
    try:
        out = run_flow(
            redeploy, name="iris-prod", challenger="challenger", reason="test", bake_seconds=4
        )
    finally:
        load.stop()

    assert out["decision"] == "promoted", out["reason"]
    assert out["champion"]["version"] == champion and out["challenger"]["version"] == challenger
    assert out["scores"]["challenger"] > out["scores"]["champion"] + 0.2
    assert out["metric"] == "accuracy" and out["holdout"]["source"] == "reference_split"
    assert out["holdout"]["rows"] == 30  # 20 % of the 150 labelled reference rows
    assert out["bake"]["verdict"] == "healthy" and out["bake"]["observed"]["errors"] == 0
    assert served_version(endpoint) == challenger
    assert load.failures == [] and set(load.statuses) == {200} and load.sent > 20
    assert aliases(challenger) == ["champion"] and aliases(champion) == ["previous-champion"]
    tags = get_model_version("iris", version=challenger).tags
    assert tags["mlops.parent_version"] == champion and tags["mlops.trigger_reason"] == "test"
    assert tags["mlops.redeploy.decision"] == "promoted"

    (row,) = records.decisions("iris-prod")
    assert row["decision"] == "promoted" and row["challenger_version"] == challenger
    assert row["details"]["scores"] == out["scores"]
    connect()
    runs = redeploy_runs()
    assert list(runs["tags.mlops.decision"]) == ["promoted"]
    assert runs["metrics.score.challenger"].iloc[0] == pytest.approx(out["scores"]["challenger"])
    assert runs["metrics.bake.observed.requests"].iloc[0] >= 20


def test_a_worse_challenger_is_rejected_and_the_champion_stays(
    mlops_home, serving, tmp_path, iris_frame, labelled_csv
) -> None:
    champion = register_pickle(strong_model(iris_frame), tmp_path, labelled_csv, alias="champion")
    weaker = register_pickle(weak_model(iris_frame), tmp_path, labelled_csv)
    endpoint = serving(champion)

    out = run_flow(
        redeploy, name="iris-prod", challenger=f"models:/iris/{weaker}", min_improvement=0.01
    )

    assert out["decision"] == "rejected"
    assert out["scores"]["challenger"] < out["scores"]["champion"]
    assert "not better" in out["reason"] or "improvement" in out["reason"], out["reason"]
    assert out["bake"] is None
    assert served_version(endpoint) == champion and aliases(champion) == ["champion"]
    assert get_model_version("iris", version=weaker).tags["mlops.redeploy.decision"] == "rejected"
    (row,) = records.decisions("iris-prod")
    assert row["decision"] == "rejected" and row["reason"] == out["reason"]
    connect()
    runs = redeploy_runs()
    assert list(runs["tags.mlops.decision"]) == ["rejected"]
    assert runs["metrics.score.champion"].iloc[0] == pytest.approx(out["scores"]["champion"])
    assert [e.action for e in ledger.history("iris-prod")] == ["create"]


@pytest.mark.parametrize(
    ("make", "bad_every", "bake_seconds", "why"),
    [
        # log() of the zero sepal_width in 20 % of the rows raises: errors, judged at once
        (fragile_model, 5, 20, "error rate"),
        # a 1,000-tree forest: every interval of the bake is slow, judged against the
        # champion's p95 under the same load
        (slow_model, 0, 8, "p95 latency"),
    ],
    ids=["fails-on-live-rows", "slow"],
)
def test_a_challenger_that_regresses_on_live_traffic_is_rolled_back_during_the_bake(
    mlops_home, serving, fast_bake, tmp_path, iris_frame, labelled_csv, make, bad_every,
    bake_seconds, why,
) -> None:  # fmt: skip
    champion = register_pickle(weak_model(iris_frame), tmp_path, labelled_csv, alias="champion")
    regressing = register_pickle(make(iris_frame), tmp_path, labelled_csv)
    endpoint = serving(champion)
    load = MixedLoad(endpoint, bad_every=bad_every)
    load.start()
    try:
        out = run_flow(
            redeploy,
            name="iris-prod",
            challenger=f"models:/iris/{regressing}",
            bake_seconds=bake_seconds,
        )
    finally:
        load.stop()

    assert out["decision"] == "rolled_back", out["reason"]
    assert out["scores"]["challenger"] > out["scores"]["champion"]  # it passed the gate
    bake = out["bake"]
    assert bake["verdict"] == "regressed" and why in out["reason"]
    assert bake["baseline"]["errors"] == 0
    if why == "error rate":
        assert bake["observed"]["errors"] > 0
    else:
        assert bake["observed"]["errors"] == 0 and bake["p95_ratio"] > 1.5
        # relative, not in ms: the forest's p95 was 33 ms on a faster machine
        assert bake["observed"]["p95_latency_ms"] > bake["baseline"]["p95_latency_ms"]
        assert bake["baseline"]["requests"] >= 20  # the champion's window during the redeploy
    assert served_version(endpoint) == champion and aliases(champion) == ["champion"]
    assert load.failures == []  # every request was answered, through both switches
    assert [e.action for e in ledger.history("iris-prod")] == ["create", "update", "rollback"]
    (row,) = records.decisions("iris-prod")
    assert row["decision"] == "rolled_back"


def test_one_drift_episode_redeploys_once_however_many_events_arrive(
    mlops_home, serving, tmp_path, iris_frame, labelled_csv
) -> None:
    champion = register_pickle(weak_model(iris_frame), tmp_path, labelled_csv, alias="champion")
    challenger = register_pickle(strong_model(iris_frame), tmp_path, labelled_csv, "challenger")
    endpoint = serving(champion)
    event = {"name": "iris-prod", "challenger": f"models:/iris/{challenger}", "episode_id": "ep-1"}

    outcomes = [run_flow(redeploy, **event, bake_seconds=0, event_id=f"e{i}") for i in range(3)]

    assert [o["decision"] for o in outcomes] == ["promoted", "skipped", "skipped"]
    assert (
        "ep-1 is already handled" in outcomes[1]["reason"] and "promoted" in outcomes[1]["reason"]
    )
    assert served_version(endpoint) == challenger
    assert [e.action for e in ledger.history("iris-prod")] == ["create", "update"]
    assert [r["decision"] for r in records.decisions("iris-prod")] == ["promoted"]
    # another episode redeploys again: here the served version is its own challenger
    fresh = run_flow(redeploy, **(event | {"episode_id": "ep-2"}), bake_seconds=0)
    assert fresh["decision"] == "skipped" and "is the version" in fresh["reason"]


def test_without_a_challenger_it_skips_and_with_a_trainer_it_retrains_one(
    mlops_home, serving, monkeypatch, tmp_path, iris_frame, labelled_csv
) -> None:
    champion = register_pickle(weak_model(iris_frame), tmp_path, labelled_csv, alias="champion")
    serving(champion)

    skipped = run_flow(redeploy, name="iris-prod", episode_id="ep-9")
    assert skipped["decision"] == "skipped" and skipped["reason"] == NO_CHALLENGER
    assert skipped["challenger"]["version"] is None

    # a skipped redeploy gives the episode back: once a trainer is configured it retrains
    monkeypatch.setenv("MLOPS_TRAINER", "tests.flows.redeploy_support:train")
    get_settings.cache_clear()
    out = run_flow(
        redeploy, name="iris-prod", episode_id="ep-9", reason="drift detected", bake_seconds=0
    )

    assert out["decision"] == "promoted", out["reason"]
    new = out["challenger"]["version"]
    tags = get_model_version("iris", version=new).tags
    assert tags["mlops.parent_version"] == champion and tags["mlops.drift_episode"] == "ep-9"
    assert tags["mlops.trigger_reason"] == "drift detected"
    assert aliases(new) == ["champion"]
    assert [r["decision"] for r in records.decisions("iris-prod")] == ["skipped", "promoted"]


def test_bad_parameters_fail_before_anything_is_read_or_recorded(mlops_home) -> None:
    with pytest.raises(InvalidInputError, match="Metric 'accurracy' is not supported"):
        run_flow(redeploy, name="iris-prod", challenger="champion", metric="accurracy")
    with pytest.raises(InvalidInputError, match="min_improvement"):
        run_flow(redeploy, name="iris-prod", challenger="champion", min_improvement=-1)
    with pytest.raises(InvalidInputError, match="name"):
        run_flow(redeploy, name="")
    assert records.decisions() == []
