"""Background processes: identified by pid and start time, stopped with their whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from mlops_pipeline import processes

from tests.mlops.stack_support import gone

# a leader that ignores SIGTERM and starts a child (in its group) that ignores it as well
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
    "print('started', flush=True)\n"
    "time.sleep(120)\n"
)


def _children_of(pid: int, timeout: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if children := psutil.Process(pid).children():
            return children
        time.sleep(0.1)
    raise AssertionError(f"pid {pid} started no child within {timeout} s")


def test_start_records_identity_and_logs(tmp_path: Path):
    log = tmp_path / "echo.log"
    pid, created = processes.start_background(
        [sys.executable, "-c", "print('hello from the child')"], os.environ, log
    )
    assert created > 0 or gone(pid)
    assert gone(pid)
    assert processes.running(pid, created) is None  # exited (and reaped): not running
    assert "hello from the child" in log.read_text()


def test_a_reused_pid_is_not_ours_and_is_left_alone(tmp_path: Path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        assert processes.running(other.pid, psutil.Process(other.pid).create_time()) is not None
        wrong_start = psutil.Process(other.pid).create_time() - 100
        assert processes.running(other.pid, wrong_start) is None
        assert processes.stop(other.pid, wrong_start, timeout=1) == "pid_reused"
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()


def test_stop_kills_the_whole_group_when_sigterm_is_ignored(tmp_path: Path):
    pid, created = processes.start_background(
        [sys.executable, "-c", STUBBORN], os.environ, tmp_path / "stubborn.log"
    )
    try:
        child = _children_of(pid)[0]
        assert os.getpgid(child.pid) == pid  # the leader's own group
        started = time.monotonic()
        assert processes.stop(pid, created, timeout=1) == "killed"
        assert time.monotonic() - started < 15
        assert gone(pid) and gone(child.pid)
        assert processes.stop(pid, created, timeout=1) == "gone"  # idempotent
    finally:
        processes.stop(pid, created, timeout=0)


def test_stop_clears_what_a_dead_leader_left_in_its_group(tmp_path: Path):
    pid, created = processes.start_background(
        [sys.executable, "-c", STUBBORN], os.environ, tmp_path / "orphan.log"
    )
    child = _children_of(pid)[0]
    try:
        os.kill(pid, signal.SIGKILL)  # the leader dies; its child stays in the group
        assert gone(pid)
        assert processes.running(pid, created) is None
        assert child.is_running()
        assert processes.stop(pid, created, timeout=1) == "killed"
        assert gone(child.pid)
    finally:
        if child.is_running():
            child.kill()
