"""`wait_for_redeploy`: the demo waits for the event's redeploy once it started, and runs the
flow itself only when none started, so a slow machine never gives two redeploys.
`wait_for_captures`: the monitor starts only once predictions and labels have both landed."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from mlops_pipeline.errors import DeploymentError
from mlops_pipeline.redeploy import records
from mlops_pipeline.tasks import demo, orchestration


class Clock:
    """Monotonic seconds that advance by one per sleep, so the bounds run at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(demo.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(demo.time, "sleep", clock.sleep)
    return clock


def row(decision: str, finished: bool, episode: str = "e1") -> dict:
    return {
        "episode_id": episode,
        "decision": decision,
        "reason": "the gate failed",
        "finished_at": "2026-12-01T00:00:00+00:00" if finished else None,
        "details": {"decision": decision, "trigger": {"episode_id": episode}},
    }


def wait(monkeypatch, rows_seq, states_seq, **bounds):
    rows, states = iter(rows_seq), iter(states_seq)
    last_rows, last_states = [], []

    def decisions(_deployment):
        nonlocal last_rows
        last_rows = next(rows, last_rows)
        return last_rows

    def run_states(_served, **params):
        nonlocal last_states
        assert params == {"episode_id": "e1"}
        last_states = next(states, last_states)
        return last_states

    monkeypatch.setattr(records, "decisions", decisions)
    monkeypatch.setattr(orchestration, "deployment_run_states", run_states)
    return demo.wait_for_redeploy.fn("wine", "e1", "redeploy/redeploy", **bounds)


def test_a_redeploy_slower_than_the_start_bound_is_waited_for(monkeypatch, clock) -> None:
    # scheduled for 100 s, running for 300 s: well past the 180 s start bound
    states = [["SCHEDULED"]] * 100 + [["RUNNING"]] * 300
    rows = [[]] * 150 + [[row("running", False)]] * 250 + [[row("promoted", True)]]
    out = wait(monkeypatch, rows, states, start_timeout=180, finish_timeout=1200)
    assert out["decision"] == "promoted"
    assert 399 <= clock.now < 410


def test_no_redeploy_started_returns_none_after_the_start_bound(monkeypatch, clock) -> None:
    other = [row("promoted", True, episode="e0")]  # another episode's decision does not count
    assert wait(monkeypatch, [other], [[]], start_timeout=30, finish_timeout=1200) is None
    assert 30 <= clock.now < 32


def test_a_cancelled_run_before_deciding_returns_none(monkeypatch, clock) -> None:
    states = [["RUNNING"]] * 5 + [["CANCELLED"]]
    assert wait(monkeypatch, [[]], states, start_timeout=180) is None
    assert clock.now < 10


def test_a_failed_redeploy_raises_with_its_reason(monkeypatch, clock) -> None:
    with pytest.raises(DeploymentError, match="the gate failed"):
        wait(monkeypatch, [[row("failed", True)]], [["FAILED"]])


def test_a_redeploy_past_the_finish_bound_raises_not_reruns(monkeypatch, clock) -> None:
    with pytest.raises(DeploymentError, match="still running after 600 s"):
        wait(
            monkeypatch,
            itertools.repeat([row("running", False)]),
            [["RUNNING"]],
            start_timeout=60,
            finish_timeout=600,
        )
    assert 600 <= clock.now < 602


def _capture(root, rows: int, feedback: bool = False) -> None:
    """`rows` captured rows (or feedback labels) in one file, laid out as the service writes."""
    import pyarrow as pa

    from tests.mlops.monitoring.capture_support import write_capture

    table = pa.table({"_request_id": [f"r{i}" for i in range(rows)]})
    write_capture(root, table, dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "m", "1", feedback)


def test_the_capture_wait_holds_until_the_labels_land_too(tmp_path, monkeypatch, clock) -> None:
    # predictions and labels are separate files: the labels may land after the predictions
    _capture(tmp_path, 3)
    landed = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 2 and not landed:
            _capture(tmp_path, 3, feedback=True)
            landed.append(clock.now)

    monkeypatch.setattr(demo.time, "sleep", sleep)
    assert demo.wait_for_captures.fn(tmp_path, 3, labels=3) == 3
    assert landed and clock.now >= landed[0]  # it returned only after the labels landed


def test_the_capture_wait_names_both_counts_when_it_times_out(tmp_path, clock, caplog) -> None:
    _capture(tmp_path, 3)
    with caplog.at_level("WARNING", logger=demo.__name__):
        assert demo.wait_for_captures.fn(tmp_path, 3, labels=2, timeout=5) == 3
    assert "3 of 3 rows and 0 of 2 labels were captured" in caplog.text
