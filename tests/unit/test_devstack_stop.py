"""Stopping the local stack's emulators leaves nothing running: real processes standing in
for firebase-tools and the emulators it starts in sessions of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from buddy import devstack

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

# firebase-tools as it is before it has set up its handlers: it starts an "emulator" in a
# session of its own (which ignores Ctrl-C, as a JVM busy starting may), and the Ctrl-C
# ends it at once, the emulator left running.
FIREBASE_TOOLS = textwrap.dedent(
    """
    import subprocess, sys, time
    emulator = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", emulator], start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def alive(pid: int) -> bool:
    return bool(devstack.still_running({pid: starttime(pid)}))


def starttime(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_ctrl_c_before_firebase_tools_handles_it_still_stops_the_emulators_it_started() -> None:
    tools = subprocess.Popen(
        [sys.executable, "-c", FIREBASE_TOOLS],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert tools.stdout is not None
    emulator = int(tools.stdout.readline())
    assert devstack.spawned_by(tools.pid).keys() == {emulator}
    started = time.monotonic()
    devstack.stop_emulators(tools)  # type: ignore[arg-type]
    assert tools.returncode == -signal.SIGINT  # firebase-tools ended by the Ctrl-C itself
    deadline = time.monotonic() + 5
    while alive(emulator) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(emulator), "the emulator firebase-tools started is still running"
    assert time.monotonic() - started < devstack.STOP_SECONDS * 3  # SIGTERM was enough


def test_a_pid_used_again_by_someone_else_is_not_taken_for_ours() -> None:
    me = os.getpid()
    assert devstack.still_running({me: starttime(me)}) == [me]
    assert devstack.still_running({me: "0"}) == []  # same pid, another start: not ours
    assert devstack.still_running({2**22 + 1: "0"}) == []  # gone
