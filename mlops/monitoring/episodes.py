"""Drift episodes: one `mlops.drift.detected` event per episode, repeated after a cool-down.

An episode opens at the first drifted window and closes at the first window with enough data
and no drift, or when the deployment serves another version. The episode state of each
deployment lives in the ledger database (`mlops_pipeline.state`); deciding and emitting happen
under the deployment's row lock, so two monitors of one deployment emit once between them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

from mlops_pipeline import state
from mlops_pipeline.monitoring.results import DriftSignal, DriftVerdict

Action = Literal["emit", "cool-down", "close", "none"]


def next_episode(
    current: Mapping[str, Any],
    verdict: DriftVerdict | Mapping[str, Any],
    version: str,
    now: dt.datetime,
    cooldown_hours: float,
) -> tuple[Action, dict[str, Any] | None]:
    """Decide what a window means for the drift episode in `current` (as
    `state.read_drift_episode` gives it): ("emit", episode to store once emitted),
    ("cool-down", None), ("close", None) or ("none", None).

    `version` is the version the deployment serves now, `now` a UTC time; within an episode the
    event repeats only after `cooldown_hours`. A new episode gets a fresh `id` (32 hex digits)
    that every event of the episode carries: the redeploy flow's idempotency key.
    """
    verdict = DriftVerdict.coerce(verdict)
    episode = current.get("episode")
    if episode and episode.get("version") != version:
        episode = None
    if not verdict.drift:
        enough_data = verdict.summary.tested > 0
        return ("close", None) if episode and enough_data else ("none", None)
    if episode:
        last = dt.datetime.fromisoformat(episode["last_event_at"])
        if now - last < dt.timedelta(hours=cooldown_hours):
            return "cool-down", None
    episode = episode or {"id": uuid.uuid4().hex, "started_at": now.isoformat()}
    return "emit", {
        "id": episode.get("id") or uuid.uuid4().hex,  # episodes stored before ids had none
        "version": version,
        "started_at": episode["started_at"],
        "last_event_at": now.isoformat(),
    }


def signal_once_per_episode(
    deployment: str,
    version: str,
    verdict: DriftVerdict,
    emit: Callable[[str], DriftSignal],
    cooldown_hours: float = 24.0,
    now: dt.datetime | None = None,
) -> DriftSignal:
    """Call `emit` when this window opens a drift episode of `deployment` (or repeats one after
    `cooldown_hours`), and record the episode; otherwise say why nothing was emitted.

    `emit(episode_id)` returns the signal: emitted with the event id, or not emitted with the
    reason (e.g. no Prefect run to emit from); the episode is stored only when it was emitted.
    Raises BackendError when the ledger database cannot be written.
    """
    now = now or dt.datetime.now(dt.UTC)

    def decide(current: dict[str, Any]) -> tuple[DriftSignal, dict[str, Any] | None]:
        action, episode = next_episode(current, verdict, version, now, cooldown_hours)
        if action == "close":
            closed = {"episode": None, "closed_at": now.isoformat()}
            return DriftSignal(emitted=False, reason="no drift"), closed
        if action == "none":
            return DriftSignal(emitted=False, reason="no drift"), None
        if action == "cool-down":
            event_id = current["episode"].get("event_id")
            signal = DriftSignal(
                emitted=False,
                reason="cool-down",
                event_id=event_id,
                episode_id=current["episode"].get("id"),
            )
            return signal, None
        assert episode is not None  # "emit" always comes with the episode to store
        signal = emit(episode["id"])
        if not signal.emitted:
            return signal, None
        signal = signal.model_copy(update={"episode_id": episode["id"]})
        return signal, {"episode": episode | {"event_id": signal.event_id}, "closed_at": None}

    return state.update_drift_episode(deployment, decide)
