"""Background processes that outlive the command that started them, and stopping exactly them.

A process is identified by its pid and its start time (psutil's `create_time`): the OS reuses
pids, so a recorded pid whose start time differs is someone else's process and is left alone.
Each process is started in its own session, so it leads a process group whose id is its pid;
stopping it signals that group (server workers included), SIGTERM first, SIGKILL after a wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
import psutil

logger = logging.getLogger(__name__)

#: how a stop went: terminated (SIGTERM sufficed), killed (SIGKILL after the wait), gone (was
#: not running), pid_reused (the pid belongs to another process now, which is left alone)
StopOutcome = Literal["terminated", "killed", "gone", "pid_reused"]

# children this process started: kept so they are reaped when they exit while we still run
_children: dict[int, subprocess.Popen] = {}


def start_background(
    command: list[str], env: Mapping[str, str], log_file: Path
) -> tuple[int, float]:
    """Start COMMAND in its own session, output appended to LOG_FILE; stdin is /dev/null.

    Returns:
        (pid, start time in seconds since the epoch; 0.0 if it exited at once).

    Raises:
        OSError: the command cannot be executed.
    """
    with open(log_file, "ab") as log:
        log.write(f"\n--- {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ} {command}\n".encode())
        log.flush()
        child = subprocess.Popen(
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # leads its own process group: stopping signals the group
        )
    _children[child.pid] = child
    try:
        return child.pid, psutil.Process(child.pid).create_time()
    except psutil.Error:
        return child.pid, 0.0


def running(pid: int, create_time: float) -> psutil.Process | None:
    """The process PID if it runs and is the one started at CREATE_TIME, else None."""
    if (child := _children.get(pid)) is not None:
        child.poll()  # reap our own child if it exited, so it is gone rather than a zombie
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.01:
            return None  # the OS gave the pid to another process
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def _group(pgid: int) -> set[psutil.Process]:
    found = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and not _exited(proc):
                found.add(proc)
    return found


def members(pid: int, create_time: float) -> set[psutil.Process] | None:
    """The processes to stop for the process started as (PID, CREATE_TIME).

    None when the pid now belongs to another process. The OS does not reuse a pid while a
    process group with that id exists, so group members found after the leader exited are
    the leader's own leftovers (e.g. server workers) and nobody else's.
    """
    leader = running(pid, create_time)
    if leader is None:
        return None if psutil.pid_exists(pid) else _group(pid)
    found = {leader, *_group(pid)}
    with contextlib.suppress(psutil.Error):
        found.update(leader.children(recursive=True))  # any that left the group
    return found


def _exited(proc: psutil.Process) -> bool:
    # a zombie has exited: only its parent can reap it, which need not be us
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to TIMEOUT s for PROCS to exit; returns those still running."""
    deadline = time.monotonic() + timeout
    while True:
        for child in list(_children.values()):
            child.poll()  # reap our own
        alive = [proc for proc in procs if not _exited(proc)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def stop(pid: int, create_time: float, timeout: float) -> StopOutcome:
    """SIGTERM the process group of (PID, CREATE_TIME), wait up to TIMEOUT s, SIGKILL the rest."""
    found = members(pid, create_time)
    outcome: StopOutcome = "pid_reused" if found is None else "gone"
    if found:
        for proc in found:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)  # psutil checks the pid is still that process
        alive = _wait_gone(found, timeout)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _wait_gone(alive, 10)
        outcome = "killed" if alive else "terminated"
        logger.info("Stopped pid %d and its group (%s).", pid, outcome)
    if (child := _children.pop(pid, None)) is not None:
        child.poll()
    return outcome


def port_user(port: int) -> str:
    """'pid N (NAME)' of the process listening on PORT when the OS tells us, else ''."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and conn.laddr.port == port and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    return ""


def answers(url: str) -> bool:
    """Whether URL answers 200 within 2 s."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(
    pid: int,
    create_time: float,
    health_url: str,
    timeout: float,
    on_wait: Callable[[float], None] = lambda waited: None,
) -> Literal["ready", "exited", "timeout"]:
    """Poll HEALTH_URL until it answers 200 (ready), the process exits, or TIMEOUT s pass.

    ON_WAIT gets the seconds waited so far, about every 5 s, for progress messages.
    """
    start = time.monotonic()
    next_note = start + 5
    while not answers(health_url):
        if running(pid, create_time) is None:
            return "exited"
        now = time.monotonic()
        if now - start > timeout:
            return "timeout"
        if now >= next_note:
            on_wait(now - start)
            next_note = now + 5
        time.sleep(0.3)
    return "ready"


def last_line(log_file: str | Path) -> str:
    """The last non-empty line of LOG_FILE (at most 300 characters), '' if there is none."""
    with contextlib.suppress(OSError):
        lines = [line for line in Path(log_file).read_text(errors="replace").splitlines() if line]
        if lines:
            return lines[-1].strip()[:300]
    return ""
