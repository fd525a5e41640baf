"""Monitor state in the ledger database: watermark and drift episode, with two monitors at once.

Each "monitor" is a thread with its own database connection, so the database itself decides who
waits: a change that reads, pauses and writes must still keep what the other one wrote.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlops_pipeline import ledger, state
from mlops_pipeline.monitoring.captures import Watermark, commit_watermark, load_watermark
from mlops_pipeline.monitoring.episodes import signal_once_per_episode
from mlops_pipeline.monitoring.results import DriftSignal, DriftSummary, DriftVerdict
from mlops_pipeline.settings import get_settings

NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
DRIFT = DriftVerdict(drift=True, drifted=["x"], summary=DriftSummary(tested=1))
QUIET = DriftVerdict(drift=False, summary=DriftSummary(tested=1))


def part(day: int, name: str) -> str:
    return f"model=m/version=1/date=2026-03-{day:02d}/part-202603{day:02d}T000000Z-{name}.parquet"


@pytest.fixture
def database(mlops_home: Path) -> Iterator[str]:
    """The default ledger: sqlite in MLOPS_HOME, its tables created."""
    ledger.engine()
    yield get_settings().resolved_ledger_uri
    ledger.engine().dispose()


def at_once(*calls: Callable[[], object], timeout: float = 60.0) -> list[object]:
    """Run CALLS in threads released together; their results (or exceptions), in order."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        barrier.wait(timeout)
        try:
            results[index] = call()
        except Exception as exc:  # reported to the test, which asserts on it
            results[index] = exc

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a monitor did not finish in time"
    return results


def slow_advance(relpaths: list[str]) -> state.WatermarkChange:
    """A commit of RELPATHS that pauses between reading the watermark and writing it."""

    def change(floor: str | None, processed: set[str]) -> tuple[str | None, set[str]]:
        time.sleep(0.3)
        advanced = Watermark(floor, processed).advanced(relpaths)
        return advanced.floor_date, advanced.processed

    return change


