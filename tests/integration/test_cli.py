"""The `buddy` CLI and BuddyClient against the real stack: the CLI runs as a subprocess, each
test with its own config directory and its own local user (BUDDY_LOCAL_UID), so its own
missions."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from buddy.client import BuddyClient
from buddy.config import PROJECT_ID
from buddy.devstack import Function

from .conftest import Stack, User, shell_env

Buddy = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def buddy(stack: Stack, tmp_path: Path) -> Buddy:
    """Runs `python -m buddy.cli ARGS` as this test's user; returns the finished process."""
    local_uid = f"cli-{uuid.uuid4().hex[:12]}"

    def run(
        *args: str, api_url: str | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        # Nobody signed in: the CLI acts as the local user, one of this test's own.
        env = shell_env(tmp_path, local_uid)
        env.update(BUDDY_API_URL=api_url or stack.api_url, NO_COLOR="1")
        return subprocess.run(
            [sys.executable, "-m", "buddy.cli", *args],
            env=env,
            # Not a terminal, even when the tests run in one: a pause asks nothing.
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def cli_token(tmp_path: Path) -> str:
    """The ID token the CLI stored for this test's user (of the local project)."""
    stored = json.loads((tmp_path / "buddy" / "credentials.json").read_text())
    return str(stored["accounts"][PROJECT_ID]["id_token"])


def created(buddy: Buddy, *args: str) -> dict:
    done = buddy("--json", "create", *args)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_run_shows_every_step_and_the_result(buddy: Buddy) -> None:
    """`buddy run "calculate 2*(3+4)"` prints intermediate steps, ends with "= 14", exits 0."""
    done = buddy("run", "calculate 2*(3+4)")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = set(re.findall(r"^\[\s*\d+%\] Step (\d)/7 ", done.stdout, re.MULTILINE))
    assert steps == {str(k) for k in range(1, 8)}, done.stdout
    assert "= 14" in done.stdout
    assert "Completed in" in done.stdout
    assert "Traceback" not in done.stderr


def test_json_create_is_what_the_api_returns(buddy: Buddy, stack: Stack, tmp_path: Path) -> None:
    """`buddy --json create` prints the mission exactly as GET /missions/{id} returns it."""
    mission = created(buddy, "calculate 6*7", "--budget", "0.5", "--input", "expression=6*7")
    assert (mission["status"], mission["inputs"]) == ("proposed", {"expression": "6*7"})
    response = requests.get(
        f"{stack.api_url}/missions/{mission['mission_id']}",
        headers={"Authorization": f"Bearer {cli_token(tmp_path)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json() == mission


def test_run_over_budget_fails_at_budget_check_and_exits_1(buddy: Buddy) -> None:
    """A mission over its budget exits 1 and prints the failed step's message."""
    done = buddy(
        "run",
        "extract the page",
        "--tool",
        "web_extract",
        "--input",
        "max_pages=10",
        "--input",
        "url=http://127.0.0.1:9/x",
        "--domain",
        "127.0.0.1",
        "--budget",
        "0.005",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"Step 3/7 budget_check — Budget exceeded: \$0\.01 > \$0\.005", done.stdout)
    assert "Failed at budget_check: Budget exceeded" in done.stdout


def test_cancel_of_a_proposed_mission_ends_it_cancelled(buddy: Buddy) -> None:
    """`buddy cancel` on a proposed mission cancels it at once and exits 0."""
    mission_id = created(buddy, "calculate 1+1")["mission_id"]
    done = buddy("cancel", mission_id)
    assert done.returncode == 0, done.stderr
    assert f"Mission {mission_id}: cancelled" in done.stdout
    shown = buddy("--json", "show", mission_id)
    assert json.loads(shown.stdout)["mission"]["status"] == "cancelled"


def test_api_down_prints_the_actionable_message_without_a_traceback(buddy: Buddy) -> None:
    """With nothing listening at BUDDY_API_URL the CLI says how to start it and exits 3."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    done = buddy("list", api_url=closed)
    assert done.returncode == 3
    assert done.stderr.strip() == (
        f"error: cannot reach the API at {closed} — start it with scripts/run.sh"
    )
    assert "Traceback" not in done.stderr


def test_client_watch_yields_rising_progress_to_100(stack: Stack, alice: User) -> None:
    """BuddyClient.watch follows a calculate mission from its listener, rising to 100%."""
    project = os.environ.get("GCLOUD_PROJECT", "demo-buddy")
    with BuddyClient(stack.api_url, alice.token, project) as client:
        mission_id = client.create("calculate 12345 * 6789")["mission_id"]
        client.approve(mission_id)
        snapshots = client.watch(mission_id, timeout=60)
        first = next(snapshots)  # subscribed before it runs, so the run is seen from its claim
        client.execute(mission_id)
        seen = [first, *snapshots]
    percents = [s["progress_percent"] for s in seen]
    assert percents == sorted(percents), percents
    assert percents[-1] == 100
    assert [p for p in percents if 0 < p < 100], percents  # the claim, at least
    assert seen[-1]["status"] == "completed"
    assert seen[-1]["result_summary"].endswith("= 83810205")


def test_list_json_lists_the_missions_created(buddy: Buddy) -> None:
    """`buddy list --json` answers {"missions": [...]} with this user's missions, newest first."""
    first = created(buddy, "calculate 1+2")["mission_id"]
    second = created(buddy, "calculate 3+4")["mission_id"]
    done = buddy("list", "--json")
    assert done.returncode == 0, done.stderr
    assert [m["mission_id"] for m in json.loads(done.stdout)["missions"]] == [second, first]


def test_events_follow_prints_the_log_until_the_mission_ends(buddy: Buddy) -> None:
    """`buddy events ID --follow --json` prints each event once, gapless, up to completion."""
    mission_id = created(buddy, "calculate 2+2")["mission_id"]
    assert buddy("approve", mission_id).returncode == 0
    assert buddy("execute", mission_id).returncode == 0
    done = buddy("events", mission_id, "--follow", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "mission_completed"


def test_run_ask_pauses_for_budget_and_edit_then_resume_completes_it(buddy: Buddy) -> None:
    """`buddy run --ask` over budget pauses, exits 4 and says how to go on; `buddy edit
    --budget` then `buddy resume --watch` finish it (exit 0) where it stopped."""
    done = buddy("run", "--ask", "calculate 2+2", "--budget", "0.00005")
    assert done.returncode == 4, done.stdout + done.stderr
    created_line = re.search(r"^Mission (\S+) created$", done.stdout, re.MULTILINE)
    assert created_line, done.stdout
    mission_id = created_line.group(1)
    assert (
        "Paused at budget_check: Budget exceeded: $0.0001 > $0.00005 limit"
        " — raise the budget to continue"
    ) in done.stdout
    hint = f"To continue: buddy edit {mission_id} --budget 0.0001 && buddy resume {mission_id}"
    assert hint in done.stdout
    edited = buddy("edit", mission_id, "--budget", "0.001")
    assert edited.returncode == 0, edited.stderr
    assert f"Mission {mission_id}: paused" in edited.stdout
    assert "  budget     $0.001" in edited.stdout.splitlines()
    resumed = buddy("resume", mission_id, "--watch")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "= 4" in resumed.stdout and "Completed in" in resumed.stdout
    log = json.loads(buddy("--json", "events", mission_id).stdout)["events"]
    types = [e["type"] for e in log]
    assert types.index("mission_paused") < types.index("mission_modified")
    assert types.index("mission_modified") < types.index("mission_resumed")
    assert types[-1] == "mission_completed"
    assert [e["step_name"] for e in log if e["type"] == "step_completed"].count("verification") == 1


def test_pause_then_resume_of_a_slow_mission(
    buddy: Buddy, start_worker: Callable[..., Function]
) -> None:
    """`buddy pause` stops a slow mission (at once if queued, else at its next step), `buddy
    watch` then exits 4 saying how to resume, and `buddy resume --watch` completes it."""
    start_worker(BUDDY_FAULT_STEP_DELAY_SECONDS="1")
    mission_id = created(buddy, "calculate 3+3")["mission_id"]
    assert buddy("approve", mission_id).returncode == 0
    assert buddy("execute", mission_id).returncode == 0
    paused = buddy("pause", mission_id)
    assert paused.returncode == 0, paused.stderr
    assert re.match(
        rf"Mission {mission_id}: (paused|running, pause requested)$",
        paused.stdout.splitlines()[0],
    ), paused.stdout
    watched = buddy("watch", mission_id)
    assert watched.returncode == 4, watched.stdout + watched.stderr
    assert re.search(r"^Paused( at \w+)?: Paused by its owner", watched.stdout, re.MULTILINE)
    assert watched.stdout.splitlines()[-1] == (
        f"To continue: buddy resume {mission_id} --watch (or buddy cancel {mission_id})"
    )
    resumed = buddy("resume", mission_id, "--watch")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "= 6" in resumed.stdout


def test_a_weekday_schedule_from_the_command_line(buddy: Buddy) -> None:
    """`buddy schedule create` shows the next five fires in the schedule's zone (09:00
    Berlin, on weekdays); `run --watch` fires it now to completion; its mission is listed
    under it; pause, show and delete say what they did; a bad zone is one clear error."""
    done = buddy(
        "schedule",
        "create",
        "weekday sums",
        "0 9 * * 1-5",
        "calculate 6*7",
        "--tz",
        "Europe/Berlin",
    )
    assert done.returncode == 0, done.stderr
    assert "At 09:00 on Monday through Friday" in done.stdout
    fires = re.findall(r"^    (\S+)  \((\S+)\)$", done.stdout, re.MULTILINE)
    assert len(fires) == 5
    assert all("T09:00:00+0" in local for local, _ in fires)  # +01:00 or +02:00
    schedule_id = re.search(r"Schedule (sch_\S+):", done.stdout).group(1)  # type: ignore[union-attr]
    ran = buddy("schedule", "run", schedule_id, "--watch")
    assert ran.returncode == 0, ran.stderr
    assert "6*7 = 42" in ran.stdout
    listed = json.loads(buddy("list", "--schedule", schedule_id, "--json").stdout)["missions"]
    assert [m["status"] for m in listed] == ["completed"]
    paused = buddy("schedule", "pause", schedule_id)
    assert paused.returncode == 0 and "(paused — Paused by its owner)" in paused.stdout
    shown = buddy("schedule", "show", schedule_id)
    assert "fired" in shown.stdout and "→ completed" in shown.stdout
    assert "next fires" not in shown.stdout  # paused: none coming
    deleted = buddy("schedule", "delete", schedule_id)
    assert deleted.returncode == 0 and "its missions stay" in deleted.stdout
    assert json.loads(buddy("schedule", "list", "--json").stdout) == {"schedules": []}
    bad = buddy("schedule", "create", "x", "0 9 * * *", "calculate 1", "--tz", "Mars/Base")
    assert bad.returncode == 1
    assert "timezone: 'Mars/Base' is not an IANA time zone" in bad.stderr
    assert "Traceback" not in bad.stderr
