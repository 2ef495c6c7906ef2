"""The local stack as `scripts/run.sh` runs it: data kept across a restart, an interrupted
mission resumed, a killed function restarted, a clean Ctrl-C.

It runs `python -m buddy.devstack up` beside the suite's own emulators: other ports, another
project (firebase-tools finds a stack's hub by project), its own data folder.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import requests

from buddy.config import LocalPorts
from buddy.service.stages import STAGES

from ..localserver import LocalServer, Reply
from .conftest import User, _free_port, wait_until

STEP_NAMES = [stage.name for stage in STAGES]
# What the suite's emulators:exec sets: the stack beside it must not reach those emulators.
SUITES_OWN = re.compile(r"^(FIREBASE_|FIRESTORE_|PUBSUB_|GCLOUD_|GOOGLE_CLOUD_|CLOUDSDK_)")
PASSWORD = "correct horse battery"


class LocalStack:
    """One `devstack up` process at a time, on ports and a project of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.data = folder, folder / "data"
        self.ports = LocalPorts(**{f.name: _free_port() for f in fields(LocalPorts)})
        self.project = f"demo-restart-{uuid.uuid4().hex[:6]}"
        self.process: subprocess.Popen[str] | None = None
        self.logs: list[Path] = []
        names = [f.name for f in fields(LocalPorts)]
        ports = {f"BUDDY_{name.upper()}_PORT": str(getattr(self.ports, name)) for name in names}
        self.env = {
            **{k: v for k, v in os.environ.items() if not SUITES_OWN.match(k)},
            **ports,
            "GCLOUD_PROJECT": self.project,
            "BUDDY_LEASE_SECONDS": "3",
            "BUDDY_PROGRESS_MIN_INTERVAL_SECONDS": "0.2",
            "BUDDY_WEB_ALLOW_LOOPBACK": "1",
            "BUDDY_WEB_FETCH_TIMEOUT_SECONDS": "30",
            "BUDDY_SWEEP_EVERY_SECONDS": "2",
        }

    @property
    def api_url(self) -> str:
        return self.ports.url("api")

    @property
    def output(self) -> str:
        return self.logs[-1].read_text() if self.logs else ""

    def launch(self, *flags: str, folder: Path | None = None) -> subprocess.Popen[str]:
        """`devstack up` with this stack's ports and data (config in `folder`), not waited for."""
        log = self.folder / f"run-{len(self.logs)}.log"
        self.logs.append(log)
        folder = folder or self.folder
        command = [sys.executable, "-m", "buddy.devstack", "up", "--beside", str(folder)]
        with log.open("w") as out:
            return subprocess.Popen(
                [*command, "--data", str(self.data), *flags],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def up(self) -> None:
        """Starts the stack unless it runs already (an earlier test may have stopped it)."""
        if self.process is None or self.process.poll() is not None:
            self.start()

    def start(self, *flags: str) -> None:
        self.process = process = self.launch(*flags)
        wait_until(lambda: "is up" in self.output or process.poll() is not None, "up", 180)
        assert process.poll() is None, self.output[-3000:]

    def stop(self, how: int = signal.SIGINT) -> int:
        """Ctrl-C (by default); answers the exit status."""
        assert self.process is not None
        self.process.send_signal(how)
        return self.process.wait(timeout=120)

    def worker_pid(self) -> int:
        started = r"Stage worker .*\(pid (\d+)\)|worker restarted as pid (\d+)"
        pids = re.findall(started, self.output)
        return int([first or second for first, second in pids][-1])

    def account(self, email: str, new: bool = False) -> User:
        """Signs up (new) or in with email and password on this stack's Auth emulator."""
        action = "signUp" if new else "signInWithPassword"
        auth = self.ports.address("auth")
        response = requests.post(
            f"http://{auth}/identitytoolkit.googleapis.com/v1/accounts:{action}?key=local",
            json={"email": email, "password": PASSWORD, "returnSecureToken": True},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return User(body["localId"], body["idToken"], self.api_url)

    def listening(self) -> list[str]:
        """The parts of this stack that still accept connections."""
        open_parts = []
        for f in fields(LocalPorts):
            with socket.socket() as sock:
                sock.settimeout(0.3)
                if sock.connect_ex(("127.0.0.1", getattr(self.ports, f.name))) == 0:
                    open_parts.append(f.name)
        return open_parts


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("stack"))
    yield stack
    if stack.process and stack.process.poll() is None:
        stack.stop()


def slow_extract(site: LocalServer, seconds: float) -> dict[str, Any]:
    path = f"/restart-{uuid.uuid4().hex[:8]}"
    page = f"<title>Slow {path}</title><main><p>Worth the wait.</p></main>"
    site.route(path, Reply(body=page, delay=seconds))
    return {"objective": f"extract {site.url(path)}", "scope": {"allowed_domains": ["127.0.0.1"]}}


def mission(user: User, mission_id: str) -> dict[str, Any]:
    response = user.call("GET", f"/missions/{mission_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def current_step(user: User, mission_id: str) -> str | None:
    record = mission(user, mission_id).get("execution_record") or {}
    tracker = record.get("progress_tracker") or {}
    return (tracker.get("current_step") or {}).get("step_name")


def launch(user: User, body: dict[str, Any]) -> str:
    return user.launch(body.pop("objective"), **body)


def finishes_once(user: User, mission_id: str, timeout: float = 90) -> dict[str, Any]:
    """Waits for the end; each step completed once, one artifact, gapless events."""
    ended = {"completed", "failed", "cancelled"}
    wait_until(lambda: mission(user, mission_id)["status"] in ended, "the end", timeout)
    done = mission(user, mission_id)
    assert done["status"] == "completed", done["execution_record"].get("error")
    steps = done["execution_record"]["progress_tracker"]["completed_steps"]
    assert [s["step_name"] for s in steps] == STEP_NAMES
    events = user.call("GET", f"/missions/{mission_id}/events").json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("step_completed") == 7 and types.count("mission_completed") == 1
    assert user.call("GET", f"/missions/{mission_id}/artifact").status_code == 200
    return done


def test_a_restart_keeps_accounts_missions_and_schedules_and_resumes_an_interrupted_mission(
    local_stack: LocalStack, site: LocalServer
) -> None:
    local_stack.start()
    email = f"keeper-{uuid.uuid4().hex[:6]}@example.com"
    alice = local_stack.account(email, new=True)
    finished = alice.launch("calculate 2*(3+4)")
    finishes_once(alice, finished)
    schedule = {"name": "yearly", "cron": "0 0 1 1 *", "mission": {"objective": "calculate 6*7"}}
    assert alice.call("POST", "/schedules", json=schedule).status_code == 201
    # Slower than the 3 s a stopping worker gets to finish what it is doing.
    interrupted = launch(alice, slow_extract(site, 8))
    wait_until(lambda: current_step(alice, interrupted) == "tool_execution", "tool execution")

    assert local_stack.stop() == 0  # Ctrl-C: functions stopped, then the data saved
    assert re.search(r"» saved in [\d.]+s", local_stack.output), local_stack.output[-2000:]
    assert local_stack.listening() == []
    local_stack.start()

    again = local_stack.account(email)  # the account survived, with its uid
    assert again.uid == alice.uid
    kept = mission(again, finished)
    assert kept["status"] == "completed"
    assert again.call("GET", f"/missions/{finished}/artifact").json()["content"] == "14"
    events = again.call("GET", f"/missions/{finished}/events").json()["events"]
    assert events[-1]["type"] == "mission_completed"
    schedules = again.call("GET", "/schedules").json()["schedules"]
    assert [s["name"] for s in schedules] == ["yearly"]
    assert "missions interrupted by the last stop" in local_stack.output
    resumed = finishes_once(again, interrupted)
    assert resumed["execution_record"]["runs"] == 2  # the interrupted run, and the resumed one


def test_a_killed_worker_is_restarted_at_once_and_its_mission_completes_once(
    local_stack: LocalStack, site: LocalServer
) -> None:
    local_stack.up()
    bob = local_stack.account(f"bob-{uuid.uuid4().hex[:6]}@example.com", new=True)
    mission_id = launch(bob, slow_extract(site, 3))
    wait_until(lambda: current_step(bob, mission_id) == "tool_execution", "tool execution")
    pid = local_stack.worker_pid()
    os.kill(pid, signal.SIGKILL)

    restarted = re.compile(
        rf"worker \(pid {pid}\) stopped: killed by SIGKILL\n.*» worker restarted as pid (\d+) "
        r"after ([\d.]+)s"
    )
    wait_until(lambda: restarted.search(local_stack.output) is not None, "the restart", 10)
    found = restarted.search(local_stack.output)
    assert found is not None and float(found.group(2)) <= 2.0
    assert local_stack.worker_pid() == int(found.group(1)) != pid
    done = finishes_once(bob, mission_id)
    assert done["execution_record"]["runs"] == 2


def test_ctrl_c_while_a_function_restarts_stops_everything(local_stack: LocalStack) -> None:
    local_stack.up()
    pid = local_stack.worker_pid()
    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    assert local_stack.stop() == 0
    assert local_stack.listening() == []
    assert time.monotonic() - began < 60, local_stack.output[-2000:]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_second_stack_on_the_same_ports_refuses_to_start_and_changes_nothing(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    local_stack.up()
    erin = local_stack.account(f"erin-{uuid.uuid4().hex[:6]}@example.com", new=True)
    before = erin.call("GET", "/missions").json()["missions"]
    second = local_stack.launch(folder=tmp_path)
    assert second.wait(timeout=30) == 1
    assert "in use already: firestore" in local_stack.output
    assert "is scripts/run.sh running elsewhere?" in local_stack.output
    assert local_stack.process is not None and local_stack.process.poll() is None
    assert requests.get(local_stack.api_url + "/healthz", timeout=5).status_code == 200
    assert erin.call("GET", "/missions").json()["missions"] == before


def test_ctrl_c_while_starting_keeps_the_saved_data(local_stack: LocalStack) -> None:
    """Stopped before it came up, the stack saves nothing: a save of half-loaded emulators
    would replace the data with less of it."""
    local_stack.up()
    email = f"frank-{uuid.uuid4().hex[:6]}@example.com"
    local_stack.account(email, new=True)
    assert local_stack.stop() == 0
    saved = local_stack.data / "firebase-export-metadata.json"
    written = saved.stat().st_mtime_ns

    starting = local_stack.launch()
    wait_until(lambda: "Starting emulators" in local_stack.output, "firebase-tools starting", 60)
    starting.send_signal(signal.SIGINT)
    assert starting.wait(timeout=90) == 130
    assert "is up" not in local_stack.output and "saving" not in local_stack.output
    assert saved.stat().st_mtime_ns == written
    assert local_stack.listening() == []

    local_stack.start()
    assert local_stack.account(email).uid  # still there


def test_fresh_starts_empty_and_keeps_the_saved_data_aside(local_stack: LocalStack) -> None:
    if local_stack.process is not None and local_stack.process.poll() is None:
        local_stack.stop()
    local_stack.start()
    email = f"carol-{uuid.uuid4().hex[:6]}@example.com"
    carol = local_stack.account(email, new=True)
    kept = carol.launch("calculate 1+1")
    finishes_once(carol, kept)
    assert local_stack.stop() == 0

    local_stack.start("--fresh")
    stranger = local_stack.account(f"dave-{uuid.uuid4().hex[:6]}@example.com", new=True)
    assert stranger.call("GET", "/missions").json()["missions"] == []
    auth = local_stack.ports.address("auth")
    refused = requests.post(
        f"http://{auth}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=local",
        json={"email": email, "password": PASSWORD, "returnSecureToken": True},
        timeout=10,
    )
    assert refused.status_code == 400  # no such account any more
    previous = local_stack.data.with_name(local_stack.data.name + ".previous")
    assert (previous / "firebase-export-metadata.json").is_file()
    assert local_stack.stop() == 0