def check_concurrent_watermark_commits_keep_both() -> None:
    commit_watermark("dep", [part(1, "first")])  # the row exists: only its lock serialises
    late, recent = part(2, "late"), part(10, "recent")
    results = at_once(
        lambda: state.update_watermark("dep", slow_advance([recent])),
        lambda: state.update_watermark("dep", slow_advance([late])),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    # in either order: the floor follows the newest file and the old ones fall under it
    assert state.read_watermark("dep") == ("2026-03-08", {recent})

    # many small commits from two monitors: none is lost
    batches = [[part(11, f"{side}{i}") for i in range(10)] for side in "xy"]
    results = at_once(
        lambda: [commit_watermark("dep", [p]) for p in batches[0]],
        lambda: [commit_watermark("dep", [p]) for p in batches[1]],
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert load_watermark("dep").processed == {recent, *batches[0], *batches[1]}


def check_one_episode_emits_once_between_two_monitors() -> None:
    emitted: list[str] = []

    def emit(episode_id: str) -> DriftSignal:
        time.sleep(0.3)  # emitting takes a while; the other monitor must wait, not emit too
        emitted.append("event")
        return DriftSignal(emitted=True, event_id=f"e{len(emitted)}")

    def monitor() -> DriftSignal:
        return signal_once_per_episode("dep", "3", DRIFT, emit, now=NOW)

    signal_once_per_episode("dep", "3", QUIET, emit, now=NOW)  # the row exists, no episode
    signals = at_once(monitor, monitor)

    assert emitted == ["event"]
    assert sorted((s.emitted, s.reason) for s in signals) == [(False, "cool-down"), (True, None)]
    stored = state.read_drift_episode("dep")["episode"]
    assert stored["version"] == "3" and stored["event_id"] == "e1"


def test_watermark_lives_in_the_ledger_and_commits_are_unions(database: str) -> None:
    assert load_watermark("dep").processed == set() and state.read_watermark("dep") == (None, set())
    names = [part(day, "x") for day in range(1, 11)]

    commit_watermark("dep", names[:5])
    commit_watermark("dep", names[5:])
    commit_watermark("dep", names[5:])  # committing twice changes nothing

    floor, processed = state.read_watermark("dep")
    assert floor == "2026-03-08" and processed == set(names[7:])
    assert all(load_watermark("dep").seen(name) for name in names)
    assert state.read_watermark("other") == (None, set())


def test_concurrent_watermark_commits_keep_both_on_sqlite(database: str) -> None:
    check_concurrent_watermark_commits_keep_both()


def test_one_drift_episode_emits_once_between_two_monitors_on_sqlite(database: str) -> None:
    check_one_episode_emits_once_between_two_monitors()


def test_episode_is_stored_only_when_emitted_and_closes_on_a_quiet_window(database: str) -> None:
    def not_here(episode_id: str) -> DriftSignal:
        return DriftSignal(emitted=False, reason="no Prefect run")

    episode_ids: list[str] = []

    def emitted(episode_id: str) -> DriftSignal:
        episode_ids.append(episode_id)
        return DriftSignal(emitted=True, event_id="e1")

    assert signal_once_per_episode("dep", "3", DRIFT, not_here, now=NOW) == DriftSignal(
        emitted=False, reason="no Prefect run"
    )
    assert state.read_drift_episode("dep")["episode"] is None

    first = signal_once_per_episode("dep", "3", DRIFT, emitted, now=NOW)
    assert first.emitted is True and first.episode_id == episode_ids[0]
    assert len(first.episode_id) == 32 and state.read_drift_episode("dep")["episode"]["id"] == (
        first.episode_id
    )
    later = NOW + dt.timedelta(hours=1)
    assert signal_once_per_episode("dep", "3", DRIFT, emitted, now=later) == DriftSignal(
        emitted=False, reason="cool-down", event_id="e1", episode_id=first.episode_id
    )
    # after the cool-down the event repeats with the same episode id: still one redeploy
    repeat = signal_once_per_episode("dep", "3", DRIFT, emitted, now=NOW + dt.timedelta(hours=25))
    assert repeat.emitted and repeat.episode_id == first.episode_id == episode_ids[1]
    closed = signal_once_per_episode("dep", "3", QUIET, emitted, now=later)

    assert closed == DriftSignal(emitted=False, reason="no drift")
    assert state.read_drift_episode("dep") == {"episode": None, "closed_at": later.isoformat()}


def test_a_failing_emit_stores_nothing(database: str) -> None:
    def broken(episode_id: str) -> DriftSignal:
        raise RuntimeError("events API down")

    with pytest.raises(RuntimeError, match="events API down"):
        signal_once_per_episode("dep", "3", DRIFT, broken, now=NOW)
    assert state.read_drift_episode("dep")["episode"] is None


@pytest.mark.postgres
def test_monitor_state_on_postgresql(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers import postgres_cluster

    with postgres_cluster() as database:
        monkeypatch.setenv("MLOPS_LEDGER_URI", database)
        get_settings.cache_clear()
        try:
            assert ledger.engine().dialect.name == "postgresql"  # creates the tables
            check_concurrent_watermark_commits_keep_both()
            check_one_episode_emits_once_between_two_monitors()
        finally:
            ledger.engine().dispose()
            ledger._engine.cache_clear()


def test_two_monitors_starting_on_a_fresh_database_both_open_it(mlops_home: Path) -> None:
    for attempt in range(5):
        home = mlops_home / str(attempt)
        uri = f"sqlite:///{home / 'ledger.db'}"
        ledger._engine.cache_clear()

        # the cache is bypassed so each "monitor" creates its engine and tables as a process would
        open_ledger = functools.partial(ledger._engine.__wrapped__, uri)
        engines = at_once(open_ledger, open_ledger)

        assert not [e for e in engines if isinstance(e, Exception)], engines
        for engine in engines:
            engine.dispose()
