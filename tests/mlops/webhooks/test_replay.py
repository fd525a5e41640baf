"""The replay store: one claim per delivery id, across threads and across restarts."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlops_pipeline import ledger
from mlops_pipeline.webhooks import replay


def test_a_delivery_is_claimed_once(mlops_home: Path) -> None:
    assert replay.claim("github", "d-1", "push") is None
    earlier = replay.claim("github", "d-1", "push")
    assert earlier is not None and earlier.status == "claimed"
    # the same id from the other sender is another delivery
    assert replay.claim("mlflow", "d-1", "model_version.created") is None
    replay.finish("github", "d-1", "accepted", [{"id": "run-1", "deployment": "a/b"}])
    assert replay.claim("github", "d-1", "push").flow_runs == [{"id": "run-1", "deployment": "a/b"}]


def test_a_released_claim_can_be_claimed_again_and_a_finished_one_cannot(mlops_home) -> None:
    assert replay.claim("mlflow", "d-2", "model_version.created") is None
    replay.release("mlflow", "d-2")
    assert replay.claim("mlflow", "d-2", "model_version.created") is None
    replay.finish("mlflow", "d-2", "ignored", [])
    replay.release("mlflow", "d-2")  # only unfinished claims are released
    assert replay.claim("mlflow", "d-2", "model_version.created").status == "ignored"


def test_concurrent_claims_of_one_id_give_one_winner(mlops_home: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: replay.claim("github", "d-3", "push"), range(32)))
    assert sum(result is None for result in results) == 1


def test_claims_survive_a_restart(mlops_home: Path) -> None:
    assert replay.claim("github", "d-4", "push") is None
    ledger._engine.cache_clear()  # a new process: a new engine on the same database
    assert replay.claim("github", "d-4", "push") is not None
    assert (mlops_home / "ledger.db").exists()


def test_an_ignored_delivery_is_recorded_in_one_write(mlops_home: Path) -> None:
    assert replay.claim("github", "d-5", "issues", "ignored") is None
    earlier = replay.claim("github", "d-5", "issues")
    assert earlier is not None and earlier.status == "ignored"


def test_prune_deletes_only_records_older_than_the_cutoff(mlops_home: Path) -> None:
    assert replay.claim("github", "old", "push") is None
    replay.finish("github", "old", "accepted", [])
    cutoff = dt.datetime.now(dt.UTC)
    assert replay.claim("github", "new", "push") is None

    assert replay.prune(cutoff) == 1
    assert replay.prune(cutoff) == 0
    assert replay.claim("github", "old", "push") is None  # forgotten: claimable again
    assert replay.claim("github", "new", "push") is not None
