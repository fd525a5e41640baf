"""The deployment ledger over a real sqlite database and a real MLflow registry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlops_pipeline import inuse, ledger
from mlops_pipeline.deployment import DeployConfig, Deployment, DeploymentStatus, ModelRef
from mlops_pipeline.errors import NotFoundError
from mlops_pipeline.flows import run_flow
from mlops_pipeline.flows.register import register_model
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tracking import connect


@pytest.fixture
def iris_v2(registered_model: dict, iris_model_dir: Path) -> ModelRef:
    """A second version of `iris`, so deployments have something to move to."""
    result = run_flow(register_model, source=str(iris_model_dir), name="iris")
    return ModelRef("iris", result["version"])


def record(name: str, version: str, **extra) -> Deployment:
    return Deployment(
        name=name,
        target_uri="local:",
        model_name="iris",
        model_version=version,
        model_uri=f"models:/iris/{version}",
        endpoint_url="http://127.0.0.1:18080",
        **extra,
    )


def tags_of(version: str) -> dict[str, str]:
    return inuse.deployments_using(connect(), "iris", version)


def test_upsert_tags_version_and_update_moves_the_tag(iris_v2: ModelRef) -> None:
    created = ledger.upsert_deployment(record("iris-prod", "1", config={"port": 18080}))
    assert tags_of("1") == {"iris-prod": "local:"}

    updated = ledger.upsert_deployment(record("iris-prod", iris_v2.version))

    assert tags_of("1") == {}
    assert tags_of(iris_v2.version) == {"iris-prod": "local:"}
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    assert ledger.get_deployment("iris-prod").model_version == iris_v2.version


def test_delete_releases_the_version_and_is_idempotent(registered_model: dict) -> None:
    ledger.upsert_deployment(record("iris-prod", "1"))
    ledger.upsert_deployment(record("iris-dev", "1"))
    assert set(tags_of("1")) == {"iris-prod", "iris-dev"}

    removed = ledger.delete_deployment("iris-prod")

    assert removed is not None and removed.name == "iris-prod"
    assert tags_of("1") == {"iris-dev": "local:"}
    assert ledger.delete_deployment("iris-prod") is None
    assert [d.name for d in ledger.list_deployments()] == ["iris-dev"]


def test_unknown_deployment_names_the_known_ones(registered_model: dict) -> None:
    ledger.upsert_deployment(record("iris-prod", "1"))
    with pytest.raises(NotFoundError, match="No deployment named 'nope'.*iris-prod"):
        ledger.get_deployment("nope")
    with pytest.raises(NotFoundError, match="No history"):
        ledger.history("nope")


def test_release_of_a_deleted_version_counts_as_released(registered_model: dict) -> None:
    connect().delete_model_version("iris", "1")
    ledger.release_in_use("iris-prod", ModelRef("iris", "1"))


def test_history_is_durable_and_records_who(
    registered_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ACTOR", "ci-bot")
    get_settings.cache_clear()
    ledger.upsert_deployment(record("iris-prod", "1", status=DeploymentStatus.READY))
    ledger.record_event("iris-prod", "create", "succeeded", model_name="iris", to_version="1")
    ledger.record_event(
        "iris-prod", "update", "failed", from_version="1", to_version="2", reason="not ready"
    )
    ledger._engine.cache_clear()  # a new process: nothing cached, only the database

    events = ledger.history("iris-prod")

    assert [(e.action, e.result, e.who) for e in events] == [
        ("create", "succeeded", "ci-bot"),
        ("update", "failed", "ci-bot"),
    ]
    assert events[1].reason == "not ready" and events[0].at <= events[1].at
    assert ledger.get_deployment("iris-prod").status == DeploymentStatus.READY
    assert Path(ledger.engine().url.database).parent == Path(ledger.get_settings().resolved_home)


def test_rollback_point_undoes_like_a_stack(mlops_home: Path) -> None:
    def event(action: str, to: str, result: str = "succeeded") -> None:
        config = DeployConfig(workers=int(to))  # the settings each version ran with
        ledger.record_event(
            "iris-prod", action, result, model_name="iris", to_version=to, image=f"img:{to}",
            config=config,
        )  # fmt: skip

    def point(version: str) -> tuple:
        return (ModelRef("iris", version), f"img:{version}", DeployConfig(workers=int(version)))

    event("create", "1")
    assert ledger.rollback_point("iris-prod") is None
    event("update", "2")
    event("update", "3")
    event("update", "4", result="failed")
    assert ledger.rollback_point("iris-prod") == point("2")
    event("rollback", "2")
    assert ledger.rollback_point("iris-prod") == point("1")
    event("rollback", "1")
    assert ledger.rollback_point("iris-prod") is None
    ledger.record_event("iris-prod", "delete", "succeeded", from_version="1")
    event("create", "5")
    assert ledger.rollback_point("iris-prod") is None


@pytest.mark.postgres
def test_ledger_works_on_postgresql(
    registered_model: dict, iris_v2: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_pipeline.settings import get_settings

    from tests.servers import postgres_cluster

    with postgres_cluster() as database:
        monkeypatch.setenv("MLOPS_LEDGER_URI", database)
        get_settings.cache_clear()
        try:
            ledger.upsert_deployment(record("iris-prod", "1", config={"port": 18080}))
            ledger.record_event(
                "iris-prod", "create", "succeeded", model_name="iris", to_version="1"
            )
            ledger.upsert_deployment(record("iris-prod", iris_v2.version))
            ledger.record_event(
                "iris-prod", "update", "succeeded", model_name="iris", to_version=iris_v2.version
            )

            assert ledger.engine().dialect.name == "postgresql"
            assert ledger.get_deployment("iris-prod").model_version == iris_v2.version
            assert ledger.rollback_point("iris-prod") == (ModelRef("iris", "1"), None, None)
            assert tags_of(iris_v2.version) == {"iris-prod": "local:"} and tags_of("1") == {}
            ledger.delete_deployment("iris-prod")
            assert ledger.list_deployments() == [] and len(ledger.history("iris-prod")) == 2
        finally:
            ledger.engine().dispose()
            ledger._engine.cache_clear()


def test_a_ledger_an_older_release_created_gains_the_new_columns(
    mlops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch watermark from before content keys (no `identity` column) keeps its rows and
    gets the column on first use; the rows read as recorded by path only (identity None)."""
    import sqlalchemy as sa
    from mlops_pipeline.batch import watermark

    uri = f"sqlite:///{tmp_path / 'old-ledger.db'}"
    old = sa.create_engine(uri)
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE batch_scored_files (deployment VARCHAR(200) NOT NULL, "
                "input VARCHAR(1000) NOT NULL, model_version VARCHAR(50) NOT NULL, "
                "output VARCHAR(1000), rows_scored BIGINT, rows_rejected BIGINT, "
                "scored_at DATETIME NOT NULL, PRIMARY KEY (deployment, input))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO batch_scored_files VALUES "
                "('nightly', '/landing/a.csv', '1', '/out/part-a', 5, 0, '2026-11-01 00:00:00')"
            )
        )
    old.dispose()
    monkeypatch.setenv("MLOPS_LEDGER_URI", uri)
    get_settings.cache_clear()
    (entry,) = watermark.scored_files("nightly").values()
    assert (entry.input, entry.model_version, entry.identity) == ("/landing/a.csv", "1", None)
    columns = {c["name"] for c in sa.inspect(ledger.engine()).get_columns("batch_scored_files")}
    assert "identity" in columns
    get_settings.cache_clear()


