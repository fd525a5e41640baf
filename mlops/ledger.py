"""The deployment ledger: current deployments plus an append-only history of every change.

SQLAlchemy over `settings.resolved_ledger_uri` (sqlite in MLOPS_HOME by default, PostgreSQL
works the same). Writing a deployment also maintains the registry in-use tags (mlops.inuse), so
the guard that refuses deleting a served model version always agrees with the ledger.
"""

from __future__ import annotations

import functools
import getpass
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlops_pipeline import inuse
from mlops_pipeline.deployment import DeployConfig, Deployment, ModelRef, served_models
from mlops_pipeline.errors import BackendError, NotFoundError
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tracking import connect
from pydantic import BaseModel

Action = Literal["create", "update", "rollback", "delete"]
Result = Literal["succeeded", "failed"]

metadata = sa.MetaData()

deployments_table = sa.Table(
    "deployments",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("target_uri", sa.String(500), nullable=False),
    sa.Column("model_name", sa.String(500), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False),
    sa.Column("model_uri", sa.String(600), nullable=False),
    sa.Column("image", sa.String(500)),
    sa.Column("endpoint_url", sa.String(500)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("capture_uri", sa.String(1000)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
)

events_table = sa.Table(
    "deployment_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment", sa.String(200), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("target_uri", sa.String(500)),
    sa.Column("model_name", sa.String(500)),
    sa.Column("from_version", sa.String(50)),
    sa.Column("to_version", sa.String(50)),
    sa.Column("image", sa.String(500)),
    sa.Column("result", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text),
    # the settings the version ran with after a successful create/update/rollback, so a
    # rollback restores them too (an ensemble's members, capture, workers); None before 0.x
    sa.Column("config", sa.JSON),
)

# Monitor state, beside the deployments so monitors on several machines agree; mlops.state
# reads and writes these tables (each change under the deployment's row lock).
watermarks_table = sa.Table(
    "monitor_watermarks",
    metadata,
    sa.Column("deployment", sa.String(200), primary_key=True),
    sa.Column("floor_date", sa.String(10)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

processed_files_table = sa.Table(
    "monitor_processed_files",
    metadata,
    sa.Column("deployment", sa.String(200), primary_key=True),
    sa.Column("relpath", sa.String(1000), primary_key=True),
)

# Capture files a running monitor has claimed and not yet committed (mlops.state.claim_files):
# a second monitor of the deployment skips them, so no record is counted twice; a claim older
# than its lease (a monitor that died) lapses.
file_claims_table = sa.Table(
    "monitor_file_claims",
    metadata,
    sa.Column("deployment", sa.String(200), primary_key=True),
    sa.Column("relpath", sa.String(1000), primary_key=True),
    sa.Column("claim_id", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
)

# the rest of an applied spec file (mlops_pipeline.spec.store); defined here so every table is
# created with the ledger, whichever module opens it first
deployment_specs_table = sa.Table(
    "deployment_specs",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("scoring_code_sha256", sa.String(64)),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

drift_episodes_table = sa.Table(
    "monitor_drift_episodes",
    metadata,
    sa.Column("deployment", sa.String(200), primary_key=True),
    sa.Column("episode", sa.JSON),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# one row per redeploy decision; a drift episode's id is unique, so one episode redeploys once
redeploys_table = sa.Table(
    "redeploys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment", sa.String(200), nullable=False, index=True),
    sa.Column("episode_id", sa.String(64), unique=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("run", sa.String(200)),
    sa.Column("decision", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("champion_version", sa.String(50)),
    sa.Column("challenger_version", sa.String(50)),
    sa.Column("details", sa.JSON),
)


# The per-file watermark of `batch:` deployments: input files already scored (by which model
# version, into which part); mlops_pipeline.batch.watermark reads and writes it.
batch_files_table = sa.Table(
    "batch_scored_files",
    metadata,
    sa.Column("deployment", sa.String(200), primary_key=True),
    sa.Column("input", sa.String(1000), primary_key=True),
    sa.Column("model_version", sa.String(50), nullable=False),
    sa.Column("output", sa.String(1000)),
    sa.Column("rows_scored", sa.BigInteger),
    sa.Column("rows_rejected", sa.BigInteger),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    # the file's content key when it was scored (`InputFile.identity`); a changed file is new
    # input. Added later: NULL in rows older ledgers hold, which keep the by-path rule.
    sa.Column("identity", sa.String(500)),
)


# Webhook deliveries seen, by sender and delivery id (mlops_pipeline.webhooks.replay): the
# insert that claims an id finds it taken for a replayed or redelivered request, so that request
# starts no run, also after a restart.
webhook_deliveries_table = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("source", sa.String(20), primary_key=True),
    sa.Column("delivery_id", sa.String(200), primary_key=True),
    sa.Column("event", sa.String(200), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("flow_runs", sa.JSON),
)


class DeploymentEvent(BaseModel):
    """One ledger entry: who changed which deployment, when, from what to what, and how it went."""

    id: int
    deployment: str
    at: datetime
    who: str
    action: Action
    target_uri: str | None = None
    model_name: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    image: str | None = None
    result: Result
    reason: str | None = None
    config: dict[str, Any] | None = None


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """Write-ahead log with `synchronous=NORMAL`, as Prefect's own sqlite database runs.

    In the default rollback-journal mode every commit waits for several fsyncs (18 ms a commit
    on this project's test machines), which capped every ledger writer, the webhook receiver's
    delivery claims first; in WAL mode a commit is a write to the log (0.04 ms there) and
    readers never wait for a writer. The database
    stays consistent after a crash; a power loss may undo the last commits before a checkpoint.
    Use PostgreSQL (MLOPS_LEDGER_URI) where that matters or several machines share the ledger.

    The mode is stored in the file, so only the first connection to a new ledger switches it.
    That switch needs the database to itself and SQLite answers "database is locked" at once,
    without its busy timeout, while another connection (a second process or thread opening the
    same new ledger) holds it: retried here for up to `_WAL_SWITCH_SECONDS`.
    """
    cursor = dbapi_connection.cursor()
    try:
        deadline = time.monotonic() + _WAL_SWITCH_SECONDS
        while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


_WAL_SWITCH_SECONDS = 30.0
_engine_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _engine(uri: str) -> sa.Engine:
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(uri, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_wal)
    else:
        engine = sa.create_engine(uri, pool_pre_ping=True)
    for table in metadata.sorted_tables:
        try:
            table.create(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # another process (a second monitor) created it between our check and our CREATE
            if not sa.inspect(engine).has_table(table.name):
                raise
        _add_new_columns(engine, table)
    return engine


def _add_new_columns(engine: sa.Engine, table: sa.Table) -> None:
    """Add the nullable columns a newer release gave TABLE to a ledger an older one created.

    Columns are only ever added, and only nullable ones, so this is the whole migration story;
    a second process adding the same column at once fails harmlessly and finds it there.
    """
    have = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
    for column in table.columns:
        if column.name in have or not column.nullable:
            continue
        kind = column.type.compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
        except sa.exc.DBAPIError:
            fresh = sa.inspect(engine)  # a new inspector: the first one caches column lists
            if column.name not in {c["name"] for c in fresh.get_columns(table.name)}:
                raise


def engine() -> sa.Engine:
    """The ledger database engine for the current settings (tables created on first use)."""
    uri = get_settings().resolved_ledger_uri
    try:
        with _engine_lock:  # one engine per process: threads opening a new ledger wait for it
            return _engine(uri)
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(
            f"The deployment ledger at {uri} cannot be opened: {exc.__class__.__name__}.",
            hint="Check MLOPS_LEDGER_URI / MLOPS_HOME.",
        ) from exc


def actor() -> str:
    """Who is acting: MLOPS_ACTOR (CI, service accounts) or the OS user."""
    return get_settings().actor or getpass.getuser()


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _to_deployment(row: sa.Row) -> Deployment:
    data = dict(row._mapping)
    data["created_at"] = _utc(data["created_at"])
    data["updated_at"] = _utc(data["updated_at"])
    return Deployment.model_validate(data)


def mark_in_use(deployment: str, model: ModelRef, target_uri: str) -> None:
    """Tag `model` as served by `deployment` (before it starts serving, so the guard holds)."""
    try:
        inuse.mark_in_use(connect(), model.name, model.version, deployment, target_uri)
    except MlflowException as exc:
        raise BackendError(
            f"Could not tag {model.uri} as used by deployment '{deployment}': {exc.message}"
        ) from exc


def release_in_use(deployment: str, model: ModelRef) -> None:
    """Remove the in-use tag of `deployment` from `model`; a deleted version counts as released."""
    try:
        inuse.release(connect(), model.name, model.version, deployment)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise BackendError(
            f"Could not release {model.uri} from deployment '{deployment}': {exc.message}"
        ) from exc


def find_deployment(name: str) -> Deployment | None:
    """The ledger record of `name`, or None."""
    with engine().connect() as conn:
        row = conn.execute(
            sa.select(deployments_table).where(deployments_table.c.name == name)
        ).first()
    return _to_deployment(row) if row else None


def get_deployment(name: str) -> Deployment:
    """The ledger record of `name`; NotFoundError names the deployments that do exist."""
    found = find_deployment(name)
    if found is None:
        known = [d.name for d in list_deployments()]
        raise NotFoundError(
            f"No deployment named '{name}'.",
            hint=f"Known deployments: {', '.join(known)}."
            if known
            else "Create one with `mlops deploy MODEL_URI --name NAME --target TARGET_URI`.",
            deployment=name,
        )
    return found


def list_deployments(target_uri: str | None = None) -> list[Deployment]:
    """All current deployments, by name; optionally only those on one target."""
    query = sa.select(deployments_table).order_by(deployments_table.c.name)
    if target_uri is not None:
        query = query.where(deployments_table.c.target_uri == target_uri)
    with engine().connect() as conn:
        return [_to_deployment(row) for row in conn.execute(query)]


def upsert_deployment(deployment: Deployment) -> Deployment:
    """Store `deployment`; tag its versions (every ensemble member) in use and release the
    versions it no longer serves."""
    previous = find_deployment(deployment.name)
    for model in deployment.models:  # an ensemble's members are all in use
        mark_in_use(deployment.name, model, deployment.target_uri)
    values = deployment.model_dump(mode="python")
    values["status"] = str(deployment.status)
    with engine().begin() as conn:
        if previous is None:
            conn.execute(sa.insert(deployments_table).values(**values))
        else:
            values["created_at"] = previous.created_at
            conn.execute(
                sa.update(deployments_table)
                .where(deployments_table.c.name == deployment.name)
                .values(**values)
            )
    if previous is not None:
        for model in set(previous.models) - set(deployment.models):
            release_in_use(previous.name, model)
    return find_deployment(deployment.name) or deployment


def delete_deployment(name: str) -> Deployment | None:
    """Forget `name` and release its model versions; returns what was removed (idempotent)."""
    previous = find_deployment(name)
    if previous is None:
        return None
    with engine().begin() as conn:
        conn.execute(sa.delete(deployments_table).where(deployments_table.c.name == name))
    for model in previous.models:
        release_in_use(name, model)
    return previous


def record_event(
    deployment: str,
    action: Action,
    result: Result,
    *,
    target_uri: str | None = None,
    model_name: str | None = None,
    from_version: str | None = None,
    to_version: str | None = None,
    image: str | None = None,
    reason: str | None = None,
    config: DeployConfig | None = None,
) -> DeploymentEvent:
    """Append one entry to the history of `deployment` (never updated or deleted); `config`
    is what the version runs with after a successful change (what a rollback restores)."""
    values: dict[str, Any] = {
        "deployment": deployment,
        "at": datetime.now(UTC),
        "who": actor(),
        "action": action,
        "target_uri": target_uri,
        "model_name": model_name,
        "from_version": from_version,
        "to_version": to_version,
        "image": image,
        "result": result,
        "reason": reason,
        "config": None if config is None else config.model_dump(mode="json"),
    }
    with engine().begin() as conn:
        event_id = conn.execute(sa.insert(events_table).values(**values)).inserted_primary_key[0]
    return DeploymentEvent(id=event_id, **values)


def history(name: str) -> list[DeploymentEvent]:
    """Every recorded event of `name`, oldest first (also after it was deleted)."""
    query = sa.select(events_table).where(events_table.c.deployment == name)
    with engine().connect() as conn:
        rows = conn.execute(query.order_by(events_table.c.id)).all()
    if not rows:
        raise NotFoundError(f"No history for a deployment named '{name}'.", deployment=name)
    events = []
    for row in rows:
        data = dict(row._mapping)
        data["at"] = _utc(data["at"])
        events.append(DeploymentEvent.model_validate(data))
    return events


class RollbackPoint(NamedTuple):
    """What `mlops rollback` returns a deployment to: the version, its image and the settings
    it ran with (None when recorded by a release that did not keep them: the current ones
    then stay, with the version as the primary)."""

    model: ModelRef
    image: str | None
    config: DeployConfig | None

    @property
    def models(self) -> list[ModelRef]:
        """Every version a rollback brings back: the version and its ensemble's members."""
        return served_models(self.model, self.config) if self.config else [self.model]


def rollback_point(name: str) -> RollbackPoint | None:
    """The version (image, settings) `name` served before its current one, undoing like a
    stack.

    create and update push a version, rollback pops one: create v1, update v2, update v3,
    rollback -> v2, rollback -> v1, rollback -> None. Only the life since the last create counts.
    """
    stack: list[RollbackPoint] = []
    for event in history(name):
        if event.result != "succeeded" or event.to_version is None:
            continue
        config = DeployConfig.model_validate(event.config) if event.config else None
        entry = RollbackPoint(
            ModelRef(event.model_name or "", event.to_version), event.image, config
        )
        if event.action == "create":
            stack = [entry]
        elif event.action == "update":
            stack.append(entry)
        elif event.action == "rollback" and len(stack) > 1:
            stack.pop()
    return stack[-2] if len(stack) > 1 else None