def test_a_sqlite_ledger_runs_in_wal_mode(mlops_home: Path) -> None:
    """Commits append to the write-ahead log instead of waiting for fsyncs of a journal."""
    import sqlalchemy as sa

    with ledger.engine().connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_a_new_sqlite_ledger_opened_by_many_at_once_opens_for_all(mlops_home: Path) -> None:
    """Switching a new file to WAL needs it to itself, and SQLite answers "database is locked"
    at once, without its busy timeout, while another connection holds it: several processes (one
    engine each, as here) or threads opening a new ledger together all get it, in WAL mode."""
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    uri = get_settings().resolved_ledger_uri
    now = datetime.now(UTC)

    def open_and_write(i: int) -> str:
        engine = ledger._engine.__wrapped__(uri)  # a new engine, as a separate process has
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.insert(ledger.watermarks_table).values(deployment=f"d{i}", updated_at=now)
                )
                return conn.execute(sa.text("PRAGMA journal_mode")).scalar()
        finally:
            engine.dispose()

    for _ in range(5):  # the race is in the first moments of a new file: several new files
        ledger.engine().dispose()
        ledger._engine.cache_clear()
        for suffix in ("", "-wal", "-shm"):
            Path(uri.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        with ThreadPoolExecutor(max_workers=8) as pool:
            modes = list(pool.map(open_and_write, range(16)))
        assert modes == ["wal"] * 16
    with ThreadPoolExecutor(max_workers=8) as pool:  # threads of one process share one engine
        engines = set(pool.map(lambda _: id(ledger.engine()), range(16)))
    assert len(engines) == 1


def test_a_rollback_point_protects_every_member_it_would_restore(iris_v2: ModelRef) -> None:
    """`mlops models delete` refuses a version a rollback would bring back, as a member too."""
    from mlops_pipeline.registry.versions import _rollback_users

    both = DeployConfig(
        ensemble={"members": [{"model_uri": "models:/iris/1"}, {"model_uri": "models:/iris/2"}]}
    )
    ledger.upsert_deployment(record("iris-prod", "1"))
    ledger.record_event(
        "iris-prod", "create", "succeeded", model_name="iris", to_version="1", config=both
    )
    ledger.record_event("iris-prod", "update", "succeeded", model_name="iris", to_version="1")
    assert _rollback_users(ModelRef("iris", "2")) == ["iris-prod"]
    assert _rollback_users(ModelRef("iris", "1")) == ["iris-prod"]
